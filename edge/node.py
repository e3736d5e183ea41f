"""The edge's RabbitMQ side: its node queue, how users are routed to it, live
events in.

Routing follows the registry: a user is routed here (bound on ``sse.deliver``,
or joined at the dispatcher with ``SSEHUB_DELIVERY=nodes``: edge/joins.py)
while at least one of their streams is open here. Routing changes for one
user are serialised, and each re-reads what is wanted when it gets its turn,
so a connect racing a disconnect always ends routed if a stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue
from aiormq.abc import DeliveredMessage
from ssehub import pack, topology
from ssehub.amqp import AmqpSupervisor
from ssehub.config import Delivery, Settings
from ssehub.edge.binder import Binder
from ssehub.edge.joins import Joiner
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.receipts import Receipts
from ssehub.edge.registry import Registry
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.inline import consume_inline
from ssehub.fastpath.marshal import Publish
from ssehub.fastpath.outbox import Outbox
from ssehub.sse import event_seq

log = logging.getLogger("ssehub.edge")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


BIND_CHANNELS = 8
# Per-node delivery: how long a new stream waits for its user's join to be
# answered before it goes on without (and re-reads the store once it is).
JOIN_WAIT = 2.0


class EdgeNode:
    def __init__(self, settings: Settings, registry: Registry, metrics: EdgeMetrics) -> None:
        self.metrics = metrics
        self.node_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._registry = registry
        self._presence = settings.presence
        self._delivery: Delivery = settings.delivery
        self._by_node = settings.delivery != "bindings"
        self._joiner: Joiner | None = None
        self._join_refs = itertools.count(1)  # across links: edge/joins.py
        # bumped when routes are lost (link down, the dispatcher's resync): a
        # join answered for an older epoch does not count
        self._epoch = 0
        # users whose streams went on before their join was answered: they
        # re-read the store once it is
        self._late: set[str] = set()
        self._queue_type = settings.queue_type
        self._heartbeat = settings.presence_heartbeat
        self._queue: AbstractQueue | None = None
        # Binds go out in rounds per channel (edge/binder.py), on a few channels
        # so that rounds also run in parallel.
        self._binders: list[Binder] = []
        # aio-pika wrappers of the channels in use, held so they live as long as the
        # link: a collected wrapper marks its channel closed, which the supervisor
        # would take for a lost connection.
        self._channels: list[AbstractChannel] = []
        self._turn = 0
        self._signals: Outbox | None = None  # presence → dispatcher
        self.receipts = Receipts()
        # stream-cap notices between edges (edge/caps.py): out, and in
        self._notices: Outbox | None = None
        self.on_notice: Callable[[bytes], None] = _ignore
        self._bound: set[str] = set()
        # user -> (lock, number of operations using it); dropped when unused
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.supervisor = AmqpSupervisor(
            settings.rabbitmq_url,
            self._setup,
            name=f"ssehub-edge-{self.node_id}",
            on_lost=self._on_lost,
            max_delay=settings.reconnect_max_delay,
        )

    @property
    def ready(self) -> bool:
        return self.supervisor.ready.is_set()

    @property
    def bound_users(self) -> int:
        return len(self._bound)

    async def _setup(self, connection: AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=False)
        self.supervisor.watch(channel)
        # the dispatch queue too: presence signals go straight into it
        await topology.declare_core(channel, self._queue_type)
        queue = await topology.declare_queue(
            channel, topology.edge_queue(self.node_id, self._delivery)
        )
        self._channels = [channel]
        self._binders = []
        users = self._registry.users()
        if not self._by_node:
            for _ in range(BIND_CHANNELS):
                binder = await connection.channel(publisher_confirms=False)
                self.supervisor.watch(binder)
                self._channels.append(binder)
                self._binders.append(Binder(await binder.get_underlay_channel(), queue.name))
            # The queue is new (exclusive queues die with their connection):
            # bind every user with an open stream before consuming.
            await asyncio.gather(*(self._bind(u, True) for u in users))
            self._bound = set(users)
        # aiormq directly, without a task per message (ssehub.fastpath): aio-pika's
        # IncomingMessage and a task cost more than the rest of the path for a
        # message we only forward.
        raw = await channel.get_underlay_channel()
        await consume_inline(raw, queue.name, self._on_delivery, no_ack=True)
        self._notices = Outbox(raw)
        self._queue = queue
        receipts = await connection.channel(publisher_confirms=True)
        self.supervisor.watch(receipts)
        self._channels.append(receipts)
        self.receipts.attach(BatchPublisher(await receipts.get_underlay_channel()))
        if self._presence or self._by_node:
            signals = await connection.channel(publisher_confirms=False)
            self.supervisor.watch(signals)
            self._channels.append(signals)
            self._signals = Outbox(await signals.get_underlay_channel())
        if self._by_node:
            self._joiner = Joiner(self.node_id, self._signal, self._join_refs)
            self._rejoin_all()  # each user's streams catch up once it is joined
            return
        if self._presence:
            for user in users:  # (re)announce: the dispatcher treats repeats as no-ops
                self._announce(user, True)
        # Events committed while we were cut off never reached this queue:
        # every open stream catches up from the store now, not at its next event.
        for stream in self._registry.streams():
            stream.request_sync()
        for user in set(users) - set(self._registry.users()):  # left during the setup
            self.release(user)

    async def _on_lost(self) -> None:
        self.receipts.attach(None)
        self._channels = []
        self._binders = []
        self._queue = None
        self._signals = None
        self._notices = None
        self._bound.clear()
        self._epoch += 1
        if self._joiner is not None:
            self._joiner.fail(BrokerUnavailable("lost the connection to RabbitMQ"))
            self._joiner = None

    def _on_delivery(self, message: DeliveredMessage) -> None:
        body = message.body
        user = message.routing_key or ""
        headers = message.header.properties.headers
        if not headers:  # the hot path: an event to write, nothing else
            self._registry.deliver(user, event_seq(body), body)
            return
        sent_at = headers.get(topology.SENT_AT_HEADER)
        if pack.PACK_HEADER in headers:  # many users' events (ssehub.pack)
            self._deliver_pack(body, sent_at)
            return
        if sent_at is not None:  # one delivery per dispatcher batch: its publish time
            self._sampled(user, sent_at)
            self._registry.deliver(user, event_seq(body), body)
            return
        notice = _text(headers.get(topology.NOTICE_HEADER))
        if topology.USER_HEADER in headers:  # sent to the node, not by the user's key
            user = _text(headers[topology.USER_HEADER])
        if notice == "joined":
            if self._joiner is not None:
                self._joiner.answered(body)
        elif notice == "resync":  # the dispatcher's table is new: join everyone again
            self._rejoin_all()
        elif notice == "caps":  # another edge's streams of the user (edge/caps.py)
            self.on_notice(body)
        elif notice == "receipt":
            seq = event_seq(body)
            if seq is not None:
                key = headers.get(topology.NOTICE_KEY)
                self._registry.deliver_receipted(user, seq, body, _text(key) if key else None)
        elif notice == "control":
            try:
                op = orjson.loads(body)
            except orjson.JSONDecodeError:
                log.warning("malformed control notice for %r", user)
                return
            closed = self._registry.control(user, op)
            log.info("control %s for %r: %d streams closed", op.get("op"), user, closed)
        else:
            self._registry.deliver(user, event_seq(body), body)

    def _deliver_pack(self, body: bytes, sent_at: object) -> None:
        registry = self._registry
        try:
            for user, sse in pack.decode(body):
                if sent_at is not None and registry.has_user(user):
                    self.metrics.sampled(sent_at)
                    sent_at = None
                registry.deliver(user, event_seq(sse), sse)
        except pack.MalformedPack as exc:  # its users' streams see the gap at their next event
            log.warning("malformed delivery pack: %s", exc)

    def _sampled(self, user: str, sent_at: object) -> None:
        """Sampled if a stream here will write it (that write observes it)."""
        if self._registry.has_user(user):
            self.metrics.sampled(sent_at)

    async def ensure_bound(self, user_id: str) -> bool:
        """Return once live events for ``user_id`` reach this node, or will and
        the user's streams re-read the store then (per-node delivery, when the
        dispatcher is slow to answer or not running). Returns whether another
        edge may hold the user too (edge/caps.py; bindings cannot tell).
        Raises BrokerUnavailable when the broker link is down."""
        if not self._by_node:
            await self._reconcile(user_id)
            if user_id not in self._bound:
                raise BrokerUnavailable("not connected to RabbitMQ")
            return True
        if user_id in self._bound:
            return False  # caps: other edges already heard from are known
        joiner = self._joiner
        if joiner is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        work = asyncio.ensure_future(self._reconcile(user_id))
        # once one round has waited that long, the dispatcher is away: do not wait
        wait = max(0.0, JOIN_WAIT - joiner.waited(time.monotonic()))
        try:
            shared = await asyncio.wait_for(asyncio.shield(work), wait)
        except TimeoutError:
            self._late.add(user_id)
            self._tasks.add(work)
            work.add_done_callback(self._tasks.discard)
            return True
        if user_id in self._bound:
            return shared
        if self._queue is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return True  # routes were lost meanwhile: the rejoin re-reads the streams

    def release(self, user_id: str) -> None:
        """The user's last stream closed: unbind in the background."""
        self.receipts.forget(user_id)
        self._background(self._reconcile(user_id))

    def _background(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rejoin_all(self) -> None:
        """Per-node delivery, after a new queue or the dispatcher's resync:
        every user joins again, and once joined, their streams re-read the
        store (events routed elsewhere meanwhile are only there)."""
        self._epoch += 1
        self._bound.clear()
        for user in self._registry.users():
            self._background(self._rejoin(user))

    async def _rejoin(self, user_id: str) -> None:
        self._late.add(user_id)
        await self._reconcile(user_id)  # a link lost meanwhile: its setup rejoins

    async def _reconcile(self, user_id: str) -> bool:
        lock, users = self._locks.setdefault(user_id, (asyncio.Lock(), [0]))
        users[0] += 1
        shared = False
        try:
            async with lock:
                want = self._registry.has_user(user_id)
                epoch = self._epoch
                if not want:
                    self._late.discard(user_id)
                if self._queue is None:
                    return False
                try:
                    if want and user_id not in self._bound:
                        shared = await self._bind(user_id, True)
                        if epoch == self._epoch:  # else: routes were lost meanwhile
                            self._bound.add(user_id)
                            self._announce(user_id, True)
                            if user_id in self._late:
                                self._late.discard(user_id)
                                for stream in self._registry.streams_of(user_id):
                                    stream.request_sync()
                    elif not want and user_id in self._bound:
                        self._bound.discard(user_id)
                        await self._bind(user_id, False)
                        self._announce(user_id, False)
                except BrokerUnavailable as exc:
                    log.warning("routing %r failed: %s", user_id, exc)
                    if not self._by_node:
                        self.supervisor.fail()
                except Exception as exc:
                    log.warning("binding %r failed: %r", user_id, exc)
                    self.supervisor.fail()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[user_id]
        return shared

    async def _bind(self, user_id: str, bind: bool) -> bool:
        """Route ``user_id`` here (or stop); per-node: whether another edge holds it."""
        if self._by_node:
            if self._joiner is None:
                raise BrokerUnavailable("not connected to RabbitMQ")
            return await self._joiner.apply(user_id, bind)
        self._turn = (self._turn + 1) % len(self._binders)
        await self._binders[self._turn].apply(user_id, bind)
        return True

    def publish_notice(self, notice: Publish) -> None:
        """Best effort: a notice lost with the link is re-sent with the next change.
        Per-node delivery: the dispatcher forwards it to the user's edges."""
        if self._by_node:
            self._signal(Publish("", topology.DISPATCH.name, notice.body, notice.properties))
        elif self._notices is not None:
            with contextlib.suppress(BrokerUnavailable):
                self._notices.publish([notice])

    def _announce(self, user_id: str | None, online: bool) -> None:
        # per-node delivery: a join or leave is the presence signal (the dispatcher's)
        if user_id is None or not self._by_node:
            self._signal(topology.presence_message(self.node_id, user_id, online))

    def _signal(self, message: Publish) -> None:
        if self._signals is not None:
            with contextlib.suppress(BrokerUnavailable):
                self._signals.publish([message])

    async def heartbeats(self) -> None:
        """Tell the dispatcher this node is alive; a silent node's users go offline
        (and, per-node delivery, are no longer routed here)."""
        if not (self._presence or self._by_node):
            return
        while True:
            try:
                self._announce(None, True)
            except Exception as exc:  # the supervisor deals with the link
                log.debug("heartbeat not sent: %s", exc)
            await asyncio.sleep(self._heartbeat)

    async def idle(self) -> None:
        """Wait for background unbinds (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _ignore(_body: bytes) -> None:
    pass
