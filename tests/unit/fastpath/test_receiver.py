"""ssehub.fastpath.receiver: hand-decoded delivery frames agree with pamqp."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiormq
import aiormq.connection
import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from ssehub import topology
from ssehub.fastpath import receiver
from ssehub.fastpath.receiver import FastFrameReceiver


def _receiver(data: bytes, started: bool = True) -> tuple[asyncio.StreamReader, FastFrameReceiver]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    fast = FastFrameReceiver(reader)
    fast.started = started
    return reader, fast


async def _decode(data: bytes) -> list[tuple[int, int, Any]]:
    reader, fast = _receiver(data)
    out: list[tuple[int, int, Any]] = []
    while not reader.at_eof():
        out.append(await fast.get_frame())
    return out


@pytest.mark.parametrize("routing_key", ["u-1", "ü" * 40, ""])
async def test_delivery_frames_decode_like_pamqp(routing_key: str) -> None:
    body = b"id: 7\ndata: {}\n\n"
    frames: list[Any] = [
        spec.Basic.Deliver("ctag-1", 2**40 + 3, True, "sse.deliver", routing_key),
        ContentHeader(0, len(body), topology.DELIVERY_PROPERTIES),
        ContentBody(body),
        ContentHeader(0, 3, spec.Basic.Properties(message_id="m", headers={"a": 1})),
        spec.Basic.Ack(delivery_tag=9, multiple=True),
    ]
    data = b"".join(pamqp.frame.marshal(f, 5) for f in frames)
    fast = await _decode(data)
    slow: list[tuple[int, int, Any]] = []
    while data:
        used, channel, frame = pamqp.frame.unmarshal(data)
        slow.append((used, channel, frame))
        data = data[used:]
    assert len(fast) == len(slow)
    for (fw, fc, ff), (sw, sc, sf) in zip(fast, slow, strict=True):
        assert (fw, fc, type(ff)) == (sw, sc, type(sf))
        if isinstance(sf, ContentHeader):
            assert (ff.body_size, dict(ff.properties)) == (sf.body_size, dict(sf.properties))
        elif isinstance(sf, ContentBody):
            assert ff.value == sf.value
        else:
            assert dict(ff) == dict(sf)


async def test_a_missing_frame_end_is_an_invalid_frame() -> None:
    data = bytearray(pamqp.frame.marshal(ContentBody(b"abc"), 1))
    data[-1] = 0
    _, fast = _receiver(bytes(data))
    with pytest.raises(aiormq.exceptions.InvalidFrameError, match="frame end byte missing"):
        await fast.get_frame()


async def test_a_connection_closed_mid_frame() -> None:
    data = pamqp.frame.marshal(ContentBody(b"abcdef"), 1)[:-3]
    _, fast = _receiver(data)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError, match="unexpectedly closed"):
        await fast.get_frame()


async def test_a_protocol_header_instead_of_the_first_frame() -> None:
    _, fast = _receiver(b"AMQP\x00\x00\x09\x01", started=False)
    with pytest.raises(aiormq.exceptions.ProtocolSyntaxError):
        await fast.get_frame()


async def test_the_first_frame_starts_the_receiver() -> None:
    _, fast = _receiver(pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=1), 1), started=False)
    _, channel, frame = await fast.get_frame()
    assert (channel, type(frame), fast.started) == (1, spec.Basic.Ack, True)


@pytest.fixture
def restore_receiver() -> Iterator[None]:
    before = aiormq.connection.FrameReceiver
    try:
        yield
    finally:
        aiormq.connection.FrameReceiver = before  # type: ignore[misc]


@pytest.mark.usefixtures("restore_receiver")
def test_install_is_explicit_and_idempotent() -> None:
    aiormq.connection.FrameReceiver = FastFrameReceiver.__mro__[1]  # type: ignore[misc,assignment]
    assert not receiver.installed()
    receiver.install()
    receiver.install()
    assert receiver.installed()
    assert aiormq.connection.FrameReceiver is FastFrameReceiver
