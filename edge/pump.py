"""Writing one stream: its replay in its own task, then live writes from
callbacks, without a task per write.

Once a stream is live, its output appears in callbacks: the AMQP consumer
offers an event, the pinger adds a ping. Waking a writer task per stream for
each of those costs more than the write itself, so the ``Pump`` writes from
the callback's side: a stream's first output of a loop iteration puts its
pump in the edge's ``WriteRound``, whose one callback per iteration runs every
such pump (a burst of events to one stream becomes one write, a 1,000-member
event one callback). ``run`` writes the chunk straight to the transport
(ssehub.fastpath.transport). Only when that cannot be done (the socket is
full, or the server is not uvicorn with httptools) does a task take over: it
calls the ASGI ``send`` under the write timeout, and also does the store
reads a gap or a broker reconnect asks for; output waits until it is done.

``running`` owns the stream's tasks in one task group: the watch for the
client leaving, and that writer task; the replay runs in the stream's own
task, inside it, then ``live`` returns once the stream is closed, from either
side, and leaving ``running`` ends every task of the stream. Expected
failures close the stream with their reason (``closes_on_failure``);
anything else is a bug and is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.stream import CloseReason, Stream
from ssehub.errors import StoreUnavailable
from ssehub.fastpath.transport import Write
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
            except Exception:  # a bug; its stream is closed by its pump, and the
                log.exception("write round: %r failed", pump)  # others still write


class Pump:
    __slots__ = (
        "_busy",
        "_closed",
        "_live",
        "_metrics",
        "_page",
        "_receipts",
        "_round",
        "_scheduled",
        "_send",
        "_spawn",
        "_store",
        "_stream",
        "_timeout",
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
        (ssehub.fastpath.transport); ``send`` takes the rest. ``writes``: the
        edge's shared round (a round of its own otherwise)."""
        self._stream = stream
        self._write = write
        self._receipts = receipts
        self._send = send
        self._store = store
        self._metrics = metrics
        self._page = page
        self._timeout = timeout
        self._round = writes if writes is not None else WriteRound()
        self._live = False
        self._scheduled = False
        self._busy: asyncio.Task[None] | None = None
        self._spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None
        # set once the stream is closed, from either side: ``live`` returns
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stream.notify = self.poke

    # -- in the stream's own task ----------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self, receive: Receive) -> AsyncIterator[None]:
        """The stream's task group, around its replay and ``live``: the watch
        for the client leaving and the writer task live in it, and are ended
        (cancelled) when the body is done, however it ends."""
        async with asyncio.TaskGroup() as tasks:
            self._spawn = tasks.create_task
            leaving = tasks.create_task(self._until_disconnect(receive))
            try:
                yield
            finally:
                self._live = False
                leaving.cancel()
                if self._busy is not None:
                    self._busy.cancel()

    async def live(self) -> None:
        """Write from callbacks from now on; return once the stream is closed,
        by us or by the client (inside ``running``)."""
        self._live = True
        self.poke()
        await self._closed

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._stream.close(CloseReason.DISCONNECT)

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

    # -- from callbacks --------------------------------------------------------
    def poke(self) -> None:
        """The stream has output, wants a store read, or was closed."""
        if self._stream.closed is not None:
            if not self._closed.done():
                self._closed.set_result(None)
        elif self._live and not self._scheduled and self._busy is None:
            self._scheduled = True
            self._round.add(self)

    def run(self) -> None:
        """Write the pending output (called by the write round). Never raises:
        a bug closes this stream (``CloseReason.ERROR``), not the round."""
        self._scheduled = False
        stream = self._stream
        if not self._live or stream.closed is not None or self._busy is not None:
            return
        if stream.needs_sync:
            self._hand_over(None)
            return
        data, events = stream.take()
        if not data:
            return
        try:
            written = self._write is not None and self._write(data)
        except OSError:  # the client has gone (ssehub.fastpath.transport)
            stream.close(CloseReason.DISCONNECT)
            return
        except Exception:
            log.exception("write to %s failed", stream.stream_id)
            stream.close(CloseReason.ERROR)
            return
        self._metrics.written += events
        if written:
            self._written()
        else:  # no way past ASGI, or the socket is full: a task waits for the drain
            self._hand_over(data)

    def _hand_over(self, data: bytes | None) -> None:
        """The rest of the writing goes to a task of the stream's group."""
        assert self._spawn is not None  # live only inside ``running``
        self._busy = self._spawn(self._slow(data))

    async def _slow(self, data: bytes | None) -> None:
        stream = self._stream
        try:
            with closes_on_failure(stream):
                if data is not None:
                    async with asyncio.timeout(self._timeout):
                        message = {"type": "http.response.body", "body": data, "more_body": True}
                        await self._send(message)
                    self._written()
                # Output that arrived meanwhile, and any store reads, in this task.
                while stream.closed is None and (stream.needs_sync or stream.has_output):
                    if stream.needs_sync:
                        await self.sync()
                        self._metrics.gap_fills.inc()
                    await self.flush()
        finally:
            self._busy = None
