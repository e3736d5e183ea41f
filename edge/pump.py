"""Writing a live stream without a task of its own.

Once a stream is live, its output appears in callbacks: the AMQP consumer
offers an event, the pinger adds a ping. Waking a writer task per stream for
each of those costs more than the write itself, so the ``Pump`` writes from
the callback's side instead: a stream's first output of a loop iteration
puts its pump in the edge's ``WriteRound``, whose one callback per iteration
runs every such pump (so a burst of events to one stream becomes one write,
and a 1,000-member event one callback). ``run`` writes the chunk straight to
the transport (edge/transport.py), or calls the ASGI ``send`` and drives it
by hand. A send that completes without suspending (the normal case: uvicorn
writes to the transport and returns) costs no task; one that suspends (the
socket is full) is finished in a task, under the write timeout, and output
waits until it is done. Store reads (a gap, a broker reconnect) also run in
that task.

The stream's own task meanwhile only waits for the client to go away; a
``close`` from this side (slow client, drain, store down) cancels that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from typing import Any

from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.stream import CloseReason, Stream
from ssehub.edge.transport import Write
from ssehub.errors import StoreUnavailable
from ssehub.storage.store import EventStore
from starlette.types import Receive, Send

log = logging.getLogger("ssehub.edge")

# (user, [(seq, key, event), ...]): events that asked for a receipt were written
OnReceipts = Callable[[str, list[tuple[int, str | None, str]]], None]


@contextlib.contextmanager
def closes_on_failure(stream: Stream) -> Iterator[None]:
    """A stream's writes and store reads failing close it, with the reason."""
    try:
        yield
    except StoreUnavailable as exc:
        log.warning("closing %s: %s", stream.stream_id, exc)
        stream.close(CloseReason.STORE)
    except TimeoutError:
        stream.close(CloseReason.WRITE_TIMEOUT)
    except OSError:
        stream.close(CloseReason.DISCONNECT)


def start(coro: Awaitable[None]) -> Awaitable[None] | None:
    """Run ``coro`` up to its first suspension. None if it finished; otherwise
    an awaitable that finishes it. Raises what ``coro`` raised before suspending."""
    if not isinstance(coro, Coroutine):
        return coro  # some other awaitable: leave it to a task
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return _Rest(coro, waiting)


class _Rest:
    """The remainder of a coroutine that suspended on ``waiting``, as an awaitable."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._waiting
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, timeouts: into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


class WriteRound:
    """The streams with output in this loop iteration, written by one callback.

    A ``call_soon`` per stream was a fifth of a busy edge's CPU (a handle and a
    trip through the loop's ready queue each); a round appends the pump to a
    list and schedules one callback for all of them, in the order they asked."""

    __slots__ = ("_due", "_loop")

    def __init__(self) -> None:
        self._due: list[Pump] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, pump: Pump) -> None:
        if not self._due:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._run)
        self._due.append(pump)

    def _run(self) -> None:
        due, self._due = self._due, []
        for pump in due:
            try:
                pump.run()
            except Exception:  # one stream's bug must not stop the others' writes
                log.exception("write round: %r failed", pump)


class Pump:
    __slots__ = (
        "_busy",
        "_cancelled",
        "_live",
        "_metrics",
        "_owner",
        "_page",
        "_receipts",
        "_round",
        "_scheduled",
        "_send",
        "_store",
        "_stream",
        "_timeout",
        "_waiting",
        "_write",
    )

    def __init__(
        self,
        stream: Stream,
        send: Send,
        store: EventStore,
        metrics: EdgeMetrics,
        *,
        page: int,
        timeout: float,
        receipts: OnReceipts | None = None,
        write: Write | None = None,
        writes: WriteRound | None = None,
    ) -> None:
        """``write``: the live chunks' way past ASGI, when the server has one
        (edge/transport.py); ``send`` takes the rest. ``writes``: the edge's
        shared round (a round of its own otherwise)."""
        self._stream = stream
        self._write = write
        self._receipts = receipts
        self._send = send
        self._store = store
        self._metrics = metrics
        self._page = page
        self._timeout = timeout
        self._round = writes if writes is not None else WriteRound()
        self._owner = asyncio.current_task()
        self._live = False
        self._scheduled = False
        self._busy: asyncio.Task[None] | None = None
        self._waiting = False  # the owner is parked in receive()
        self._cancelled = False  # ... and we cancelled it
        stream.notify = self.poke

    # -- in the stream's own task ----------------------------------------------
    async def flush(self) -> None:
        """Write the pending output, waiting for the socket (replay pages)."""
        data, events = self._stream.take()
        if data:
            async with asyncio.timeout(self._timeout):
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
            self._metrics.written += events
            self._written()

    def _written(self) -> None:
        """A write completed: report the receipts it carried (and a pending
        publish-to-write sample, edge/metrics.py)."""
        if self._metrics.sent_at is not None:
            self._metrics.wrote()
        if self._receipts is not None:
            due = self._stream.receipts_due()
            if due:
                self._receipts(self._stream.user_id, due)

    async def sync(self, stored_upto: int | None = None, prologue: bytes | None = None) -> None:
        await self._stream.sync(self._store, self._page, self.flush, stored_upto, prologue)

    async def live_until_closed(self, receive: Receive) -> None:
        """Go live, then wait until the client leaves or ``close`` is called."""
        self._live = True
        self.poke()
        if self._stream.closed is not None:
            return
        self._waiting = True
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self._stream.close(CloseReason.DISCONNECT)
                    return
        except asyncio.CancelledError:
            owner = self._owner
            if not self._cancelled or owner is None or owner.uncancel() > 0:
                raise  # not ours: the server is shutting down
        finally:
            self._waiting = False

    async def stop(self) -> None:
        """No more writes from callbacks; the task in flight, if any, is cancelled."""
        self._live = False
        busy = self._busy
        if busy is not None:
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)

    # -- from callbacks --------------------------------------------------------
    def poke(self) -> None:
        """The connection has output, wants a store read, or was closed."""
        if self._stream.closed is not None:
            self._end()
        elif self._live and not self._scheduled and self._busy is None:
            self._scheduled = True
            self._round.add(self)

    def run(self) -> None:
        """Write the pending output (called by the write round)."""
        self._scheduled = False
        stream = self._stream
        if not self._live or stream.closed is not None or self._busy is not None:
            return
        if stream.needs_sync:
            self._spawn(None)
            return
        data, events = stream.take()
        if not data:
            return
        try:
            write = self._write
            if write is not None and write(data):
                rest = None
            else:  # no way past ASGI, or the socket is full: send waits for the drain
                message = {"type": "http.response.body", "body": data, "more_body": True}
                rest = start(self._send(message))
        except OSError:
            stream.close(CloseReason.DISCONNECT)
            return
        except Exception:
            log.exception("write to %s failed", stream.stream_id)
            stream.close(CloseReason.DISCONNECT)
            return
        self._metrics.written += events
        if rest is not None:
            self._spawn(rest)
        else:
            self._written()

    def _spawn(self, rest: Awaitable[None] | None) -> None:
        self._busy = asyncio.create_task(self._slow(rest))

    async def _slow(self, rest: Awaitable[None] | None) -> None:
        stream = self._stream
        try:
            with closes_on_failure(stream):
                if rest is not None:
                    async with asyncio.timeout(self._timeout):
                        await rest
                    self._written()
                # Output that arrived meanwhile, and any store reads, in this task.
                while stream.closed is None and (stream.needs_sync or stream.has_output):
                    if stream.needs_sync:
                        await self.sync()
                        self._metrics.gap_fills.inc()
                    await self.flush()
        finally:
            self._busy = None

    def _end(self) -> None:
        if self._waiting and not self._cancelled and self._owner is not None:
            self._cancelled = True
            self._owner.cancel()
