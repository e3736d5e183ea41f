"""``GET /sse/connect``'s response: one client's stream, as raw ASGI.

Sequence for a new stream (the order is what makes the replay/live seam exact):
register the connection (live frames are held from here on) → bind the user
on this node → read the user's position → answer 200 → ``retry:`` and
``connected`` → replay from the store → held live frames → live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from secrets import token_hex

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from edge.connection import Connection
from edge.metrics import EdgeMetrics
from edge.node import EdgeNode
from edge.pump import Pump, closes_on_failure
from edge.registry import Registry
from shared.config import Settings
from shared.errors import BrokerUnavailable, StoreUnavailable
from shared.frames import connected_frame, retry_frame
from shared.store import EventStore

log = logging.getLogger("ssehub.edge")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
RETRY_LATER_MS = 1500  # base of the short retry: answered when we cannot serve now


@dataclass(slots=True)
class Hub:
    """What every stream of one edge process shares."""

    settings: Settings
    store: EventStore
    registry: Registry
    node: EdgeNode
    metrics: EdgeMetrics
    draining: bool = False


class RetryLater(Response):
    """200 with a short jittered ``retry:`` and an immediate close. A browser's
    EventSource gives up for good on any non-200, so this is how an edge that
    cannot serve right now sends a client elsewhere or to later."""

    def __init__(self) -> None:
        super().__init__(retry_frame(RETRY_LATER_MS))
        self.raw_headers = [*HEADERS, (b"content-length", b"%d" % len(self.body))]


class EventStream(Response):
    def __init__(self, hub: Hub, user_id: str, last_event_id: int | None) -> None:
        super().__init__()
        self.hub = hub
        self.user_id = user_id
        self.last_event_id = last_event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self.hub
        # token_hex: the same 32 hex digits as uuid4().hex, at a fraction of the cost
        conn = Connection(self.user_id, f"c-{token_hex(16)}", hub.settings.client_buffer_bytes)
        hub.registry.add(conn)
        hub.metrics.connections.inc()
        try:
            try:
                await hub.node.ensure_bound(self.user_id)
                position = await hub.store.position(self.user_id)
            except (BrokerUnavailable, StoreUnavailable) as exc:
                log.warning("cannot serve %s now: %s", self.user_id, exc)
                hub.metrics.retry_later.inc()
                await RetryLater()(scope, receive, send)
                return
            recovered = self.last_event_id is not None and position.can_resume(self.last_event_id)
            conn.cursor = self.last_event_id if recovered else position.last_seq  # type: ignore[assignment]
            if recovered:
                hub.metrics.replays.inc()
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            first = retry_frame(hub.settings.retry_ms) + connected_frame(
                conn.cursor, self.user_id, conn.connection_id, recovered
            )
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await self._serve(conn, receive, send, position.last_seq)
        finally:
            hub.metrics.connections.dec()
            if hub.registry.remove(conn):
                hub.node.release(self.user_id)

    async def _serve(
        self, conn: Connection, receive: Receive, send: Send, stored_upto: int
    ) -> None:
        hub = self.hub
        pump = Pump(
            conn,
            send,
            hub.store,
            hub.metrics,
            page=hub.settings.replay_page,
            timeout=hub.settings.write_timeout,
        )
        try:
            with closes_on_failure(conn):
                await pump.sync(stored_upto)  # the replay, in this task
                await pump.live_until_closed(receive)
        finally:
            await pump.stop()
            hub.metrics.replayed_events.inc(conn.replayed)
        if conn.closed in ("slow", "write-timeout"):
            log.info("closing slow client %s (%s)", conn.connection_id, conn.closed)
            hub.metrics.slow_closes.inc()
        if conn.closed != "disconnect":
            # End the chunked body; a frozen client may never take it.
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(1.0):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
