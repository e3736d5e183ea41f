"""``GET /sse/connect``'s response: one client's stream, as raw ASGI.

Sequence for a new stream (the order is what makes the replay/live seam
exact, edge/seam.py): register the stream (live events are held from here
on) → route the user to this node → read the user's position (and
revocation) and the presence snapshot → answer 200 → ``retry:`` and
``connected`` → replay from the store → ``presence:snapshot`` → held live
events → live (edge/pump.py). A client that stops reading has its
connection dropped at once (ssehub.fastpath.transport: ``aborter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from secrets import token_hex

from ssehub.edge.auth import Identity
from ssehub.edge.context import EdgeContext
from ssehub.edge.pump import Pump, closes_on_failure
from ssehub.edge.registry import revoked
from ssehub.edge.replays import ReplayBudget, retry_ms
from ssehub.edge.seam import Opened
from ssehub.edge.stream import FAREWELLS, GOODBYES, CloseReason, Stream
from ssehub.errors import AuthError, BrokerUnavailable, StoreUnavailable
from ssehub.fastpath.transport import RAW_SEND, aborter, direct_writer
from ssehub.sse import render_connected, render_retry
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("ssehub.edge")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
RETRY_LATER_MS = 1500  # base of the short retry: answered when we cannot serve now
TOKEN_REVOKED = AuthError("token_revoked", "The token has been revoked; sign in again.")


def stream_id(now: float) -> str:
    """``c-`` + the open time (µs, 13 hex digits: sorts as it happened) + 20 random
    hex digits: the user's streams rank by it (edge/caps.py)."""
    return f"c-{int(now * 1e6):013x}{token_hex(10)}"


def refuse(exc: AuthError) -> JSONResponse:
    """401 with the contract's JSON body and ``WWW-Authenticate``; no stream."""
    return JSONResponse(
        {"error": exc.code, "message": exc.message},
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer error="{exc.code}"'},
    )


class RetryLater(Response):
    """200 with a short jittered ``retry:`` and an immediate close. A browser's
    EventSource gives up for good on any non-200, so this is how an edge that
    cannot serve right now sends a client elsewhere or to later."""

    def __init__(self, base_ms: int = RETRY_LATER_MS) -> None:
        super().__init__(render_retry(base_ms))
        self.raw_headers = [*HEADERS, (b"content-length", b"%d" % len(self.body))]


class StreamResponse(Response):
    def __init__(
        self,
        ctx: EdgeContext,
        identity: Identity,
        last_event_id: int | None,
        replays: ReplayBudget | None = None,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.identity = identity
        self.user_id = identity.user_id
        self.last_event_id = last_event_id
        self.replays = replays  # the users' replay budgets on this edge (edge/replays.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        now = time.time()
        started = time.perf_counter()
        stream = Stream(
            self.user_id, stream_id(now), ctx.settings.client_buffer_bytes, self.identity.iat
        )
        if self.identity.exp is not None:
            ctx.tokens.add(stream, self.identity.exp, now)
        ctx.metrics.connections.inc()
        try:
            try:
                # registers the stream in this step, the route's caps check's
                opened = await ctx.node.seam.open(stream)
            except (BrokerUnavailable, StoreUnavailable) as exc:
                log.warning(
                    "cannot serve %s now: %s", self.user_id, exc, extra={"user": self.user_id}
                )
                ctx.metrics.retry_later.inc()
                await RetryLater()(scope, receive, send)
                return
            ctx.node.caps.announce(self.user_id, time.monotonic(), hello=opened.shared)
            position = opened.position
            # Read after the route: a revoke committed later reaches this stream live.
            if revoked(self.identity.iat, position.revoked_before):
                ctx.metrics.auth_failures.inc()
                log.info(
                    "refused a stream: 401 token_revoked",
                    extra={"reason": "token_revoked", "status": 401, "user": self.user_id},
                )
                await refuse(TOKEN_REVOKED)(scope, receive, send)
                return
            recovered = self.last_event_id is not None and position.can_resume(self.last_event_id)
            stream.cursor = self.last_event_id if recovered else position.last_seq  # type: ignore[assignment]
            if recovered and self.replays is not None:
                missed = position.last_seq - stream.cursor
                wait = self.replays.take(self.user_id, missed, time.monotonic())
                if wait > 0:
                    log.info(
                        "replay of %d events for %s refused for %.1f s (SSEHUB_REPLAY_RATE)",
                        missed,
                        self.user_id,
                        wait,
                        extra={"reason": "replay_limited", "user": self.user_id},
                    )
                    ctx.metrics.retry_later.inc()
                    await RetryLater(retry_ms(wait))(scope, receive, send)
                    return
            if recovered:
                ctx.metrics.replays.inc()
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            first = render_retry(ctx.settings.retry_ms) + render_connected(
                stream.cursor, self.user_id, stream.stream_id, recovered
            )
            await send({"type": "http.response.body", "body": first, "more_body": True})
            ctx.metrics.connect_seconds.observe(time.perf_counter() - started)
            if log.isEnabledFor(logging.DEBUG):  # a storm opens thousands a second
                log.debug(
                    "stream %s opened for %s",
                    stream.stream_id,
                    self.user_id,
                    extra={"user": self.user_id, "stream": stream.stream_id, "resumed": recovered},
                )
            try:
                await self._serve(stream, scope, receive, send, opened, recovered)
            except Exception:  # a bug: raised on, the server logs its traceback
                stream.close(CloseReason.ERROR)
                ctx.metrics.closes.labels(CloseReason.ERROR.value).inc()
                raise
        finally:
            self._closed(stream)

    def _closed(self, stream: Stream) -> None:
        """Whatever ended the stream (a bug included), once: synchronous, so no
        cancellation can cut it short."""
        ctx = self.ctx
        ctx.metrics.connections.dec()
        ctx.tokens.discard(stream)
        if ctx.node.seam.close(stream):
            ctx.node.released(self.user_id)
        ctx.node.caps.closed(self.user_id)

    async def _serve(
        self,
        stream: Stream,
        scope: Scope,
        receive: Receive,
        send: Send,
        opened: Opened,
        resumed: bool,
    ) -> None:
        ctx = self.ctx
        raw_send = scope.get(RAW_SEND, send)  # the response has started
        pump = Pump(
            stream,
            send,
            ctx.store,
            ctx.metrics,
            page=ctx.settings.replay_page,
            timeout=ctx.settings.write_timeout,
            receipts=ctx.node.receipts.report,
            write=direct_writer(raw_send),
            writes=ctx.writes,
        )
        try:
            async with pump.running(receive):
                started = time.perf_counter()
                with closes_on_failure(stream):  # the replay, in this task
                    await pump.sync(opened.position.last_seq, opened.snapshot)
                if resumed:
                    ctx.metrics.replay_seconds.observe(time.perf_counter() - started)
                    ctx.metrics.replay_events.observe(stream.replayed)
                await pump.live()
        finally:
            ctx.metrics.replayed_events.inc(stream.replayed)
        fields = {"user": stream.user_id, "stream": stream.stream_id, "reason": stream.closed}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("stream %s closed (%s)", stream.stream_id, stream.closed, extra=fields)
        if stream.closed is not None:
            ctx.metrics.closes.labels(stream.closed.value).inc()
        if stream.closed in SLOW:
            log.info("closing slow client %s (%s)", stream.stream_id, stream.closed, extra=fields)
            ctx.metrics.slow_closes.inc()
            abort = aborter(raw_send)
            if abort is not None:
                # At once, unsent bytes and all: a graceful close would wait for a
                # client that stopped reading to take them, for as long as it likes.
                abort()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # the server sees it gone
                        while (await receive())["type"] != "http.disconnect":
                            pass
                return
        if stream.closed is not CloseReason.DISCONNECT:
            # The output left, with a farewell event last (the client learns why);
            # then the end of the chunked body. A frozen client may never take it.
            last = b""
            if stream.closed in GOODBYES:
                last = stream.take()[0] + FAREWELLS.get(stream.closed, b"")
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(1.0):
                    await send({"type": "http.response.body", "body": last, "more_body": False})


# closes for a client that does not take what it is sent: its connection is dropped
SLOW = frozenset({CloseReason.SLOW, CloseReason.WRITE_TIMEOUT})
