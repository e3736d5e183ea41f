"""ssehub.edge.pump: the write round that runs every pump with output in one
callback; a stream's tasks owned by its task group."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.pump import Pump, WriteRound, closes_on_failure
from ssehub.edge.stream import CloseReason, Stream
from ssehub.storage.store import EventStore

from tests.unit.edge.streams import FakeStore, sse


class FakePump:
    """What a WriteRound needs of a pump: ``run``."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def run(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("a bug in one stream")


async def test_a_write_round_runs_every_pump_once_in_order_in_one_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    real_call_soon = loop.call_soon

    def counting_call_soon(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return real_call_soon(callback, *args, **kwargs)

    log: list[str] = []
    writes = WriteRound()
    loop.call_soon = counting_call_soon  # type: ignore[method-assign]
    try:
        for name in ("a", "b", "c"):
            writes.add(cast(Pump, FakePump(name, log, fail=name == "b")))
    finally:
        loop.call_soon = real_call_soon  # type: ignore[method-assign]
    assert log == [] and len(scheduled) == 1  # nothing written yet; one callback
    await asyncio.sleep(0)  # wait-ok: one loop turn runs the round
    assert log == ["a", "b", "c"]  # b's failure did not cost c its write
    assert "write round" in caplog.text
    writes.add(cast(Pump, FakePump("d", log)))  # the next iteration's round
    await asyncio.sleep(0)  # wait-ok: one loop turn
    assert log[-1] == "d"


# -- a stream's tasks: owned by its task group --------------------------------
class Client:
    """The ASGI side of one stream: what was sent, and a receive() that waits
    until the test says the client left."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gone = asyncio.Event()
        self.block: asyncio.Event | None = None  # set: send waits for it (a full socket)
        self.fail: BaseException | None = None

    async def send(self, message: Any) -> None:
        if self.fail is not None:
            raise self.fail
        if self.block is not None:
            await self.block.wait()
        self.sent.append(message.get("body", b""))

    async def receive(self) -> Any:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def make_pump(client: Client, write: Any = None) -> tuple[Stream, Pump]:
    stream = Stream("u1", "s1", 1 << 20)
    stream.cursor = 0
    pump = Pump(
        stream,
        client.send,
        cast(EventStore, FakeStore()),
        EdgeMetrics(),
        page=10,
        timeout=5,
        write=write,
    )
    return stream, pump


async def serve(pump: Pump, client: Client) -> None:
    async with pump.running(client.receive):
        await pump.sync(0)
        await pump.live()


@pytest.mark.asyncio(loop_scope="function")  # a loop of its own: it counts the loop's tasks
async def test_closing_from_our_side_ends_every_task_of_the_stream_and_not_the_owner() -> None:
    client = Client()
    stream, pump = make_pump(client)
    before = asyncio.all_tasks()
    owner = asyncio.ensure_future(serve(pump, client))
    await asyncio.sleep(0)  # wait-ok: one turn, the stream is live
    stream.offer(1, sse(1))  # no direct writer: the write goes to a task of the group
    async with asyncio.timeout(5):
        while not client.sent:
            await asyncio.sleep(0)  # wait-ok: the writer task's turn
    stream.close(CloseReason.SLOW)
    async with asyncio.timeout(5):
        await owner  # returns: the owner was not cancelled, no uncancel anywhere
    assert client.sent == [sse(1)]
    assert asyncio.all_tasks() - before == set()  # the watch and the writer are gone


async def test_a_client_leaving_closes_the_stream() -> None:
    client = Client()
    stream, pump = make_pump(client)
    owner = asyncio.ensure_future(serve(pump, client))
    await asyncio.sleep(0)  # wait-ok: one turn, the stream is live
    client.gone.set()
    async with asyncio.timeout(5):
        await owner
    assert stream.closed is CloseReason.DISCONNECT


async def test_a_write_waiting_for_a_full_socket_is_cancelled_with_the_stream() -> None:
    client = Client()
    client.block = asyncio.Event()  # the socket never drains
    stream, pump = make_pump(client, write=lambda _chunk: False)  # full: ASGI must wait
    owner = asyncio.ensure_future(serve(pump, client))
    await asyncio.sleep(0)  # wait-ok: one turn, the stream is live
    stream.offer(1, sse(1))
    await asyncio.sleep(0)  # wait-ok: the write round hands the chunk to a task
    await asyncio.sleep(0)  # wait-ok: ... which starts waiting
    assert pump._busy is not None
    busy = pump._busy
    stream.close(CloseReason.DRAIN)
    async with asyncio.timeout(5):
        await owner
    assert busy.cancelled()


async def test_a_bug_in_the_writer_task_is_raised_not_taken_for_a_disconnect() -> None:
    client = Client()
    client.fail = RuntimeError("a bug")
    stream, pump = make_pump(client, write=lambda _chunk: False)
    owner = asyncio.ensure_future(serve(pump, client))
    await asyncio.sleep(0)  # wait-ok: one turn, the stream is live
    stream.offer(1, sse(1))
    with pytest.raises(ExceptionGroup) as raised:
        async with asyncio.timeout(5):
            await owner
    assert raised.group_contains(RuntimeError, match="a bug")
    assert stream.closed is not CloseReason.DISCONNECT


async def test_a_bug_in_a_direct_write_closes_its_stream_as_an_error() -> None:
    client = Client()

    def broken(_chunk: bytes) -> bool:
        raise RuntimeError("a bug")

    stream, pump = make_pump(client, write=broken)
    owner = asyncio.ensure_future(serve(pump, client))
    await asyncio.sleep(0)  # wait-ok: one turn, the stream is live
    stream.offer(1, sse(1))
    async with asyncio.timeout(5):
        await owner
    assert stream.closed is CloseReason.ERROR


async def test_a_client_that_stops_reading_during_a_replay_times_out_with_little_held() -> None:
    """The replay waits for the socket like a live write: what waits unwritten
    stays within the output bound, the store is not read ahead, and the write
    timeout closes the stream (its connection is then dropped like a slow
    live client's, edge/response.py); the client resumes from its cursor."""
    client = Client()
    client.block = asyncio.Event()  # the socket never drains
    store = FakeStore(range(1, 5001))
    stream = Stream("u1", "s1", max_buffer=16384)
    pump = Pump(stream, client.send, cast(EventStore, store), EdgeMetrics(), page=500, timeout=0.2)
    async with asyncio.timeout(5), pump.running(client.receive):
        with closes_on_failure(stream):
            await pump.sync(5000)
    assert stream.closed is CloseReason.WRITE_TIMEOUT
    assert len(store.reads) == 1  # one page read, then it waited on the client
    assert stream.cursor < 5000  # it stopped part way (the client resumes from its last id)
    data, _ = stream.take()
    assert len(data) < 16384 // 4 + len(sse(5000))
