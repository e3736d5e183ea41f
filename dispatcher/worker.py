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
from ssehub.dispatcher.backstop import Backstop
from ssehub.dispatcher.intake import DeadLetter, Intake, internal_error, item_body
from ssehub.dispatcher.loop import BatchLoop, Link, tag_of
from ssehub.dispatcher.metrics import DispatcherMetrics
from ssehub.dispatcher.outbound import outbound_for
from ssehub.dispatcher.persist import Committed, DispatchStore
from ssehub.dispatcher.presence import PresenceOp
from ssehub.errors import StoreRejected, StoreUnavailable
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
        self.backstop = Backstop(
            store.count_redeliveries, settings.max_deliveries, settings.queue_type == "quorum"
        )

    async def handle(self, batch: list[DeliveredMessage], arrived: float) -> None:
        link = self.link
        if link is None:
            return
        settings = self._settings
        tag = tag_of(batch[-1])  # acks the whole batch, set-aside messages included
        batch, overdue = await self.backstop.screen(batch)
        intake = self.sort(batch)
        intake.dead += overdue
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
        committed = await self._commit(intake, stored_presence, link, number)
        if committed is None:
            return  # the channel went meanwhile: the broker redelivers the batch
        deliveries = committed.deliveries
        self.metrics.events_accepted.inc(len(deliveries))
        self.metrics.partition_events.labels(self._label).inc(len(deliveries))
        self.failpoint("after_commit", number)
        if not await self.ready_to_publish(link):
            return
        heard = [p.node for p in intake.presence]  # route rounds mark theirs themselves
        messages = self.outbound.messages(
            deliveries + intake.notices, intake.routes, heard, fresh=link.fresh
        )
        dead = intake.dead + [refused(intake, m, why) for m, why in committed.refused]
        messages += self.dead_letters(dead)
        confirmed = self.publish_and_ack(link, messages, tag, number, started)
        # how long the batch's oldest message waited in us: the inbox, the
        # commit, the previous batch's confirm (hop 1 is before, hop 2 after)
        self.metrics.intake_to_publish.observe(time.perf_counter() - arrived)
        self.metrics.time_publish(confirmed)

    async def _commit(
        self, intake: Intake, presence: list[PresenceOp], link: Link, number: int
    ) -> Committed | None:
        """The batch in one transaction. If it fails in a way that retrying
        cannot fix (a bug, or a value the store refuses), its messages are
        committed one at a time, in order, and the one at fault is dead-lettered
        (``internal_error: <type>``): one message never holds up the others."""
        try:
            return await self._commit_retrying(intake.good, presence, link, number)
        except StoreRejected as exc:
            log.error("%s: batch %d refused by the store (%s); one message at a time",
                      self.name, number, exc)  # fmt: skip
        except Exception as exc:  # (broker errors: _commit_retrying answers None)
            log.error("%s: batch %d met a bug; one message at a time", self.name, number,
                      exc_info=exc)  # fmt: skip
        return await self._commit_alone(intake, presence, link, number)

    async def _commit_alone(
        self, intake: Intake, presence: list[PresenceOp], link: Link, number: int
    ) -> Committed | None:
        out = Committed([])
        for message, origin in zip(intake.good, intake.origins, strict=True):
            try:
                one = await self._commit_retrying([message], [], link, number)
            except Exception as exc:  # (broker errors: _commit_retrying answers None)
                intake.dead.append(internal_error(origin, exc, item_body(message, origin)))
                continue
            if one is None:
                return None
            out.deliveries += one.deliveries
            out.refused += one.refused
        if presence:
            try:
                said = await self._commit_retrying([], presence, link, number)
            except Exception as exc:  # (broker errors: _commit_retrying answers None)
                log.error("%s: presence of batch %d dropped: it met a bug", self.name, number,
                          exc_info=exc)  # fmt: skip
                said = Committed([])
            if said is None:
                return None
            out.deliveries += said.deliveries
        return out

    async def _commit_retrying(
        self, good: list[Message], presence: list[PresenceOp], link: Link, number: int
    ) -> Committed | None:
        """Commit, retrying while the store is unavailable; None once the
        channel is gone (the broker redelivers the batch)."""
        backoff: Backoff | None = None  # on the first failure: its RNG seeds from urandom
        while True:
            try:
                start = time.perf_counter()
                committed = await self._store.commit_batch(
                    good,
                    presence,
                    partition=self.partition,
                    forward=self._forwarder(link) if self._settings.partitions > 1 else None,
                )
                self.metrics.commit_seconds.observe(time.perf_counter() - start)
                return committed
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


def refused(intake: Intake, message: Message, why: str) -> DeadLetter:
    """A message the plan refused (SSEHUB_MAX_MEMBERS), as a dead letter."""
    origin = intake.origin_of(message)
    assert origin is not None, "a refused message comes from the batch"
    return DeadLetter(origin, why, item_body(message, origin))


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: the supervisor deals with a failed link
