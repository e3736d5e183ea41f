"""How live events for a user come to reach this edge: one ``Routing`` per
delivery design (``SSEHUB_DELIVERY``, docs/architecture.md "Delivery to edges"),
chosen once, by ``routing_for``. Nothing else in the edge asks which design runs.

- ``JoinRouting`` (``nodes``, and ``both``): the edge *joins* a user at the
  dispatcher that owns the user's partition (edge/joins.py); the dispatcher
  routes the user's events to this node's queue and answers the join after
  every delivery routed without it.
- ``BindingRouting`` (``bindings``, the customer's first design): the edge
  binds the user's id on ``sse.deliver`` to its node queue (edge/binder.py);
  the broker's bind-ok is the answer.

Both are used by the seam (edge/seam.py) in the same way; both also carry the
stream-cap notices between edges (edge/caps.py), which travel with the routes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from aio_pika.abc import AbstractChannel, AbstractConnection
from ssehub import topology
from ssehub.config import Settings
from ssehub.edge.binder import Binder
from ssehub.edge.joins import Joiner, parse_joined
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.marshal import Publish
from ssehub.topology import ExchangeSpec

Bindings = tuple[tuple[ExchangeSpec, str], ...]
Signal = Callable[[Publish], None]  # best effort, into the broker (edge/link.py)
Queue = Callable[[str], str]  # a user's dispatch queue

# Per-node delivery: how long a new stream waits for its user's join to be
# answered before it goes on without (and re-reads the store once it is).
JOIN_WAIT = 2.0
BIND_CHANNELS = 8  # bind rounds run on a few channels at once


class Attached:
    """What a routing gets of a new broker link (edge/link.py)."""

    def __init__(
        self,
        connection: AbstractConnection,
        queue: str,
        watch: Callable[[AbstractChannel], None],
        fail: Callable[[], None],
    ) -> None:
        self.connection = connection
        self.queue = queue  # the node queue's name
        self.watch = watch  # a channel whose close is the link's loss
        self.fail = fail  # ask for a new link


class JoinRouting:
    shared_when_routed = False  # caps: the edges already heard from are known

    def __init__(
        self, node_id: str, signal: Signal, partition: Callable[[str], int], partitions: int
    ) -> None:
        self._node_id = node_id
        self._signal = signal
        self._partition = partition
        self._partitions = partitions
        self._joiners: list[Joiner] = []
        self._refs = itertools.count(1)  # across links (edge/joins.py)

    def bindings(self) -> Bindings:
        return topology.node_bindings(self._node_id)

    async def attach(self, link: Attached) -> None:
        self._joiners = [
            Joiner(self._node_id, self._signal, self._refs, self._queue(p))
            for p in range(self._partitions)
        ]

    def _queue(self, partition: int) -> str:
        return topology.dispatch_queue(partition, self._partitions)

    def detach(self) -> None:
        """The link went down: no answer will come to a round in flight."""
        joiners, self._joiners = self._joiners, []
        for joiner in joiners:
            joiner.fail(BrokerUnavailable("lost the connection to RabbitMQ"))

    def budget(self, user_id: str, now: float) -> float | None:
        """Once a round has waited ``JOIN_WAIT``, its dispatcher is away: new
        streams of its partition do not wait at all."""
        if not self._joiners:
            return 0.0
        return max(0.0, JOIN_WAIT - self._joiners[self._partition(user_id)].waited(now))

    async def apply(self, user_id: str, join: bool) -> bool:
        if not self._joiners:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return await self._joiners[self._partition(user_id)].apply(user_id, join)

    def broken(self) -> None:
        """Nothing to do: a joiner fails only with its link."""

    def answered(self, body: bytes) -> None:
        """A ``joined`` notice; round numbers are unique across partitions."""
        answer = parse_joined(body)
        if answer is not None:
            for joiner in self._joiners:
                if joiner.resolve(*answer):
                    return

    def caps(self, user_id: str, body: bytes) -> None:
        """Through the user's dispatcher, which forwards it to the user's edges."""
        queue = self._queue(self._partition(user_id))
        self._signal(topology.internal(queue, body, topology.CAPS_PROPERTIES))


class BindingRouting:
    shared_when_routed = True  # bindings cannot tell: always say hello

    def __init__(self, node_id: str, signal: Signal, presence: bool, queue: Queue) -> None:
        """``queue``: the dispatch queue of a user's partition (presence)."""
        self._node_id = node_id
        self._signal = signal
        self._presence = presence
        self._queue = queue
        self._binders: list[Binder] = []
        self._turn = 0
        self._fail: Callable[[], None] = _nothing
        # aio-pika wrappers of the bind channels, held as long as the link: a
        # collected wrapper marks its channel closed (the link's loss)
        self._channels: list[AbstractChannel] = []

    def bindings(self) -> Bindings:
        return ()  # one per user with a stream, while the edge runs

    async def attach(self, link: Attached) -> None:
        self._fail = link.fail
        channels, binders = [], []
        for _ in range(BIND_CHANNELS):
            channel = await link.connection.channel(publisher_confirms=False)
            link.watch(channel)
            channels.append(channel)
            binders.append(Binder(await channel.get_underlay_channel(), link.queue))
        self._channels, self._binders = channels, binders

    def detach(self) -> None:
        self._channels, self._binders, self._fail = [], [], _nothing

    def budget(self, user_id: str, now: float) -> float | None:
        return None  # a bind is answered by the broker itself

    async def apply(self, user_id: str, join: bool) -> bool:
        if not self._binders:
            raise BrokerUnavailable("not connected to RabbitMQ")
        self._turn = (self._turn + 1) % len(self._binders)
        await self._binders[self._turn].apply(user_id, join)
        if self._presence:  # with joins, the join itself is the signal
            message = topology.presence_message(self._node_id, user_id, join, self._queue(user_id))
            self._signal(message)
        return True

    def broken(self) -> None:
        self._fail()  # a failed bind closed its channel: start a new link

    def answered(self, body: bytes) -> None:
        """No dispatcher answers binds."""

    def caps(self, user_id: str, body: bytes) -> None:
        """Straight to the edges bound for the user."""
        self._signal(Publish(topology.DELIVER.name, user_id, body, topology.CAPS_PROPERTIES))


Routing = JoinRouting | BindingRouting


def routing_for(
    settings: Settings, node_id: str, signal: Signal, partition: Callable[[str], int]
) -> Routing:
    """The one place the edge decides its delivery design (``both``: joins,
    for dispatchers that route both ways while a fleet moves)."""
    if settings.delivery == "bindings":
        n = settings.partitions
        queue = lambda user: topology.dispatch_queue(partition(user), n)  # noqa: E731
        return BindingRouting(node_id, signal, settings.presence, queue)
    return JoinRouting(node_id, signal, partition, settings.partitions)


def _nothing() -> None:
    pass
