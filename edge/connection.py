"""One client stream's state: its cursor, its unsent output, its held live frames.

Pure bookkeeping driven by two sides: the AMQP consumer ``offer``s live
frames (synchronously, in arrival order) and the stream's writer task drains
``take()``n output and runs ``sync`` against the store when asked. The rule
that keeps every stream gap-free and duplicate-free is in ``_accept``:
at or below the cursor → drop; the next number → write; beyond it → hold and
fill the gap from the store first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from shared.frames import PING
from shared.store import EventStore

log = logging.getLogger("ssehub.edge")

# How many store reads a gap gets before we stop waiting for it (the store
# should always have it: events are committed before they are published).
GAP_READS = 3


class Connection:
    __slots__ = (
        "_held",
        "_held_bytes",
        "_need_sync",
        "_out",
        "_out_bytes",
        "_syncing",
        "bound",
        "closed",
        "connection_id",
        "cursor",
        "frames_out",
        "notify",
        "replayed",
        "user_id",
    )

    def __init__(self, user_id: str, connection_id: str, bound: int) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.bound = bound
        self.cursor = 0
        self.closed: str | None = None
        # Called when there is output, a store read to do, or a close; the
        # stream's writer (edge/pump.py) decides what to do about it.
        self.notify: Callable[[], None] = _nothing
        self.frames_out = 0  # event frames in the unsent output (pings excluded)
        self.replayed = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._held: list[tuple[int | None, bytes]] = []
        self._held_bytes = 0
        self._syncing = True  # live frames wait until the first replay is done
        self._need_sync = False

    # -- live side (AMQP consumer) -----------------------------------------
    def offer(self, seq: int | None, frame: bytes) -> None:
        if self.closed:
            return
        if self._syncing or self._need_sync:
            self._held.append((seq, frame))
            self._held_bytes += len(frame)
            self._check_bound()
        elif not self._accept(seq, frame):
            self._held.append((seq, frame))
            self._held_bytes += len(frame)
            self.request_sync()

    def request_sync(self) -> None:
        """Read the store before writing more (a gap, or a broker reconnect)."""
        self._need_sync = True
        self.notify()

    def ping(self) -> None:
        self._push(PING, count=False)

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self.notify()

    # -- writer side ---------------------------------------------------------
    @property
    def needs_sync(self) -> bool:
        return self._need_sync

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def take(self) -> tuple[bytes, int]:
        """The unsent output and how many event frames it holds."""
        data = b"".join(self._out)
        frames, self.frames_out = self.frames_out, 0
        self._out.clear()
        self._out_bytes = 0
        return data, frames

    async def sync(
        self,
        store: EventStore,
        page: int,
        flush: Callable[[], Awaitable[None]],
        stored_upto: int | None = None,
    ) -> None:
        """Write every stored frame after the cursor, then the held live frames.
        ``stored_upto``: the user's last number as read *after* binding; when the
        cursor is already there, nothing stored can be missing (anything newer is
        published after the bind, so it is held) and the first read is skipped.
        Raises StoreUnavailable; the caller closes the stream and the client
        resumes from its cursor."""
        self._syncing = True
        reads = 0
        skip = stored_upto is not None and self.cursor >= stored_upto
        while True:
            self._need_sync = False
            while not skip:
                rows = await store.frames_after(self.user_id, self.cursor, page)
                reads += 1
                for seq, frame in rows:
                    if seq > self.cursor:
                        # Replay is paced by flush() per page, not by the live bound.
                        self._push(frame, check=False)
                        self.cursor = seq
                        self.replayed += 1
                await flush()
                if len(rows) < page or self.closed:
                    break
            skip = False
            if self.closed or self._drain_held(force=reads >= GAP_READS):
                break
        self._syncing = False

    def _drain_held(self, force: bool) -> bool:
        """Apply held live frames in arrival order; False if a gap remains."""
        held, self._held, self._held_bytes = self._held, [], 0
        for i, (seq, frame) in enumerate(held):
            if self._accept(seq, frame):
                continue
            if not force:
                self._held = held[i:]
                self._held_bytes = sum(len(f) for _, f in self._held)
                return False
            log.error(
                "user %s: seq %d..%d missing from the store; skipping ahead",
                self.user_id,
                self.cursor + 1,
                seq,
            )
            self._push(frame)
            self.cursor = seq  # type: ignore[assignment]
        return True

    # -- rules -------------------------------------------------------------
    def _accept(self, seq: int | None, frame: bytes) -> bool:
        if seq is None:  # ephemeral: live only, no number
            self._push(frame)
        elif seq == self.cursor + 1:
            self._push(frame)
            self.cursor = seq
        elif seq > self.cursor:
            return False
        return True  # at or below the cursor: already written

    def _push(self, frame: bytes, count: bool = True, check: bool = True) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)
        if count:
            self.frames_out += 1
        if check:
            self._check_bound()
        self.notify()

    def _check_bound(self) -> None:
        if self._out_bytes + self._held_bytes > self.bound:
            self.close("slow")


def _nothing() -> None:
    pass
