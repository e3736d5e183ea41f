"""Prometheus metrics of one dispatcher, on a registry of its own (no global state).

Observed per batch, never per message: a batch is up to ``batch_size``
messages and the hot path stays free of locks and clock reads.
"""

from __future__ import annotations

import asyncio
import re
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The ``reason`` label of dead letters: the field an InvalidMessage names first
# (shared/schema.py words every reason as "<field>: ..."; a batch item's as
# "item <n>: <field>: ..."), folded into this fixed set so that the label's
# cardinality is bounded whatever publishers send.
DEAD_REASONS = (
    "json",  # the body is no JSON object (or no batch array)
    "routing_key",
    "event",
    "data",
    "id",
    "size",  # a body over the limit
    "field",  # an unknown field, or a bad flag (ephemeral, receipt)
    "members",  # a list of users (users, exclude) or a membership op
    "control",  # a control op (op, reason, before)
    "other",
)
_BY_FIELD = {
    "body": "json",
    "event": "event",
    "data": "data",
    "id": "id",
    "ephemeral": "field",
    "receipt": "field",
    "exclude": "members",
    "users": "members",
    "op": "members",
    "reason": "control",
    "before": "control",
    # a batch item's target: what the routing key says for a single message
    "target": "routing_key",
    "user": "routing_key",
    "conversation": "routing_key",
    "control": "routing_key",
}
_ITEM = re.compile(r"item \d+: ")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def dead_letter_reason(text: str) -> str:
    """The label for an InvalidMessage's text, e.g. ``"event: missing"`` → ``event``."""
    text = _ITEM.sub("", text, count=1)
    for label in ("internal_error", "redelivered", "too_many_members", "properties"):
        if text.startswith(label):
            return label
    if "lone surrogate" in text:  # "data.text holds a lone surrogate ..."
        return "json"
    field, colon, rest = text.partition(":")
    if not colon:
        return "other"
    if field.startswith("routing key"):  # "routing key 'x': ...", "routing key user.<id>: ..."
        return "routing_key"
    if field == "body" and "exceeds the" in rest:
        return "size"
    if "unknown field" in rest:
        return "field"
    if field == "op" and '"disconnect"' in rest:
        return "control"
    return _BY_FIELD.get(field.partition("[")[0], "other")  # "users[3]: ..." → users


class DispatcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_accepted = Counter(
            "ssehub_dispatcher_events_accepted",
            "Per-user deliveries committed (a fan-out counts each recipient)",
            registry=r,
        )
        self.dead_letters = Counter(
            "ssehub_dispatcher_dead_letters",
            "Messages dead-lettered to sse.dead, by what was wrong with them",
            ["reason"],
            registry=r,
        )
        for reason in DEAD_REASONS:
            self.dead_letters.labels(reason)
        self.batches = Counter("ssehub_dispatcher_batches", "Batches acked", registry=r)
        self.batch_messages = Histogram(
            "ssehub_dispatcher_batch_messages",
            "Messages per batch taken up",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "ssehub_dispatcher_commit_seconds",
            "A batch's store transaction (a successful attempt)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.intake_to_publish = Histogram(
            "ssehub_dispatcher_intake_to_publish_seconds",
            "A batch's oldest message: from its arrival to the batch's publish",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_seconds = Histogram(
            "ssehub_dispatcher_publish_seconds",
            "A batch's publishes, from written until the broker confirmed all of them",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ack_seconds = Histogram(
            "ssehub_dispatcher_ack_seconds",
            "A batch from taken up to acked (how long its messages stay unacked)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_ready = Gauge(
            "ssehub_dispatcher_queue_ready",
            "Messages ready in ssehub.dispatch (read when scraped)",
            registry=r,
        )
        self.active = Gauge(
            "ssehub_dispatcher_active",
            "1 if this dispatcher is the queue's single active consumer",
            registry=r,
        )
        self.routed_users = Gauge(
            "ssehub_dispatcher_routed_users",
            "Per-node delivery: users joined on at least one edge (read when scraped)",
            registry=r,
        )
        self.edges = Gauge(
            "ssehub_dispatcher_edges",
            "Per-node delivery: edges heard from (read when scraped)",
            registry=r,
        )
        self.partition_active = Gauge(
            "ssehub_dispatcher_partition_active",
            "1 for each partition this process is active for (read when scraped)",
            ["partition"],
            registry=r,
        )
        self.partition_events = Counter(
            "ssehub_dispatcher_partition_events",
            "Per-user deliveries committed, by partition",
            ["partition"],
            registry=r,
        )
        self.forwarded = Counter(
            "ssehub_dispatcher_forwarded_messages",
            "Messages handed on to another partition (the front's, and stage C's)",
            registry=r,
        )
        self.releases = Counter(
            "ssehub_dispatcher_partition_releases",
            "Partitions this process released to even out the share",
            registry=r,
        )

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(dead_letter_reason(reason)).inc()

    def time_publish(self, confirmed: asyncio.Future[None]) -> None:
        """Observe ``publish_seconds`` when ``confirmed`` resolves (not when it fails)."""
        start = time.perf_counter()

        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.publish_seconds.observe(time.perf_counter() - start)

        confirmed.add_done_callback(done)

    def render(self) -> bytes:
        return generate_latest(self.registry)
