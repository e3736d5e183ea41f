"""The dispatcher process: consume ``sse.events`` in batches, commit, route, ack.

Order of effects for one batch (the delivery guarantee rests on it):
validate → commit (membership, numbers, events, keys) in one transaction →
publish deliveries and dead letters, awaiting broker confirms → ack the batch
with one multiple-ack. A crash anywhere before the ack redelivers the batch;
the dedupe keys committed with it turn the redelivery into a re-publish of the
stored events instead of new ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from ssehub import topology
from ssehub.amqp import AmqpSupervisor
from ssehub.backoff import Backoff
from ssehub.config import Settings
from ssehub.dispatcher import outbound
from ssehub.dispatcher.activity import Activity, ack_now, is_probe, probe_message
from ssehub.dispatcher.intake import DeadLetter, sort_batch
from ssehub.dispatcher.metrics import DispatcherMetrics
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.presence import PresenceOp
from ssehub.dispatcher.retention import Retention, prune
from ssehub.dispatcher.routes import RouteOp, Routes
from ssehub.dispatcher.sequence import Delivery
from ssehub.errors import StoreUnavailable
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.inline import consume_inline
from ssehub.fastpath.marshal import Publish
from ssehub.schema import Message

log = logging.getLogger("ssehub.dispatcher")


@dataclass(slots=True)
class _Link:
    """What one AMQP connection gave us; replaced wholesale on reconnect."""

    generation: int
    consume: aiormq.abc.AbstractChannel
    publisher: BatchPublisher
    # The aio-pika wrappers of both: held only so that they live as long as the
    # link (a collected wrapper marks its channel closed, which the supervisor
    # would take for a lost connection).
    channels: tuple[AbstractChannel, ...]
    # Per-node delivery: whether this link has published a batch, i.e. we are
    # the active dispatcher on it and told every edge to join again.
    resynced: bool = False


class Dispatcher:
    def __init__(self, settings: Settings, store: DispatchStore, name: str = "dispatcher") -> None:
        self._settings = settings
        self._store = store
        # (link generation, message, when it arrived: perf_counter)
        self._inbox: asyncio.Queue[tuple[int, DeliveredMessage, float]] = asyncio.Queue()
        self._link: _Link | None = None
        self._generation = 0
        self._stopping = asyncio.Event()
        self._name = name
        self.metrics = DispatcherMetrics()
        # SSEHUB_DELIVERY=nodes: which edge holds which user (dispatcher/routes.py)
        self.routes = Routes() if settings.delivery != "bindings" else None
        self.activity = Activity()
        self.http_port: int | None = None  # where /metrics is served (dispatcher/main.py)
        self.supervisor = AmqpSupervisor(
            settings.rabbitmq_url,
            self._setup,
            name=f"ssehub-{name}",
            on_lost=self._on_lost,
            max_delay=settings.reconnect_max_delay,
        )
        self._retention = Retention(
            settings.retention_max_age,
            settings.retention_max_events,
            settings.dedupe_window,
            settings.revocation_ttl,
        )
        self.batches = 0  # acked batches; for tests and metrics
        self._started = 0  # batches taken up (failpoints count these)
        # The previous batch, from its publish to its ack. It overlaps the next
        # batch's commit; the broker's confirm round trip is no longer idle time.
        self._acking: asyncio.Task[None] | None = None
        # A link on which a batch failed to publish or ack: no later batch of it
        # may be acked (a multiple-ack would cover the failed one's messages);
        # they all go back to the broker with the connection.
        self._broken: _Link | None = None

    async def _setup(self, connection: AbstractConnection) -> None:
        consume = await connection.channel(publisher_confirms=False)
        publish = await connection.channel(publisher_confirms=True)
        for ch in (consume, publish):
            self.supervisor.watch(ch)
        await topology.declare_core(publish, self._settings.queue_type)
        publisher = BatchPublisher(await publish.get_underlay_channel())
        await consume.set_qos(prefetch_count=self._settings.prefetch)
        raw_consume = await consume.get_underlay_channel()
        self._generation += 1
        generation = self._generation
        self._link = _Link(generation, raw_consume, publisher, (consume, publish))

        activity = self.activity

        def on_message(message: DeliveredMessage) -> None:
            activity.seen = True
            if is_probe(message):  # it reached us: we are the active consumer
                ack_now(raw_consume, _tag(message))
                return
            self._inbox.put_nowait((generation, message, time.perf_counter()))

        # aiormq directly: we need the body, the routing key and a few properties,
        # not aio-pika's IncomingMessage (nor a task) for every consumed message.
        await consume_inline(raw_consume, topology.DISPATCH.name, on_message, no_ack=False)

    async def _on_lost(self) -> None:
        # Unacked messages of the old connection go back to the queue on the broker;
        # the ones we buffered can no longer be acked, so forget them.
        self._link = None
        self.activity.lost()
        while not self._inbox.empty():
            self._inbox.get_nowait()

    async def run(self) -> None:
        """Run until ``stop()``; a batch in progress is finished and acked first.
        Pruning runs between batches, so it never races a batch's transaction."""
        supervisor = asyncio.create_task(self.supervisor.run(), name="dispatcher-amqp")
        loop = asyncio.get_running_loop()
        next_prune = next_sweep = loop.time()
        sweep_every = min(1.0, self._settings.presence_grace / 2)
        sweeping = self._settings.presence or self.routes is not None
        try:
            while not self._stopping.is_set():
                now = loop.time()
                if now >= next_prune:
                    await self._prune()
                    next_prune = loop.time() + self._settings.retention_interval
                if sweeping and now >= next_sweep:
                    self._expire_routes()
                    if self._settings.presence:
                        await self._sweep_presence()
                    next_sweep = loop.time() + sweep_every
                wake = min(next_prune, next_sweep) if sweeping else next_prune
                batch, arrived = await self._next_batch(max(0.0, wake - loop.time()))
                if batch:
                    await self._process(batch, arrived)
        finally:
            if self._acking is not None:
                await asyncio.gather(self._acking, return_exceptions=True)
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
            if self.supervisor.connection is not None:
                await self.supervisor.connection.close()

    def stop(self) -> None:
        self._stopping.set()

    # -- observability (dispatcher/http.py) ------------------------------------
    @property
    def active(self) -> bool:
        """The queue's single active consumer (rule: dispatcher/activity.py)."""
        holding = not self._inbox.empty() or (self._acking is not None and not self._acking.done())
        return self._link is not None and self.activity.active(holding)

    def probe(self) -> asyncio.Future[None] | None:
        if self._link is None:
            return None
        return self._link.publisher.send([probe_message(self._name)])

    async def queue_ready(self) -> int | None:
        """Messages ready in the dispatch queue (a passive declare); None if not connected."""
        link = self._link
        if link is None:
            return None
        ok = await link.consume.queue_declare(topology.DISPATCH.name, passive=True)
        return int(ok.message_count or 0)

    async def _prune(self) -> None:
        try:
            deleted = await prune(self._store.engine, self._retention, time.time())
        except StoreUnavailable as exc:
            log.warning("pruning skipped: %s", exc)
            return
        if deleted:
            log.info("pruned %d events past retention", deleted)

    def _expire_routes(self) -> None:
        """Drop edges silent for three heartbeats from the table, and tell each
        to join again: if it is only slow, it re-reads its streams."""
        link = self._link
        if self.routes is None or link is None or not link.resynced:
            return
        dead = self.routes.expire(time.monotonic(), 3 * self._settings.presence_heartbeat)
        if dead:
            log.info("edges silent, routes dropped: %s", ", ".join(dead))
            resync = topology.notice_properties(topology.Notice.RESYNC)
            resyncs = [Publish(topology.NODES.name, node, b"", resync) for node in dead]
            # best effort: lost with the link, the next link resyncs every edge
            link.publisher.send(resyncs).add_done_callback(_consumed)

    async def _sweep_presence(self) -> None:
        link = self._link
        # per-node delivery: only the active dispatcher knows where users are
        if link is None or (self.routes is not None and not link.resynced):
            return
        try:
            offline = await self._store.sweep_presence(
                self._settings.presence_grace, 3 * self._settings.presence_heartbeat
            )
            if offline:
                await link.publisher.publish(self._messages(link, offline, []))
        except StoreUnavailable as exc:
            log.warning("presence sweep skipped: %s", exc)
        except Exception as exc:  # publishing failed: the link is going down
            log.warning("presence sweep: %s", exc)

    async def _next_batch(self, timeout: float) -> tuple[list[DeliveredMessage], float]:
        """Up to a batch of what the consumer buffered, and when its oldest arrived."""
        inbox = self._inbox
        if inbox.empty():
            get = asyncio.ensure_future(inbox.get())
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait((get, stop), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not get.done():
                get.cancel()
                return [], 0.0
            items = [get.result()]
        else:  # under load: no futures, no wait (~25 µs a batch)
            items = [inbox.get_nowait()]
        while len(items) < self._settings.batch_size and not inbox.empty():
            items.append(inbox.get_nowait())
        link = self._link
        batch = [m for g, m, _ in items if link is not None and g == link.generation]
        return batch, items[0][2]

    async def _process(self, batch: list[DeliveredMessage], arrived: float) -> None:
        link = self._link
        if link is None:
            return
        settings = self._settings
        intake = sort_batch(
            batch, settings.max_message_bytes, settings.max_batch_bytes, time.time()
        )
        good, presence, dead = intake.good, intake.presence, intake.dead
        if intake.routes and settings.presence:  # a join is the user online on the node
            presence = presence + [
                PresenceOp(op.node, user, join) for op in intake.routes for user, join in op.ops
            ]
        self._started += 1
        number = self._started
        started = time.perf_counter()
        self.metrics.batch_messages.observe(len(batch))
        self._failpoint("before_commit", number)
        stored_presence = presence if settings.presence else []  # else: heartbeats only
        deliveries = await self._commit(good, stored_presence, link, number)
        if deliveries is None:
            return  # connection lost while the store was down: the broker redelivers
        self.metrics.events_accepted.inc(len(deliveries))
        self._failpoint("after_commit", number)
        # Acks go in order, and if the previous batch failed, this one is
        # redelivered with it: wait for it before publishing this one.
        if self._acking is not None:
            await self._acking
            self._acking = None
        if self._link is not link or self._broken is link:
            return
        # route rounds mark their edge heard themselves (Routes.apply)
        heard = [p.node for p in intake.presence]
        messages = self._messages(link, deliveries + intake.notices, dead, intake.routes, heard)
        confirmed = link.publisher.send(messages)
        # how long the batch's oldest message waited in us: the inbox, the
        # commit, the previous batch's confirm (hop 1 is before, hop 2 after)
        self.metrics.intake_to_publish.observe(time.perf_counter() - arrived)
        self.metrics.time_publish(confirmed)
        self._acking = asyncio.create_task(
            self._ack(link, confirmed, _tag(batch[-1]), number, started)
        )

    async def _ack(
        self, link: _Link, confirmed: asyncio.Future[None], tag: int, number: int, started: float
    ) -> None:
        try:
            await confirmed
            self._failpoint("after_publish", number)
            await link.consume.basic_ack(tag, multiple=True)
        except Exception as exc:  # nothing acked: everything comes back after the reconnect
            log.warning(
                "publish/ack failed (%s); the batch will be redelivered",
                exc,
                extra={"batch": number, "reason": str(exc)},
            )
            self._broken = link
            self.supervisor.fail()
            return
        self.batches += 1
        self.metrics.batches.inc()
        self.metrics.ack_seconds.observe(time.perf_counter() - started)

    def _failpoint(self, point: str, number: int) -> None:
        """Testing only (SSEHUB_FAILPOINT): die like a power cut at ``point``
        of batch ``number``."""
        if self._settings.failpoint == f"{point}:{number}":
            log.warning("failpoint %s reached: SIGKILL", self._settings.failpoint)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _commit(
        self, good: list[Message], presence: list[PresenceOp], link: _Link, number: int
    ) -> list[Delivery] | None:
        backoff: Backoff | None = None  # on the first failure: its RNG seeds from urandom
        while True:
            try:
                start = time.perf_counter()
                deliveries = await self._store.commit_batch(good, presence)
                self.metrics.commit_seconds.observe(time.perf_counter() - start)
                return deliveries
            except StoreUnavailable as exc:
                backoff = backoff or Backoff(0.05, 5.0)
                log.warning(
                    "store unavailable (%s); retrying batch in %.2fs",
                    exc,
                    backoff.nominal,
                    extra={"batch": number, "reason": str(exc)},
                )
            if self._link is not link:
                return None
            await asyncio.sleep(backoff.next())

    def _messages(
        self,
        link: _Link,
        deliveries: list[Delivery],
        dead: list[DeadLetter],
        routes: Sequence[RouteOp] = (),
        heard: Sequence[str] = (),
    ) -> list[Publish]:
        """A batch's deliveries and dead letters, to publish as one write (ssehub.fastpath)."""
        resync = self.routes is not None and not link.resynced
        if resync:  # we just became active on this link: our table may be stale
            link.resynced = True
        for letter in dead:
            message, reason = letter.message, letter.reason
            log.warning(
                "dead-lettering %r: %s",
                message.routing_key,
                reason,
                extra={"routing_key": message.routing_key, "reason": reason},
            )
            self.metrics.dead_letter(reason)
        return outbound.batch(
            self._settings, self.routes, deliveries, dead, routes, heard, resync=resync
        )


def _consumed(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: the supervisor deals with a failed link


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery.delivery_tag  # type: ignore[union-attr]
    assert tag is not None
    return int(tag)
