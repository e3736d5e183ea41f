"""Prometheus metrics of one edge, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("ssehub_connections_open", "Open SSE streams", registry=r)
        self.users = Gauge("ssehub_users_bound", "Users bound on this node", registry=r)
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

    def render(self) -> bytes:
        written, self.written = self.written, 0
        self._events_written.inc(written)
        return generate_latest(self.registry)
