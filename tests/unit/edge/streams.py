"""In-memory stand-ins for what a Stream talks to: the store and the writer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import cast

from ssehub.edge.stream import Stream
from ssehub.errors import StoreUnavailable
from ssehub.sse import render_event
from ssehub.storage.store import EventStore, StoredEvent


def sse(seq: int | None, event: str = "e") -> bytes:
    """The exact bytes of a stored or live event ``seq`` (None: ephemeral)."""
    return render_event(seq, event, b'{"n":%d}' % (seq or 0))


class FakeStore:
    """``events_after`` over a dict of stored events; records every read, and
    can run ``during_read`` inside one (a live event arriving mid-replay)."""

    def __init__(self, seqs: Iterable[int] = ()) -> None:
        self.rows: dict[str, dict[int, bytes]] = {"u1": {s: sse(s) for s in seqs}}
        self.reads: list[tuple[str, int, int]] = []
        self.during_read: Callable[[], None] | None = None
        self.fail = False

    async def events_after(self, user: str, after: int, limit: int) -> list[StoredEvent]:
        self.reads.append((user, after, limit))
        if self.fail:
            raise StoreUnavailable("store down")
        stored = sorted((s, b) for s, b in self.rows.get(user, {}).items() if s > after)[:limit]
        rows = [StoredEvent(s, b, False, None) for s, b in stored]
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        return rows


class Writer:
    """The ``flush`` a stream's writer passes to ``sync``: takes the output."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.flushes: list[tuple[bytes, int]] = []

    async def flush(self) -> None:
        self.flushes.append(self.stream.take())

    def written(self) -> bytes:
        """Everything the client got so far, including what is still unsent."""
        data, events = self.stream.take()
        if data:
            self.flushes.append((data, events))
        return b"".join(d for d, _ in self.flushes)


async def sync(
    stream: Stream,
    store: FakeStore,
    page: int,
    flush: Callable[[], Awaitable[None]],
    stored_upto: int | None = None,
) -> None:
    """``stream.sync`` on the fake store (it has all of EventStore that sync uses)."""
    await stream.sync(cast(EventStore, store), page, flush, stored_upto)


async def live(stream: Stream, cursor: int = 0) -> None:
    """Finish a stream's first sync with nothing stored after ``cursor``."""
    stream.cursor = cursor
    await sync(stream, FakeStore(), 10, _no_flush, stored_upto=cursor)


async def _no_flush() -> None:
    raise AssertionError("no flush expected")
