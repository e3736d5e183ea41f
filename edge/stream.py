"""One client stream's state: its cursor, its unsent output, its held live events.

Pure bookkeeping driven by two sides: the AMQP consumer ``offer``s live
events (their SSE bytes, synchronously, in arrival order) and the stream's
writer drains ``take()``n output and runs ``sync`` against the store when
asked. The rule that keeps every stream gap-free and duplicate-free is in
``_accept``: at or below the cursor → drop; the next number → write; beyond
it → hold and fill the gap from the store first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum

import orjson
from ssehub.sse import PING, event_name, render_event
from ssehub.storage.store import EventStore

log = logging.getLogger("ssehub.edge")

# How many store reads a gap gets before we stop waiting for it (the store
# should always have it: events are committed before they are published).
GAP_READS = 3
# A replay's first store read takes at most this many rows (events may be large:
# up to SSEHUB_MAX_MESSAGE_BYTES each); the next ones as many as fill the output
# bound (``max_buffer``) at the sizes seen, at most the page setting.
FIRST_PAGE = 64


class CloseReason(StrEnum):
    """Why a stream ended; also the ``reason`` label of the close counter."""

    DISCONNECT = "disconnect"  # the client went away
    SLOW = "slow"  # unsent output passed ``max_buffer``
    WRITE_TIMEOUT = "write-timeout"  # one write blocked too long
    DRAIN = "drain"  # the edge is shutting down
    STORE = "store"  # the store failed during a read
    DISCONNECTED = "disconnected"  # a control disconnect of the user
    TOKEN_REVOKED = "token-revoked"  # a control revoke covering the stream's token
    TOKEN_EXPIRED = "token-expired"  # the token's exp passed (edge/expiry.py)
    TOO_MANY_STREAMS = "too-many-streams"  # over the per-user cap (edge/caps.py)
    ERROR = "error"  # a bug in the edge (logged with its traceback)


def goodbye(reason: str) -> bytes:
    """The ``disconnected`` event a stream gets before it is closed on purpose."""
    return render_event(None, "disconnected", orjson.dumps({"reason": reason}))


# Closes that end with a last ephemeral event of ours: the response writes the
# unsent output (a replay page, live events), then this, with the end of the body.
FAREWELLS = {
    CloseReason.TOKEN_EXPIRED: render_event(None, "token:expired", b"{}"),
    CloseReason.TOO_MANY_STREAMS: goodbye("too_many_streams"),
}
# Closes whose last event (a control's ``disconnected``, with its reason) was put
# into the output by ``Stream.end``: the response writes the output out too.
GOODBYES = frozenset({CloseReason.DISCONNECTED, CloseReason.TOKEN_REVOKED, *FAREWELLS})


class Stream:
    __slots__ = (
        "_held",
        "_held_bytes",
        "_need_sync",
        "_out",
        "_out_bytes",
        "_receipts",
        "_syncing",
        "_taken",
        "closed",
        "cursor",
        "events_out",
        "expires_at",
        "issued_at",
        "max_buffer",
        "notify",
        "replayed",
        "stream_id",
        "token_bucket",
        "user_id",
    )

    def __init__(
        self, user_id: str, stream_id: str, max_buffer: int, issued_at: float | None = None
    ) -> None:
        self.user_id = user_id
        self.issued_at = issued_at  # the token's ``iat``: a revoke covers it or not
        # the ``connectionId`` of the contract's ``connected``; its order is the
        # streams' open order (edge/caps.py)
        self.stream_id = stream_id
        # unsent output + held events past this many bytes: a slow client
        self.max_buffer = max_buffer
        self.expires_at: float | None = None  # the token's exp (edge/expiry.py)
        self.token_bucket: set[Stream] | None = None  # the expiry wheel's bucket holding it
        self.cursor = 0
        self.closed: CloseReason | None = None
        # Called when there is output, a store read to do, or a close; the
        # stream's writer (edge/pump.py) decides what to do about it.
        self.notify: Callable[[], None] = _nothing
        self.events_out = 0  # events in the unsent output (pings excluded)
        self.replayed = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._held: list[tuple[int | None, bytes]] = []
        self._held_bytes = 0
        self._syncing = True  # live events wait until the first replay is done
        self._need_sync = False
        # (seq, key, event) of events that asked for a receipt, until written
        self._receipts: list[tuple[int, str | None, str]] = []
        self._taken = 0  # the cursor when output was last taken for a write

    # -- live side (AMQP consumer) -----------------------------------------
    def offer(self, seq: int | None, sse: bytes) -> None:
        """A live event (``sse``: its bytes on the wire; ``seq`` None: ephemeral)."""
        if self.closed:
            return
        if self._syncing or self._need_sync:
            self._held.append((seq, sse))
            self._held_bytes += len(sse)
            self._check_limit()
        elif not self._accept(seq, sse):
            self._held.append((seq, sse))
            self._held_bytes += len(sse)
            self.request_sync()

    def request_sync(self) -> None:
        """Read the store before writing more (a gap, or a broker reconnect)."""
        self._need_sync = True
        self.notify()

    def want_receipt(self, seq: int, key: str | None, sse: bytes) -> None:
        """The event ``seq`` asked for a receipt: report it once written."""
        self._receipts.append((seq, key, event_name(sse)))

    def receipts_due(self) -> list[tuple[int, str | None, str]]:
        """Receipts of events in output that has been written (call after a write)."""
        if not self._receipts:
            return []
        upto = self._taken
        due = [r for r in self._receipts if r[0] <= upto]
        if due:
            self._receipts = [r for r in self._receipts if r[0] > upto]
        return due

    def ping(self) -> None:
        self._push(PING, count=False)

    def end(self, sse: bytes, reason: CloseReason) -> None:
        """Close with a last (ephemeral) event that says why: written before the
        stream ends, whatever the replay or held events are doing."""
        if self.closed is None:
            self._push(sse, check=False)  # not limited: the stream ends anyway
            self.close(reason)

    def close(self, reason: CloseReason) -> None:
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
        """The unsent output and how many events it holds."""
        data = b"".join(self._out)
        events, self.events_out = self.events_out, 0
        self._out.clear()
        self._out_bytes = 0
        self._taken = self.cursor
        return data, events

    async def sync(
        self,
        store: EventStore,
        page: int,
        flush: Callable[[], Awaitable[None]],
        stored_upto: int | None = None,
        prologue: bytes | None = None,
    ) -> None:
        """Write every stored event after the cursor, then the held live ones.
        ``stored_upto``: the user's last number as read *after* routing; when the
        cursor is already there, nothing stored can be missing (anything newer is
        published after the route, so it is held) and the first read is skipped.
        ``prologue``: written after the first replay, before the held events
        (``presence:snapshot``). Raises StoreUnavailable; the caller closes the
        stream and the client resumes from its cursor."""
        self._syncing = True
        reads = 0
        skip = stored_upto is not None and self.cursor >= stored_upto
        # The replay is bound like live output: never more than a quarter of
        # max_buffer waits here unwritten, since flush() waits for the socket to
        # take it (a client that stops reading times out: SSEHUB_WRITE_TIMEOUT),
        # and pages are sized so one holds about max_buffer.
        flush_at = self.max_buffer // 4
        limit = min(page, FIRST_PAGE)
        while True:
            self._need_sync = False
            reads += not skip  # a pass over the store (a long replay is one, in pages)
            while not skip:
                rows = await store.events_after(self.user_id, self.cursor, limit)
                size = 0
                for seq, sse, receipt, key in rows:
                    size += len(sse)
                    if seq > self.cursor:
                        self._push(sse, check=False)
                        self.cursor = seq
                        self.replayed += 1
                        if receipt:
                            self.want_receipt(seq, key, sse)
                        if self._out_bytes >= flush_at:
                            await flush()
                            if self.closed:
                                break
                await flush()
                if len(rows) < limit or self.closed:
                    break
                limit = max(1, min(page, len(rows) * self.max_buffer // max(size, 1)))
            skip = False
            if prologue is not None:
                self._push(prologue, check=False)
                prologue = None
            if self.closed or self._drain_held(force=reads >= GAP_READS):
                break
        self._syncing = False

    def _drain_held(self, force: bool) -> bool:
        """Apply held live events in arrival order; False if a gap remains."""
        held, self._held, self._held_bytes = self._held, [], 0
        for i, (seq, sse) in enumerate(held):
            if self._accept(seq, sse):
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
            self._push(sse)
            self.cursor = seq  # type: ignore[assignment]
        return True

    # -- rules -------------------------------------------------------------
    def _accept(self, seq: int | None, sse: bytes) -> bool:
        if seq is None:  # ephemeral: live only, no number
            self._push(sse)
        elif seq == self.cursor + 1:
            self._push(sse)
            self.cursor = seq
        elif seq > self.cursor:
            return False
        return True  # at or below the cursor: already written

    def _push(self, sse: bytes, count: bool = True, check: bool = True) -> None:
        self._out.append(sse)
        self._out_bytes += len(sse)
        if count:
            self.events_out += 1
        if check:
            self._check_limit()
        self.notify()

    def _check_limit(self) -> None:
        if self._out_bytes + self._held_bytes > self.max_buffer:
            self.close(CloseReason.SLOW)


def _nothing() -> None:
    pass
