"""One dispatcher process: its broker link, the partitions it may work on, the
front stage, and its share of the partitions.

The process consumes every partition queue it may work on (all, or the ones
it is pinned to), each on a channel of its own, and with several partitions
the intake queue too (dispatcher/front.py). RabbitMQ makes it active for
some of them (single active consumer); each partition's batches run in a
``PartitionWorker`` (dispatcher/worker.py). Its fair share (dispatcher/
share.py) releases a partition by closing that partition's channel once its
batch in hand is acked: RabbitMQ puts the unacked rest back in the queue, in
order, and makes the next consumer in line active; the process then lines up
again behind the others. Every task of the process (the link's supervisor,
each queue's loop, housekeeping, the share) runs in one task group: an
unexpected exception in any of them ends ``run`` with it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aio_pika.abc import AbstractChannel, AbstractConnection
from ssehub import topology
from ssehub.amqp import BROKER_ERRORS, AmqpSupervisor
from ssehub.config import Settings
from ssehub.dispatcher.activity import PROBE_EVERY, probe_message
from ssehub.dispatcher.backstop import Backstop
from ssehub.dispatcher.front import Front
from ssehub.dispatcher.loop import BatchLoop
from ssehub.dispatcher.metrics import DispatcherMetrics
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.retention import Retention, prune
from ssehub.dispatcher.share import to_release
from ssehub.dispatcher.worker import PartitionWorker
from ssehub.errors import StoreUnavailable
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.inline import consume_inline
from ssehub.storage.identity import StoreIdentity, check_deployment

log = logging.getLogger("ssehub.dispatcher")

SHARE_EVERY = 1.0  # seconds between two looks at the share; probes as often


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        store: DispatchStore,
        name: str = "dispatcher",
        pinned: frozenset[int] | None = None,
    ) -> None:
        """``pinned``: the partitions this process works on, never released
        (None: any, by its fair share)."""
        self._settings = settings
        self._store = store
        self._name = name
        self._pinned = pinned
        n = settings.partitions
        self.metrics = DispatcherMetrics()
        mine = sorted(pinned) if pinned is not None else range(n)
        self._probe_every = SHARE_EVERY if n > 1 else PROBE_EVERY
        self.workers = {p: PartitionWorker(p, settings, store, self.metrics, name) for p in mine}
        backstop = Backstop(
            store.count_redeliveries, settings.max_deliveries, settings.queue_type == "quorum"
        )
        self.front = Front(settings, self.metrics, name, backstop) if n > 1 else None
        self._loops: list[BatchLoop] = [
            *([self.front] if self.front else []),
            *self.workers.values(),
        ]
        self._busy = {id(loop): asyncio.Lock() for loop in self._loops}  # a batch in hand
        self._releasing: set[int] = set()  # loops whose channel we close on purpose
        self._publisher: BatchPublisher | None = None
        self._publish_channel: AbstractChannel | None = None  # held: see _setup
        self._connection: AbstractConnection | None = None
        # probes tell a process which queues it is active for: for the share,
        # and for /readyz when the HTTP port is served (dispatcher/main.py)
        self.probing = n > 1
        self._stopping = asyncio.Event()
        self.http_port: int | None = None  # where /metrics is served (dispatcher/main.py)
        self.running: asyncio.Task[None] | None = None  # run(), set by dispatcher/main.py
        # the store's id: checked with the broker on every link, before consuming
        self.identity: StoreIdentity | None = None
        self.supervisor = AmqpSupervisor(
            settings.rabbitmq_url,
            self._setup,
            name=f"ssehub-{name}",
            on_lost=self._on_lost,
            max_delay=settings.reconnect_max_delay,
        )
        self._retention = Retention.of(settings)

    # -- the link ------------------------------------------------------------------
    async def _setup(self, connection: AbstractConnection) -> None:
        if self.identity is not None:  # raises WrongStore: a standby must not take over
            await check_deployment(connection, self.identity)
        publish = await connection.channel(publisher_confirms=True)
        self.supervisor.watch(publish)
        settings = self._settings
        await topology.declare_deployment(
            publish, settings.queue_type, settings.partitions, settings.dead_letter_max
        )
        self._publisher = BatchPublisher(await publish.get_underlay_channel())
        self._publish_channel = publish  # held: a collected wrapper marks its channel closed
        self._connection = connection
        for loop in self._loops:
            await self._consume(connection, loop)

    async def _consume(self, connection: AbstractConnection, loop: BatchLoop) -> None:
        """Line ``loop`` up on its queue, on a channel of its own."""
        assert self._publisher is not None
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._settings.prefetch)
        raw = await channel.get_underlay_channel()
        link = loop.attach(raw, self._publisher, channel)

        def closed(_: object) -> None:
            if loop.link is link:
                loop.detach()
                if id(loop) not in self._releasing:  # the broker closed it: a new link
                    self.supervisor.fail()

        raw.closing.add_done_callback(closed)
        # aiormq directly: we need the body, the routing key and a few properties,
        # not aio-pika's IncomingMessage (nor a task) for every consumed message.
        await consume_inline(raw, loop.queue, loop.on_message, no_ack=False)

    async def _on_lost(self) -> None:
        self._publisher = None
        self._connection = None
        for loop in self._loops:
            loop.detach()

    # -- running ---------------------------------------------------------------------
    async def run(self) -> None:
        """Run until ``stop()``; the batches in hand are finished and acked first.
        Raises what a task of the process raised that was not expected."""
        async with asyncio.TaskGroup() as group:
            link = group.create_task(self.supervisor.run(), name="dispatcher-amqp")
            loops = [group.create_task(self._drive(loop)) for loop in self._loops]
            chores = [group.create_task(self._housekeeping()), group.create_task(self._probes())]
            if self._settings.partitions > 1 and self._pinned is None:
                chores.append(group.create_task(self._fair_share()))
            await self._stopping.wait()
            await asyncio.gather(*loops)  # each finishes its batch in hand
            for loop in self._loops:
                await loop.settle()
            for task in (*chores, link):
                task.cancel()
        if self.supervisor.connection is not None:
            await self.supervisor.connection.close()

    def stop(self) -> None:
        self._stopping.set()

    async def _drive(self, loop: BatchLoop) -> None:
        busy = self._busy[id(loop)]
        while not self._stopping.is_set():
            batch, arrived = await loop.next_batch(0.5)
            if not batch:
                continue
            async with busy:
                try:
                    await loop.handle(batch, arrived)
                    continue
                except BROKER_ERRORS:
                    raise
                except Exception as exc:
                    # Messages are isolated one by one (intake, worker); this is a
                    # bug in the batch's own path. It must not end the process, and
                    # the batch must come back: a fresh channel redelivers it, and
                    # the redelivery backstop sets aside a message that keeps failing.
                    log.error("%s: a batch met a bug; its channel is renewed so that it is"
                              " redelivered", loop.name, exc_info=exc)  # fmt: skip
                await self._renew(loop)

    async def _probes(self) -> None:
        while True:
            if self.probing:
                self.probe()
            await asyncio.sleep(self._probe_every / 5)

    async def _housekeeping(self) -> None:
        """Between batches of this process: pruning (by whoever works on
        partition 0, or the only partition), presence and silent edges."""
        settings = self._settings
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        sweep_every = min(1.0, settings.presence_grace / 2)
        while True:
            first = self.workers.get(0)
            if loop.time() >= next_prune and (first is None or first.active):
                await self._prune()
                next_prune = loop.time() + settings.retention_interval
            for worker in self.workers.values():
                worker.expire_routes()
                if settings.presence:
                    async with self._busy[id(worker)]:
                        await worker.sweep_presence()
            await asyncio.sleep(sweep_every)

    async def _prune(self) -> None:
        try:
            deleted = await prune(self._store.engine, self._retention, time.time())
        except StoreUnavailable as exc:
            log.warning("pruning skipped: %s", exc)
            return
        if deleted:
            log.info("pruned %d events past retention", deleted)

    # -- the share -------------------------------------------------------------------
    async def _fair_share(self) -> None:
        """Every ``SHARE_EVERY``: release what is beyond the share (what a
        process holds it learns from deliveries and probes: dispatcher/activity.py)."""
        while True:
            await asyncio.sleep(SHARE_EVERY)
            processes = await self._processes()
            if processes is None:
                continue
            held = self.partitions
            for p in to_release(held, self._settings.partitions, processes):
                await self._release(self.workers[p])

    async def _processes(self) -> int | None:
        """Dispatcher processes alive: every one consumes the intake queue."""
        link = self.front.link if self.front is not None else None
        if link is None:
            return None
        try:
            ok = await link.consume.queue_declare(topology.DISPATCH.name, passive=True)
        except BROKER_ERRORS:  # the link is going: the supervisor deals with it
            return None
        return max(1, int(ok.consumer_count or 0))

    async def _release(self, worker: PartitionWorker) -> None:
        async with self._busy[id(worker)]:
            if await self._renew(worker):
                self.metrics.releases.inc()
                log.info("partition %d released to even out the share", worker.partition)

    async def _renew(self, loop: BatchLoop) -> bool:
        """Close ``loop``'s channel and consume again on a new one, behind the
        others: what it had not acked goes back to the queue, in order, and the
        next consumer in line becomes active. Caller holds the loop's lock."""
        await loop.settle()  # acked, or it comes back with the rest
        link, connection = loop.link, self._connection
        if link is None or connection is None:
            return False
        self._releasing.add(id(loop))
        try:
            loop.detach()
            await link.channel.close()  # the rest goes back, in order; the next is active
        finally:
            self._releasing.discard(id(loop))
        await self._consume(connection, loop)  # in line again, behind the others
        return True

    # -- observability (dispatcher/http.py) ----------------------------------------
    @property
    def partitions(self) -> list[int]:
        """The partitions this process is active for."""
        return [p for p, w in self.workers.items() if w.active]

    @property
    def active(self) -> bool:
        return bool(self.partitions)

    @property
    def batches(self) -> int:
        """Batches acked by this process (all its queues); for tests."""
        return sum(loop.batches for loop in self._loops)

    def probe(self) -> None:
        """A probe into each idle queue we consume: its active consumer acks it."""
        publisher = self._publisher
        if publisher is None:
            return
        probes = [
            probe_message(self._name, loop.queue)
            for loop in self._loops
            if loop.link is not None and loop.activity.tick()
        ]
        if probes:
            publisher.send(probes).add_done_callback(_retrieved)

    async def queue_ready(self) -> int | None:
        """Messages ready in the dispatch queues (passive declares); None if not connected."""
        total = None
        for loop in self._loops:
            if loop.link is not None:
                ok = await loop.link.consume.queue_declare(loop.queue, passive=True)
                total = (total or 0) + int(ok.message_count or 0)
        return total


def _retrieved(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: the supervisor deals with a failed link
