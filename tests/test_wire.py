"""The hand-written fast paths agree with the libraries they shortcut."""

from __future__ import annotations

import asyncio

import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from edge.pump import start
from shared import topology
from shared.wire import FastFrameReceiver


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
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-1] == "before"
