"""Prometheus metrics of one edge, on a registry of its own (no global state).

Nothing here is observed per event: at 20k events/s a histogram observation
(a lock and a bucket search) per event would cost more than the write. Events
written are a plain int folded in when scraped; latencies are observed per
stream (connect, replay) or sampled (publish-to-write: one delivery per
dispatcher batch carries its publish time).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from ssehub.edge.stream import CloseReason
from ssehub.fastpath.guard import Guard

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REPLAY_BUCKETS = (0, 1, 10, 100, 500, 1000, 5000, 10_000, 50_000)


class EdgeMetrics:
    def __init__(self, guard: Guard | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # The connection guard's counts (ssehub.fastpath.guard), folded in when
        # scraped; None when the server runs without it.
        self.guard = guard
        self.connections = Gauge("ssehub_connections_open", "Open SSE streams", registry=r)
        self.users = Gauge(
            "ssehub_users_routed", "Users routed to this node (joined or bound)", registry=r
        )
        self.tasks = Gauge("ssehub_asyncio_tasks", "asyncio tasks alive in the process", registry=r)
        self._events_written = Counter(
            "ssehub_events_written", "Events written to clients", registry=r
        )
        # Counted on every write: a plain int here, folded into the Counter
        # (which takes a lock per inc) when scraped.
        self.written = 0
        self.replays = Counter("ssehub_replays", "Streams resumed from a Last-Event-ID", registry=r)
        self.replayed_events = Counter(
            "ssehub_replayed_events", "Frames written from the store", registry=r
        )
        self.gap_fills = Counter(
            "ssehub_gap_fills", "Gaps in the live stream filled from the store", registry=r
        )
        self.slow_closes = Counter(
            "ssehub_slow_client_closes",
            "Streams closed for unsent output or write timeout",
            registry=r,
        )
        self.auth_failures = Counter(
            "ssehub_auth_failures", "Requests refused for a bad or missing token", registry=r
        )
        self.retry_later = Counter(
            "ssehub_retry_later",
            "Streams answered with retry: and closed (not ready)",
            registry=r,
        )
        self.refused = Counter(
            "ssehub_connections_refused",
            "Connections over SSEHUB_MAX_CONNECTIONS, by answer: retry (a stream request: "
            "200 with retry:), unavailable (503), reset (closed unanswered: too many at once)",
            ["answer"],
            registry=r,
        )
        self.deadlines = Counter(
            "ssehub_connection_deadlines",
            "Connections closed at a deadline: head (no complete request head in time), "
            "request (a request that is not a stream not received or answered in time)",
            ["deadline"],
            registry=r,
        )
        for label in ("retry", "unavailable", "reset"):
            self.refused.labels(label)
        for label in ("head", "request"):
            self.deadlines.labels(label)
        self.sockets = Gauge(
            "ssehub_sockets_open",
            "Open client connections, streams and all others, against SSEHUB_MAX_CONNECTIONS",
            registry=r,
        )
        self.max_connections = Gauge(
            "ssehub_max_connections", "The bound on open client connections in effect", registry=r
        )
        self.closes = Counter(
            "ssehub_stream_closes", "Streams ended, by why (CloseReason)", ["reason"], registry=r
        )
        for reason in CloseReason:
            self.closes.labels(reason.value)
        self.connect_seconds = Histogram(
            "ssehub_connect_seconds",
            "From a stream's request to its connected event written",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replay_events = Histogram(
            "ssehub_replay_events",
            "Events written from the store per resumed stream",
            buckets=REPLAY_BUCKETS,
            registry=r,
        )
        self.replay_seconds = Histogram(
            "ssehub_replay_seconds",
            "A resumed stream's replay from the store, until live",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_to_write = Histogram(
            "ssehub_publish_to_write_seconds",
            "Dispatcher publish to edge write, sampled: one delivery per dispatcher batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The publish time (s since the epoch) of a sampled delivery that arrived
        # and whose write is still to come: observed by the next write.
        self.sent_at: float | None = None

    def sampled(self, sent_at_us: object) -> None:
        """A delivery stamped by the dispatcher arrived (the first stays pending)."""
        if self.sent_at is None and isinstance(sent_at_us, int):
            self.sent_at = sent_at_us / 1e6

    def wrote(self) -> None:
        """Called by a write after which ``sent_at`` is set: the sample's write."""
        sent_at, self.sent_at = self.sent_at, None
        if sent_at is not None:
            self.publish_to_write.observe(max(0.0, time.time() - sent_at))

    def render(self) -> bytes:
        written, self.written = self.written, 0
        self._events_written.inc(written)
        if self.guard is not None:
            stats = self.guard.stats
            self.deadlines.labels("head").inc(stats.head)
            self.deadlines.labels("request").inc(stats.request)
            self.refused.labels("reset").inc(stats.reset)
            stats.head = stats.request = stats.reset = 0
            self.sockets.set(self.guard.open)
            self.max_connections.set(self.guard.max_connections)
        return generate_latest(self.registry)
