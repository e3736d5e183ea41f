"""ssehub.edge.stream: the gap-free, duplicate-free cursor rule of one stream."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from ssehub.edge.stream import FIRST_PAGE, GAP_READS, CloseReason, Stream
from ssehub.errors import StoreUnavailable
from ssehub.sse import PING

from tests.unit.edge.streams import FakeStore, Writer, live, sse, sync


@pytest.fixture
def stream() -> Stream:
    return Stream("u1", "c-1", max_buffer=1 << 20)


@pytest.fixture
def errors() -> Iterator[list[logging.LogRecord]]:
    """The ssehub.edge log's error records, whatever logging set-up ran before."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.ERROR)
    logger = logging.getLogger("ssehub.edge")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# -- replay -------------------------------------------------------------------


async def test_replay_from_zero_writes_every_stored_event_once(stream: Stream) -> None:
    store, writer = FakeStore(range(1, 4)), Writer(stream)
    await sync(stream, store, 10, writer.flush)
    assert writer.flushes == [(sse(1) + sse(2) + sse(3), 3)]
    assert (stream.cursor, stream.replayed) == (3, 3)
    assert store.reads == [("u1", 0, 10)]


async def test_replay_reads_page_by_page_and_flushes_each(stream: Stream) -> None:
    store, writer = FakeStore(range(1, 6)), Writer(stream)
    await sync(stream, store, 2, writer.flush)
    assert writer.flushes == [(sse(1) + sse(2), 2), (sse(3) + sse(4), 2), (sse(5), 1)]
    assert store.reads == [("u1", 0, 2), ("u1", 2, 2), ("u1", 4, 2)]
    assert stream.cursor == 5


async def test_replay_starts_after_the_cursor(stream: Stream) -> None:
    stream.cursor = 2
    store, writer = FakeStore(range(1, 5)), Writer(stream)
    await sync(stream, store, 10, writer.flush)
    assert writer.written() == sse(3) + sse(4)
    assert store.reads == [("u1", 2, 10)]


async def test_cursor_at_stored_upto_skips_the_read(stream: Stream) -> None:
    stream.cursor = 4
    store, writer = FakeStore(range(1, 5)), Writer(stream)
    await sync(stream, store, 10, writer.flush, stored_upto=4)
    assert store.reads == []
    assert writer.written() == b""
    assert stream.cursor == 4


async def test_store_failure_propagates(stream: Stream) -> None:
    store, writer = FakeStore(), Writer(stream)
    store.fail = True
    with pytest.raises(StoreUnavailable):
        await sync(stream, store, 10, writer.flush)


# -- live events during and after the replay -----------------------------------


async def test_live_event_during_replay_is_held_then_written_after_it(stream: Stream) -> None:
    """Event 3 is published (not yet visible to the read) while 1-2 are replayed."""
    store, writer = FakeStore([1, 2]), Writer(stream)
    store.during_read = lambda: stream.offer(3, sse(3))
    await sync(stream, store, 10, writer.flush)
    assert writer.flushes == [(sse(1) + sse(2), 2)]  # 3 not written during the replay
    assert stream.take() == (sse(3), 1)
    assert stream.cursor == 3


async def test_live_event_also_in_the_replay_is_written_once(stream: Stream) -> None:
    """Committed before published: the read may already return the held event."""
    store, writer = FakeStore([1, 2, 3]), Writer(stream)
    store.during_read = lambda: stream.offer(3, sse(3))
    await sync(stream, store, 10, writer.flush)
    assert writer.written() == sse(1) + sse(2) + sse(3)
    assert stream.cursor == 3


async def test_events_before_the_first_sync_are_held(stream: Stream) -> None:
    stream.offer(1, sse(1))
    assert not stream.has_output
    writer = Writer(stream)
    await sync(stream, FakeStore([1]), 10, writer.flush)
    assert writer.written() == sse(1)


async def test_next_number_is_written_at_once(stream: Stream) -> None:
    await live(stream, cursor=5)
    stream.offer(6, sse(6))
    stream.offer(7, sse(7))
    assert stream.take() == (sse(6) + sse(7), 2)
    assert (stream.cursor, stream.needs_sync) == (7, False)


@pytest.mark.parametrize("seq", [5, 4, 1])
async def test_event_at_or_below_the_cursor_is_dropped(stream: Stream, seq: int) -> None:
    await live(stream, cursor=5)
    stream.offer(seq, sse(seq))
    assert stream.take() == (b"", 0)
    assert (stream.cursor, stream.needs_sync) == (5, False)


@pytest.mark.parametrize("stored", [[6, 7], [6, 7, 8]], ids=["8-not-yet-read", "8-read-too"])
async def test_jump_is_held_and_filled_from_the_store(stream: Stream, stored: list[int]) -> None:
    await live(stream, cursor=5)
    notified: list[None] = []
    stream.notify = lambda: notified.append(None)
    stream.offer(8, sse(8))
    assert stream.take() == (b"", 0)
    assert stream.needs_sync and notified  # the writer is asked to read the store
    store, writer = FakeStore(stored), Writer(stream)
    await sync(stream, store, 10, writer.flush)
    assert store.reads == [("u1", 5, 10)]
    assert writer.written() == sse(6) + sse(7) + sse(8)
    assert (stream.cursor, stream.needs_sync) == (8, False)


async def test_events_after_a_jump_wait_behind_it(stream: Stream) -> None:
    await live(stream, cursor=5)
    stream.offer(8, sse(8))
    stream.offer(9, sse(9))  # a sync is pending: held too, in order
    assert stream.take() == (b"", 0)
    writer = Writer(stream)
    await sync(stream, FakeStore([6, 7]), 10, writer.flush)
    assert writer.written() == sse(6) + sse(7) + sse(8) + sse(9)


async def test_gap_reads_exhausted_skips_ahead_and_logs(
    stream: Stream, errors: list[logging.LogRecord]
) -> None:
    await live(stream, cursor=5)
    stream.offer(8, sse(8))
    store, writer = FakeStore(), Writer(stream)  # 6 and 7 never show up
    await sync(stream, store, 10, writer.flush)
    assert store.reads == [("u1", 5, 10)] * GAP_READS
    assert writer.written() == sse(8)
    assert stream.cursor == 8
    assert [r.getMessage() for r in errors] == [
        "user u1: seq 6..8 missing from the store; skipping ahead"
    ]


async def test_gap_filled_by_a_later_read_needs_no_skip(
    stream: Stream, errors: list[logging.LogRecord]
) -> None:
    await live(stream, cursor=5)
    stream.offer(7, sse(7))
    store, writer = FakeStore(), Writer(stream)
    store.during_read = lambda: store.rows["u1"].update({6: sse(6)})  # visible from read 2 on
    await sync(stream, store, 10, writer.flush)
    assert store.reads == [("u1", 5, 10), ("u1", 5, 10)]
    assert writer.written() == sse(6) + sse(7)
    assert errors == []


# -- ephemeral events and pings --------------------------------------------------


async def test_ephemeral_events_are_written_as_they_come(stream: Stream) -> None:
    await live(stream, cursor=5)
    stream.offer(None, sse(None, "typing"))
    stream.offer(6, sse(6))
    stream.offer(None, sse(None, "typing"))
    assert stream.take() == (sse(None, "typing") + sse(6) + sse(None, "typing"), 3)
    assert stream.cursor == 6


async def test_ephemeral_during_replay_keeps_its_arrival_order(stream: Stream) -> None:
    store, writer = FakeStore([1]), Writer(stream)

    def arrive() -> None:
        stream.offer(None, sse(None, "typing"))
        stream.offer(2, sse(2))

    store.during_read = arrive
    await sync(stream, store, 10, writer.flush)
    assert writer.written() == sse(1) + sse(None, "typing") + sse(2)


async def test_pings_are_not_events(stream: Stream) -> None:
    await live(stream)
    stream.ping()
    assert stream.events_out == 0
    stream.offer(1, sse(1))
    stream.ping()
    assert stream.events_out == 1
    assert stream.take() == (PING + sse(1) + PING, 1)
    assert stream.events_out == 0
    assert stream.take() == (b"", 0)


# -- the output bound ---------------------------------------------------------


async def test_unsent_output_past_the_bound_closes_slow() -> None:
    size = len(sse(1))
    stream = Stream("u1", "c-1", max_buffer=2 * size)
    await live(stream)
    stream.offer(1, sse(1))
    stream.offer(2, sse(2))
    assert stream.closed is None  # exactly at the bound
    stream.offer(3, sse(3))
    assert stream.closed is CloseReason.SLOW
    stream.offer(4, sse(4))  # closed: ignored
    assert stream.take() == (sse(1) + sse(2) + sse(3), 3)


async def test_taking_the_output_makes_room() -> None:
    size = len(sse(1))
    stream = Stream("u1", "c-1", max_buffer=size)
    await live(stream)
    for seq in range(1, 6):
        stream.offer(seq, sse(seq))
        assert stream.take() == (sse(seq), 1)
    assert stream.closed is None


async def test_held_events_count_toward_the_bound() -> None:
    stream = Stream("u1", "c-1", max_buffer=len(sse(1)))
    stream.offer(1, sse(1))  # held: the first sync has not run
    assert stream.closed is None
    stream.offer(2, sse(2))
    assert stream.closed is CloseReason.SLOW


async def test_a_replay_is_written_before_it_passes_the_bound_and_never_closes_slow() -> None:
    """A replay waits for the socket (flush) each time a quarter of the bound
    is pending: what waits unwritten never grows with the replay's length."""
    size = len(sse(100))
    stream = Stream("u1", "c-1", max_buffer=4096)
    writer = Writer(stream)
    await sync(stream, FakeStore(range(100, 400)), 500, writer.flush)
    written = [data for data, _ in writer.flushes if data]
    assert b"".join(written) == b"".join(sse(n) for n in range(100, 400))
    assert max(len(d) for d in written) < 1024 + size  # flushed at a quarter of it
    assert stream.closed is None and stream.cursor == 399


async def test_replay_pages_are_sized_to_hold_about_the_bound() -> None:
    big = FakeStore()
    big.rows["u1"] = {n: sse(n) + b": " + b"x" * 1000 + b"\n" for n in range(1, 301)}
    stream = Stream("u1", "c-1", max_buffer=8192)
    await sync(stream, big, 500, Writer(stream).flush)
    limits = [limit for _, _, limit in big.reads]
    assert limits[0] == FIRST_PAGE  # whatever the page setting
    assert set(limits[1:]) == {7}  # ~1,030 bytes each: 7 fill 8 KiB
    small, stream = FakeStore(range(1, 2000)), Stream("u1", "c-2", max_buffer=1 << 20)
    await sync(stream, small, 500, Writer(stream).flush)
    assert [limit for _, _, limit in small.reads] == [FIRST_PAGE] + [500] * 4
    assert stream.cursor == 1999


async def test_close_keeps_the_first_reason_and_notifies_once(stream: Stream) -> None:
    notified: list[None] = []
    stream.notify = lambda: notified.append(None)
    stream.close(CloseReason.DRAIN)
    stream.close(CloseReason.SLOW)
    assert stream.closed is CloseReason.DRAIN
    assert len(notified) == 1
