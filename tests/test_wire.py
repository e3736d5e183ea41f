"""The hand-written fast paths agree with the libraries they shortcut."""

from __future__ import annotations

import asyncio

import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from ssehub import topology
from ssehub.edge.pump import start
from ssehub.fastpath.marshal import marshal_publishes
from ssehub.fastpath.receiver import FastFrameReceiver


async def _decode(data: bytes) -> list[object]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    receiver = FastFrameReceiver(reader)
    receiver.started = True
    out = []
    while not reader.at_eof():
        out.append(await receiver.get_frame())
    return out


@pytest.mark.parametrize("routing_key", ["u-1", "ü" * 40, ""])
async def test_delivery_frames_decode_like_pamqp(routing_key: str) -> None:
    body = b"id: 7\ndata: {}\n\n"
    frames = [
        spec.Basic.Deliver("ctag-1", 2**40 + 3, True, "sse.deliver", routing_key),
        ContentHeader(0, len(body), topology.DELIVERY_PROPERTIES),
        ContentBody(body),
        ContentHeader(0, 3, spec.Basic.Properties(message_id="m", headers={"a": 1})),
        spec.Basic.Ack(delivery_tag=9, multiple=True),
    ]
    data = b"".join(pamqp.frame.marshal(f, 5) for f in frames)
    fast = await _decode(data)
    slow = []
    while data:
        used, channel, frame = pamqp.frame.unmarshal(data)
        slow.append((used, channel, frame))
        data = data[used:]
    assert len(fast) == len(slow)
    for (fw, fc, ff), (sw, sc, sf) in zip(fast, slow, strict=True):  # type: ignore[misc]
        assert (fw, fc, type(ff)) == (sw, sc, type(sf))
        if isinstance(sf, ContentHeader):
            assert (ff.body_size, dict(ff.properties)) == (sf.body_size, dict(sf.properties))
        elif isinstance(sf, ContentBody):
            assert ff.value == sf.value
        else:
            assert dict(ff) == dict(sf)


async def test_start_runs_a_coroutine_until_it_suspends() -> None:
    log: list[str] = []

    async def quick() -> None:
        log.append("quick")

    gate = asyncio.Event()

    async def blocked() -> None:
        log.append("before")
        await gate.wait()
        log.append("after")

    assert start(quick()) is None
    rest = start(blocked())
    assert rest is not None and log == ["quick", "before"]
    task = asyncio.ensure_future(rest)
    gate.set()
    await asyncio.wait_for(task, 5)
    assert log == ["quick", "before", "after"]

    # a cancelled remainder cancels the coroutine, which can clean up
    gate.clear()
    rest = start(blocked())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(
        0
    )  # wait-ok: one loop turn, so the task starts and the throw reaches the coroutine
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-1] == "before"


def test_publish_frames_marshal_like_pamqp() -> None:
    props = spec.Basic.Properties(headers={"x-ssehub-error": "bad"}, delivery_mode=2)
    messages = [
        ("sse.deliver", "u-1", b"id: 1\n\n", topology.DELIVERY_PROPERTIES),
        ("", "sse.dead", b"x" * 25, props),  # split over three body frames of 10
        ("sse.deliver", "ü" * 10, b"", topology.DELIVERY_PROPERTIES),
    ]
    data = marshal_publishes(3, 10, messages)
    expected: list[object] = []
    for exchange, key, body, properties in messages:
        expected.append(spec.Basic.Publish(exchange=exchange, routing_key=key))
        expected.append(ContentHeader(0, len(body), properties))
        expected += [ContentBody(body[i : i + 10]) for i in range(0, len(body), 10)]
    got = []
    while data:
        used, channel, frame = pamqp.frame.unmarshal(data)
        assert channel == 3
        got.append(frame)
        data = data[used:]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert type(g) is type(e)
        if isinstance(e, ContentHeader):
            assert (g.body_size, dict(g.properties)) == (e.body_size, dict(e.properties))  # type: ignore[attr-defined]
        elif isinstance(e, ContentBody):
            assert g.value == e.value  # type: ignore[attr-defined]
        else:
            assert dict(g) == dict(e)  # type: ignore[call-overload]
