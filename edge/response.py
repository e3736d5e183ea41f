"""``GET /sse/connect``'s response: one client's stream, as raw ASGI.

Sequence for a new stream (the order is what makes the replay/live seam exact):
register the stream (live events are held from here on) → bind the user
on this node → read the user's position → answer 200 → ``retry:`` and
``connected`` → replay from the store → held live events → live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from secrets import token_hex

from ssehub.edge.context import EdgeContext
from ssehub.edge.pump import Pump, closes_on_failure
from ssehub.edge.stream import FAREWELLS, CloseReason, Stream
from ssehub.errors import BrokerUnavailable, StoreUnavailable
from ssehub.sse import render_connected, render_retry
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("ssehub.edge")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
RETRY_LATER_MS = 1500  # base of the short retry: answered when we cannot serve now


def stream_id(now: float) -> str:
    """``c-`` + the open time (µs, 13 hex digits: sorts as it happened) + 20 random
    hex digits: the user's streams rank by it (edge/caps.py)."""
    return f"c-{int(now * 1e6):013x}{token_hex(10)}"


class RetryLater(Response):
    """200 with a short jittered ``retry:`` and an immediate close. A browser's
    EventSource gives up for good on any non-200, so this is how an edge that
    cannot serve right now sends a client elsewhere or to later."""

    def __init__(self) -> None:
        super().__init__(render_retry(RETRY_LATER_MS))
        self.raw_headers = [*HEADERS, (b"content-length", b"%d" % len(self.body))]


class StreamResponse(Response):
    def __init__(
        self,
        ctx: EdgeContext,
        user_id: str,
        last_event_id: int | None,
        expires_at: float | None = None,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.user_id = user_id
        self.last_event_id = last_event_id
        self.expires_at = expires_at  # the token's exp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        now = time.time()
        stream = Stream(self.user_id, stream_id(now), ctx.settings.client_buffer_bytes)
        ctx.registry.add(stream)  # in the same step as the route's caps.full check
        if self.expires_at is not None:
            ctx.tokens.add(stream, self.expires_at, now)
        ctx.metrics.connections.inc()
        try:
            try:
                await ctx.node.ensure_bound(self.user_id)
                ctx.caps.announce(self.user_id, time.monotonic())
                position = await ctx.store.position(self.user_id)
            except (BrokerUnavailable, StoreUnavailable) as exc:
                log.warning("cannot serve %s now: %s", self.user_id, exc)
                ctx.metrics.retry_later.inc()
                await RetryLater()(scope, receive, send)
                return
            recovered = self.last_event_id is not None and position.can_resume(self.last_event_id)
            stream.cursor = self.last_event_id if recovered else position.last_seq  # type: ignore[assignment]
            if recovered:
                ctx.metrics.replays.inc()
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            first = render_retry(ctx.settings.retry_ms) + render_connected(
                stream.cursor, self.user_id, stream.stream_id, recovered
            )
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await self._serve(stream, receive, send, position.last_seq)
        finally:
            ctx.metrics.connections.dec()
            ctx.tokens.discard(stream)
            if ctx.registry.remove(stream):
                ctx.node.release(self.user_id)
            ctx.caps.closed(self.user_id)

    async def _serve(self, stream: Stream, receive: Receive, send: Send, stored_upto: int) -> None:
        ctx = self.ctx
        pump = Pump(
            stream,
            send,
            ctx.store,
            ctx.metrics,
            page=ctx.settings.replay_page,
            timeout=ctx.settings.write_timeout,
        )
        try:
            with closes_on_failure(stream):
                await pump.sync(stored_upto)  # the replay, in this task
                await pump.live_until_closed(receive)
        finally:
            await pump.stop()
            ctx.metrics.replayed_events.inc(stream.replayed)
        if stream.closed in (CloseReason.SLOW, CloseReason.WRITE_TIMEOUT):
            log.info("closing slow client %s (%s)", stream.stream_id, stream.closed)
            ctx.metrics.slow_closes.inc()
        if stream.closed is not CloseReason.DISCONNECT:
            # The output left, with a farewell event last; then the end of the
            # chunked body. A frozen client may never take it.
            farewell = FAREWELLS.get(stream.closed) if stream.closed else None
            last = b"" if farewell is None else stream.take()[0] + farewell
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(1.0):
                    await send({"type": "http.response.body", "body": last, "more_body": False})
