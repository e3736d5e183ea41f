"""One partition's batches: consume → commit → publish → ack.

Order of effects for one batch (the delivery guarantee rests on it):
validate → hand on the events of other partitions' users, confirmed (stage
C, only with partitions) → commit (membership, numbers, events, keys) in
one transaction → publish deliveries and dead letters, awaiting broker
confirms → ack the batch with one multiple-ack. A crash anywhere before the
ack redelivers the batch; the dedupe keys committed with it turn the
redelivery into a re-publish of the stored events instead of new ones.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiormq.abc import DeliveredMessage
from ssehub import topology
from ssehub.amqp import BROKER_ERRORS
from ssehub.backoff import Backoff
from ssehub.config import Settings
from ssehub.dispatcher import forward
from ssehub.dispatcher.loop import BatchLoop, Link, tag_of
from ssehub.dispatcher.metrics import DispatcherMetrics
from ssehub.dispatcher.outbound import outbound_for
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.presence import PresenceOp
from ssehub.dispatcher.sequence import Delivery
from ssehub.errors import StoreUnavailable
from ssehub.schema import Message

log = logging.getLogger("ssehub.dispatcher")


class PartitionWorker(BatchLoop):
    def __init__(
        self,
        partition: int,
        settings: Settings,
        store: DispatchStore,
        metrics: DispatcherMetrics,
        name: str = "dispatcher",
    ) -> None:
        super().__init__(f"{name}/{partition}", settings, metrics)
        self.partition = partition
        self.queue = topology.dispatch_queue(partition, settings.partitions)
        self.outbound = outbound_for(settings, partition)
        self._store = store
        self._label = str(partition)

    async def handle(self, batch: list[DeliveredMessage], arrived: float) -> None:
        link = self.link
        if link is None:
            return
        settings = self._settings
        intake = self.sort(batch)
        presence = intake.presence
        if intake.routes and settings.presence:  # a join is the user online on the node
            presence = presence + [
                PresenceOp(op.node, user, join) for op in intake.routes for user, join in op.ops
            ]
        number = self.begin()
        started = time.perf_counter()
        self.metrics.batch_messages.observe(len(batch))
        self.failpoint("before_commit", number)
        stored_presence = presence if settings.presence else []  # else: heartbeats only
        deliveries = await self._commit(intake.good, stored_presence, link, number)
        if deliveries is None:
            return  # the channel went meanwhile: the broker redelivers the batch
        self.metrics.events_accepted.inc(len(deliveries))
        self.metrics.partition_events.labels(self._label).inc(len(deliveries))
        self.failpoint("after_commit", number)
        if not await self.ready_to_publish(link):
            return
        heard = [p.node for p in intake.presence]  # route rounds mark theirs themselves
        messages = self.outbound.messages(
            deliveries + intake.notices, intake.routes, heard, fresh=link.fresh
        )
        messages += self.dead_letters(intake.dead)
        confirmed = self.publish_and_ack(link, messages, tag_of(batch[-1]), number, started)
        # how long the batch's oldest message waited in us: the inbox, the
        # commit, the previous batch's confirm (hop 1 is before, hop 2 after)
        self.metrics.intake_to_publish.observe(time.perf_counter() - arrived)
        self.metrics.time_publish(confirmed)

    async def _commit(
        self, good: list[Message], presence: list[PresenceOp], link: Link, number: int
    ) -> list[Delivery] | None:
        backoff: Backoff | None = None  # on the first failure: its RNG seeds from urandom
        while True:
            try:
                start = time.perf_counter()
                deliveries = await self._store.commit_batch(
                    good,
                    presence,
                    partition=self.partition,
                    forward=self._forwarder(link) if self._settings.partitions > 1 else None,
                )
                self.metrics.commit_seconds.observe(time.perf_counter() - start)
                return deliveries
            except StoreUnavailable as exc:
                backoff = backoff or Backoff(0.05, 5.0)
                log.warning(
                    "store unavailable (%s); retrying batch in %.2fs",
                    exc,
                    backoff.nominal,
                    extra={"batch": number, "reason": str(exc), "partition": self.partition},
                )
            except BROKER_ERRORS as exc:  # its forward was not confirmed: nothing committed
                log.warning(
                    "%s: forward failed (%s); the batch will be redelivered", self.name, exc
                )
                self.broke(link)
                return None
            if self.link is not link:
                return None
            await asyncio.sleep(backoff.next())

    def _forwarder(self, link: Link) -> forward.Send:
        async def send(parts: dict[int, list[Message]]) -> None:
            messages = forward.publishes(parts, self._settings.partitions)
            self.metrics.forwarded.inc(len(messages))
            await link.publisher.send(messages)

        return send

    # -- between batches -----------------------------------------------------------
    def expire_routes(self) -> None:
        """Per-node delivery: drop edges silent for three heartbeats, and tell
        each to join again (only the active dispatcher knows where users are)."""
        link = self.link
        if link is None or link.fresh:
            return
        resyncs = self.outbound.expire(time.monotonic(), 3 * self._settings.presence_heartbeat)
        if resyncs:
            log.info("edges silent, routes dropped: %s", ", ".join(m.routing_key for m in resyncs))
            # best effort: lost with the link, the next link resyncs every edge
            link.publisher.send(resyncs).add_done_callback(_retrieved)

    async def sweep_presence(self) -> None:
        link = self.link
        if link is None or link.fresh:  # only the active dispatcher knows who is where
            return
        settings = self._settings
        try:
            offline = await self._store.sweep_presence(
                settings.presence_grace,
                3 * settings.presence_heartbeat,
                partition=self.partition,
                forward=self._forwarder(link) if settings.partitions > 1 else None,
            )
            if offline:
                await link.publisher.send(self.outbound.messages(offline, (), (), fresh=False))
        except StoreUnavailable as exc:
            log.warning("presence sweep skipped: %s", exc)
        except BROKER_ERRORS as exc:  # the link is going down: its supervisor knows
            log.warning("presence sweep: %s", exc)


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: the supervisor deals with a failed link
