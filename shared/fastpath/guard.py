"""Deadlines on every connection that is not a stream, and a bound on how many are open.

uvicorn times out one thing: a keep-alive connection that sends nothing after
a response. A connection that sends nothing at all, or its head a byte a
second, or a body a byte a second, or never reads its answer, holds a file
handle for ever. ``guarded_protocol`` makes a subclass of uvicorn's
``HttpToolsProtocol`` (passed as ``http=`` to the uvicorn Config,
edge/server.py) where a connection has one deadline at a time until it
becomes a stream:

- waiting for a request head, from the connection's opening or the end of
  its last answer: ``head_timeout``. At the deadline a connection that sent
  part of a head is answered ``408`` and closed; one that sent nothing is
  closed.
- a request, from its head to the end of its answer: ``request_timeout``. At
  the deadline a request whose body is still coming is answered ``408``, one
  the edge has not answered yet is closed (an EventSource reconnects after a
  close; it would give up after a 5xx). A ``GET`` of the stream path has at
  least ``STREAM_OPENING``: the client has sent all it will, and under a
  reconnect storm the edge may take tens of seconds to open it. Answered with
  a chunked body it is a stream, and keeps its connection with no deadline (a
  stream that stops reading is closed by its write timeout, edge/pump.py),
  unless a request is pipelined behind it, which could never be answered.
- closing: an answer's last bytes must leave within ``request_timeout`` (one
  the client does not read would keep the handle), a deadline's close within
  ``CLOSE_GRACE``; then the connection is reset.

Over ``max_connections`` open connections a new one is marked (``OVER_BOUND``
in its request's scope: the app answers it, edge/admission.py) and closed
after that answer; over ``max_connections + REFUSING`` it is closed at once,
unanswered, so refusing cannot itself use up the handles.

uvicorn internals used (uvicorn pinned to ``ssehub.fastpath.UVICORN_PINNED``,
checked by tests/unit/fastpath/test_internals.py):

- ``HttpToolsProtocol``: the methods ``connection_made``, ``connection_lost``,
  ``on_message_begin``, ``on_headers_complete``, ``on_response_complete`` (the
  callback a cycle calls when its answer is complete) and
  ``_start_asgi_task``; the attributes ``connections`` (the server's set of
  open connections), ``transport``, ``scope`` (the request being parsed),
  ``cycle`` (the newest request's) and ``pipeline``.
- ``RequestResponseCycle``: ``scope``, ``response_started``,
  ``response_complete``, ``chunked_encoding``, ``more_body``, ``keep_alive``,
  ``disconnected``, ``message_event``.

Without httptools (uvicorn serves with h11) ``guarded_protocol`` returns None
and edge/server.py falls back to uvicorn's ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import orjson

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    AVAILABLE = True
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = asyncio.Protocol  # type: ignore[misc,assignment]
    AVAILABLE = False

log = logging.getLogger("ssehub.edge")

# The key a request's scope carries when its connection is over the bound.
OVER_BOUND = "ssehub.over_bound"
# Connections being refused at once, above the bound; more are closed unanswered.
REFUSING = 64
# A close after a deadline that has not completed by then is a reset.
CLOSE_GRACE = 1.0
# At most one log line this often while connections are refused.
LOG_EVERY = 10.0
# Seconds a stream request may take to open, at least (a 10,000-stream reconnect
# storm on one edge takes ~30 s to be served, docs/benchmarks.md).
STREAM_OPENING = 60.0


class Deadline(enum.Enum):
    HEAD = "head"  # for a request head
    REQUEST = "request"  # for a request's body and answer
    ANSWER = "answer"  # for an answer's last bytes, the connection closing after it
    CLOSING = "closing"  # for our own close after one of the above


@dataclass(slots=True)
class GuardStats:
    """Counts since the last scrape (edge/metrics.py folds and zeroes them)."""

    head: int = 0  # closed: no complete head in time
    request: int = 0  # closed: a request not received or answered in time
    reset: int = 0  # over the bound with REFUSING being refused already


class Guard:
    """The deadlines and the bound shared by every connection of one server."""

    def __init__(
        self,
        *,
        head_timeout: float,
        request_timeout: float,
        max_connections: int,
        stream_path: str,
    ) -> None:
        self.head_timeout = head_timeout
        self.request_timeout = request_timeout
        self.opening_timeout = max(request_timeout, STREAM_OPENING)
        self.max_connections = max_connections
        self.stream_path = stream_path
        self.stats = GuardStats()
        self.connections: Collection[object] = ()  # uvicorn's set, from the first connection
        self._refused = 0
        self._logged_at = -LOG_EVERY
        self.head_408 = _answer_408(f"No complete request head within {head_timeout:g} s.")
        self.request_408 = _answer_408(f"The request did not arrive within {request_timeout:g} s.")

    @property
    def open(self) -> int:
        """Connections open now, streams and refusals included."""
        return len(self.connections)

    def refused(self, open_now: int) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            log.warning(
                "%d connections open, the bound is %d (SSEHUB_MAX_CONNECTIONS): "
                "refused %d new ones since the last such line",
                open_now,
                self.max_connections,
                self._refused,
                extra={"open": open_now, "refused": self._refused},
            )
            self._logged_at, self._refused = now, 0


def _answer_408(message: str) -> bytes:
    body = orjson.dumps({"error": "request_timeout", "message": message})
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    return head + body


def guarded_protocol(guard: Guard) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol under ``guard``; None where uvicorn cannot use it."""
    if not AVAILABLE:
        return None
    return type("GuardedHttpTools", (GuardedHttpTools,), {"guard": guard})


class GuardedHttpTools(HttpToolsProtocol):
    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: Deadline | None = None
        self._in_head = False  # part of a request head has arrived
        self._over = False  # over the bound: one answer, then closed
        self._active: RequestResponseCycle | None = None  # the cycle whose app runs

    # -- the deadline ------------------------------------------------------------
    def _arm(self, deadline: Deadline, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = deadline
        self._timer = self._loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._deadline = None

    def _expired(self) -> None:
        deadline, self._timer, self._deadline = self._deadline, None, None
        transport = self.transport
        if transport.is_closing():  # its last bytes are not being read
            if deadline is Deadline.ANSWER:
                self.guard.stats.request += 1
            transport.abort()
            return
        if deadline is Deadline.REQUEST and self._is_stream():
            return  # a stream keeps its connection
        answer = b""
        if deadline is Deadline.HEAD:
            self.guard.stats.head += 1
            answer = self.guard.head_408 if self._in_head else b""
        else:
            self.guard.stats.request += 1
            cycle = self._active
            if cycle is not None and not cycle.response_started and cycle.more_body:
                answer = self.guard.request_408
        self._hang_up()
        if transport.get_write_buffer_size():  # it does not read what it has already
            transport.abort()
            return
        if answer:
            transport.write(answer)
        transport.close()
        self._arm(Deadline.CLOSING, CLOSE_GRACE)

    def _is_stream(self) -> bool:
        cycle = self._active
        return (
            cycle is not None
            and cycle is self.cycle  # nothing pipelined behind it
            and cycle.response_started
            and cycle.chunked_encoding is True
            and not cycle.response_complete
            and cycle.scope["path"] == self.guard.stream_path
        )

    def _request_timeout(self, cycle: RequestResponseCycle) -> float:
        scope = cycle.scope
        if scope["method"] == "GET" and scope["path"] == self.guard.stream_path:
            return self.guard.opening_timeout
        return self.guard.request_timeout

    def _hang_up(self) -> None:
        """The apps of this connection see the client gone from now on (their
        sends are dropped, ``receive`` answers ``http.disconnect``)."""
        for cycle in (self._active, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    # -- uvicorn's protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.connections = self.connections
        open_now = len(self.connections)
        if open_now > guard.max_connections:
            if open_now > guard.max_connections + REFUSING:
                guard.stats.reset += 1
                transport.abort()
                return
            self._over = True
            guard.refused(open_now)
        self._arm(Deadline.HEAD, guard.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        # uvicorn tells only the newest request that the client has gone; the
        # one running (a stream with a request pipelined behind it) would wait.
        self._hang_up()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._over:
            cast(dict[str, Any], self.scope)[OVER_BOUND] = True  # the app answers it
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is before:  # a websocket upgrade: uvicorn hands the
            self._disarm()  # connection over (the edge serves none: refused at once)
            return
        if self._over:
            self.cycle.keep_alive = False  # uvicorn says "connection: close" and closes
        seconds = self._request_timeout(self.cycle)
        timer = self._timer
        # one request at a time has a deadline: the earliest (one pipelined
        # behind a stream that is still opening must not wait for its 60 s)
        if not (
            self._deadline is Deadline.REQUEST
            and timer is not None
            and timer.when() <= self._loop.time() + seconds
        ):
            self._arm(Deadline.REQUEST, seconds)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._active = cycle
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts a pipelined request, if any
        if self.transport.is_closing():
            self._arm(Deadline.ANSWER, self.guard.request_timeout)
        elif self._active is not None and not self._active.response_complete:
            self._arm(Deadline.REQUEST, self._request_timeout(self._active))
        else:
            self._arm(Deadline.HEAD, self.guard.head_timeout)
