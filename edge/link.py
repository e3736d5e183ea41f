"""The edge's broker link: one AMQP connection, its channels and the node queue.

Built by the supervisor's ``setup`` and thrown away whole on any loss
(shared/amqp.py): recovery is the start-up path. On each new link, in order:

0. RabbitMQ agrees that the edge's store is the deployment's
   (ssehub.storage.identity; else the edge stops, in one line);
1. the deployment's partition count is checked (its marker declared), and
   what a dispatcher declares checked passively: the exchanges and the
   dispatch queues (presence signals and joins go to a partition's queue,
   through ``ssehub.internal``). The edge's broker user may declare nothing
   else (ssehub.roles): until a dispatcher has, the edge waits, saying so;
2. the node queue, exclusive, with the delivery design's bindings;
3. a channel for signals (presence, heartbeats, joins, caps notices: published
   without waiting) and a confirm channel for receipts (edge/receipts.py);
4. the routing's own channels (edge/routing.py);
5. consuming the node queue, inline (ssehub.fastpath.inline): deliveries go
   to the inbox (edge/inbox.py) from the connection's reader, no task each;
6. ``on_up``: the seam routes every user with an open stream again.

On a loss, ``on_down`` first (the seam forgets its routes), then the
receipts and the routing let go of the old channels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from ssehub import topology
from ssehub.amqp import AmqpSupervisor
from ssehub.config import Settings
from ssehub.edge.receipts import Receipts
from ssehub.edge.routing import Attached, Routing
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.inline import consume_inline
from ssehub.fastpath.marshal import Publish
from ssehub.fastpath.outbox import Outbox
from ssehub.storage.identity import StoreIdentity, check_deployment


class EdgeLink:
    def __init__(
        self,
        settings: Settings,
        node_id: str,
        routing: Routing,
        receipts: Receipts,
        inbox: Callable[[DeliveredMessage], None],
        on_up: Callable[[], None],
        on_down: Callable[[], None],
        identity: StoreIdentity | None = None,
    ) -> None:
        self._node_id = node_id
        self._partitions = settings.partitions
        self._routing = routing
        self._receipts = receipts
        self._inbox = inbox
        self._on_up = on_up
        self._on_down = on_down
        self._identity = identity
        self._signals: Outbox | None = None
        # aio-pika wrappers of the channels in use, held so they live as long as
        # the link: a collected wrapper marks its channel closed, which the
        # supervisor would take for a lost connection
        self._channels: list[AbstractChannel] = []
        self.supervisor = AmqpSupervisor(
            settings.rabbitmq_url,
            self._setup,
            name=f"ssehub-edge-{node_id}",
            on_lost=self._on_lost,
            max_delay=settings.reconnect_max_delay,
        )

    @property
    def ready(self) -> bool:
        return self.supervisor.ready.is_set()

    def signal(self, message: Publish) -> None:
        """Best effort: lost with the link, a signal is sent again by the next
        one (joins are re-sent, heartbeats repeat, caps notices are refreshed)."""
        if self._signals is not None:
            with contextlib.suppress(BrokerUnavailable):
                self._signals.publish([message])

    async def _channel(self, connection: AbstractConnection, *, confirms: bool) -> AbstractChannel:
        channel = await connection.channel(publisher_confirms=confirms)
        self.supervisor.watch(channel)
        self._channels.append(channel)
        return channel

    async def _setup(self, connection: AbstractConnection) -> None:
        if self._identity is not None:  # raises WrongStore: this edge's store is not
            await check_deployment(connection, self._identity)  # the deployment's
        self._channels = []
        consume = await self._channel(connection, confirms=False)
        await topology.declare_partitions(consume, self._partitions)
        await topology.check_declared(connection, self._partitions)  # raises NotDeclared
        spec = topology.edge_queue(self._node_id, self._routing.bindings())
        queue = await topology.declare_queue(consume, spec)
        signals = await self._channel(connection, confirms=False)
        self._signals = Outbox(await signals.get_underlay_channel())
        receipts = await self._channel(connection, confirms=True)
        self._receipts.attach(BatchPublisher(await receipts.get_underlay_channel()))
        watch = self.supervisor.watch
        await self._routing.attach(Attached(connection, queue.name, watch, self.supervisor.fail))
        # aiormq directly, without a task per message (ssehub.fastpath): aio-pika's
        # IncomingMessage and a task cost more than the rest of the path for a
        # message we only forward.
        raw = await consume.get_underlay_channel()
        await consume_inline(raw, queue.name, self._inbox, no_ack=True)
        self._on_up()

    async def _on_lost(self) -> None:
        self._on_down()
        self._receipts.attach(None)
        self._routing.detach()
        self._signals = None
        self._channels = []
