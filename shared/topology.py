"""The AMQP topology as data, declared from this one place.

Contract names (``sse.events``, ``sse.deliver``, ``sse.dead``) are fixed by
the contract (docs/contract.md); the dispatcher's work queue and the edges' node queues are ours.

Dispatchers declare the shared topology (exchanges, their queues, the markers);
edges declare only their own queue and the two markers, and check the rest
passively; publishers declare nothing (their broker user may only write to
``sse.events``: ssehub.roles). Internal traffic (edges' signals, stages'
forwards, probes, dead letters) goes through ``ssehub.internal``, which
publishers cannot write to, with the target queue's name as routing key:
the broker's word on which exchange a delivery came through is what tells a
dispatcher it is internal, never its routing key or headers.

The durable queues are classic or quorum (``SSEHUB_QUEUE_TYPE``): ssehub asks
for nothing quorum queues lack (priorities, global QoS, transient or exclusive
durable queues). The edges' node queues are exclusive, so always classic.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    ExchangeType,
)
from pamqp.common import FieldTable
from ssehub.bounds import BOUNDS, existing_bounds
from ssehub.config import QueueType
from ssehub.errors import BrokerUnavailable, ConfigError, SsehubError
from ssehub.fastpath.marshal import Publish

ERROR_HEADER = "x-ssehub-error"  # on sse.dead messages: why it was rejected
PRESENCE_HEADER = "x-ssehub-presence"  # edge → dispatcher presence signals
PROBE_HEADER = "x-ssehub-probe"  # dispatcher → the active dispatcher (dispatcher/activity.py)
SENT_AT_HEADER = "x-ssehub-sent-at"  # one delivery per batch: publish time, µs since epoch
ROUTE_HEADER = "x-ssehub-route"  # edge → dispatcher: joins and leaves (dispatcher/routes.py)
USER_HEADER = "x-ssehub-user"  # on a notice sent to a node: the user it is for


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: ExchangeType
    durable: bool = True


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool = True
    exclusive: bool = False
    arguments: dict[str, object] = field(default_factory=dict)
    bindings: tuple[tuple[ExchangeSpec, str], ...] = ()


EVENTS = ExchangeSpec("sse.events", ExchangeType.TOPIC)
DELIVER = ExchangeSpec("sse.deliver", ExchangeType.DIRECT)
# Edges publish a receipt here (routing key receipt.<userId>) when an event that
# asked for one is first written to one of the user's streams.
RECEIPTS = ExchangeSpec("sse.receipts", ExchangeType.TOPIC)
# Internal traffic, to a dispatch queue or sse.dead by its name (direct): only
# the dispatcher's and the edges' users may write to it (ssehub.roles).
INTERNAL = ExchangeSpec("ssehub.internal", ExchangeType.DIRECT)

# Bound with "#" on sse.events so that unknown routing keys reach the dispatcher
# too and are dead-lettered with a reason instead of vanishing unrouted; and on
# ssehub.internal by its own name.
DISPATCH = QueueSpec(
    "ssehub.dispatch",
    arguments={"x-single-active-consumer": True},
    bindings=((EVENTS, "#"), (INTERNAL, "ssehub.dispatch")),
)
DEAD = QueueSpec("sse.dead", bindings=((INTERNAL, "sse.dead"),))
# sse.dead keeps at most this many messages (SSEHUB_DEAD_LETTER_MAX), the
# oldest dropped first: a flood of bad messages cannot fill the broker's disk.
DEAD_LETTER_MAX = 100_000

# SSEHUB_PARTITIONS > 1 (docs/architecture.md, "Partitions"): ssehub.dispatch is
# the intake, split by the front stage into one queue per partition; each is
# worked on by one dispatcher process at a time (single active consumer). With
# one partition the intake is partition 0's queue: the layout of before.
FORWARD_HEADER = "x-ssehub-forward"  # a stage → a partition: messages (dispatcher/forward.py)
# The deployment's partition count, held by the broker as a queue argument it
# checks on every declare (x-max-length of an empty marker queue): a process
# configured with another count is refused with both values in the broker's words.
PARTITIONS_MARKER = "ssehub.partitions"
# The deployment's id, held the same way (ssehub.storage.identity).
DEPLOYMENT_MARKER = "ssehub.deployment"


def dispatch_queue(partition: int, partitions: int) -> str:
    """The queue of ``partition`` (of ``partitions``): edges' joins and
    presence go there, and the front's forwards."""
    return DISPATCH.name if partitions == 1 else f"{DISPATCH.name}.{partition}"


def partition_queues(partitions: int, queue_type: QueueType = "classic") -> tuple[QueueSpec, ...]:
    """One durable single-active-consumer queue per partition (none when the
    intake is the only partition), not bound: the front publishes to them."""
    if partitions == 1:
        return ()
    specs = (
        QueueSpec(
            name,
            arguments={"x-single-active-consumer": True},
            bindings=((INTERNAL, name),),
        )
        for name in (dispatch_queue(p, partitions) for p in range(partitions))
    )
    return tuple(_typed(spec, queue_type) for spec in specs)


def _typed(spec: QueueSpec, queue_type: QueueType) -> QueueSpec:
    if queue_type == "classic":  # no x-queue-type: declared exactly as before the setting
        return spec
    return replace(spec, arguments={**spec.arguments, "x-queue-type": queue_type})


_COUNT = re.compile(r"received (?:the value )?'?(\d+|none)'?.* current is (?:the value )?'?(\d+)'?")


async def declare_partitions(channel: AbstractChannel, partitions: int) -> None:
    """The deployment's partition count: set by the first process, checked by
    every later one. Raises ConfigError naming both counts when they differ."""
    try:
        await channel.declare_queue(
            PARTITIONS_MARKER,
            durable=True,
            arguments={
                "x-max-length": partitions,
                "x-overflow": "reject-publish",
                "x-queue-type": "classic",
            },
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        found = _COUNT.search(str(exc))
        if found is None or "x-max-length" not in str(exc):
            raise
        raise ConfigError(
            f"SSEHUB_PARTITIONS={partitions} but this deployment has {found.group(2)} "
            f"partitions (the queue {PARTITIONS_MARKER!r} says so): set "
            f"SSEHUB_PARTITIONS={found.group(2)} in every process, or change the count "
            "as k8s/README.md says"
        ) from None


# SSEHUB_DELIVERY=nodes: each edge queue is bound here twice, by its node id
# and by ALL_NODES; the dispatcher sends each edge one message per batch.
NODES = ExchangeSpec("ssehub.nodes", ExchangeType.DIRECT)
ALL_NODES = "all"  # node ids are host.pid.hex: never this

EXCHANGES = (EVENTS, DELIVER, RECEIPTS, NODES, INTERNAL)


def dead_queue(max_length: int = DEAD_LETTER_MAX) -> QueueSpec:
    """``sse.dead``, bounded: past ``max_length`` messages the oldest is dropped."""
    bound = {"x-max-length": max_length, "x-overflow": "drop-head"}
    return replace(DEAD, arguments={**DEAD.arguments, **bound})


def dispatcher_queues(
    queue_type: QueueType = "classic", dead_letter_max: int = DEAD_LETTER_MAX
) -> tuple[QueueSpec, ...]:
    """The dispatch queue and ``sse.dead`` as ``queue_type`` queues. Classic ones
    carry no ``x-queue-type``: declared exactly as before the setting existed."""
    return tuple(_typed(spec, queue_type) for spec in (DISPATCH, dead_queue(dead_letter_max)))


def node_bindings(node_id: str) -> tuple[tuple[ExchangeSpec, str], ...]:
    """Per-node delivery: a node queue is bound by its node id and by ALL_NODES."""
    return ((NODES, node_id), (NODES, ALL_NODES))


def edge_queue(node_id: str, bindings: tuple[tuple[ExchangeSpec, str], ...] = ()) -> QueueSpec:
    """One queue per edge process. Exclusive: RabbitMQ deletes it, with all its
    bindings, the moment the process's connection goes away, so a killed edge
    leaves no orphan behind. Classic whatever the vhost's default queue type:
    quorum queues cannot be exclusive. ``bindings``: the delivery design's
    (edge/routing.py); per-user bindings are added while the edge runs."""
    return QueueSpec(
        f"ssehub.edge.{node_id}",
        durable=False,
        exclusive=True,
        arguments={"x-queue-type": "classic"},
        bindings=bindings,
    )


async def declare_exchanges(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    return {
        spec.name: await channel.declare_exchange(spec.name, spec.type, durable=spec.durable)
        for spec in EXCHANGES
    }


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """Declare ``spec`` and its bindings. A queue declared before with other
    bounds (``BOUNDS``: an older version, another setting) is kept as it is, with
    one warning saying how to bound it; another type is a ConfigError."""
    arguments = dict(spec.arguments)
    if BOUNDS.keys() & arguments.keys():  # may be refused: tried on a channel of its own
        connection = (await channel.get_underlay_channel()).connection
        arguments = await existing_bounds(connection, spec.name, spec.durable, arguments)
    try:
        queue = await channel.declare_queue(
            spec.name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            arguments=arguments or None,  # type: ignore[arg-type]
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        if "x-queue-type" not in str(exc):
            raise
        raise type_mismatch(spec, str(exc)) from None
    for exchange, routing_key in spec.bindings:
        await queue.bind(exchange.name, routing_key)
    return queue


_CURRENT = re.compile(r"current is (?:the value )?'(\w+)'")  # RabbitMQ's own words


def type_mismatch(spec: QueueSpec, broker_said: str) -> ConfigError:
    """PRECONDITION_FAILED on ``x-queue-type``, in words: what the queue is, what
    was asked for, and the way out."""
    wanted = spec.arguments.get("x-queue-type", "classic")
    found = _CURRENT.search(broker_said)
    current = found.group(1) if found else "classic"  # "current is none": no argument
    return ConfigError(
        f"queue {spec.name!r} is a {current} queue but SSEHUB_QUEUE_TYPE={wanted}; a "
        f"queue's type cannot change: set SSEHUB_QUEUE_TYPE={current} in every process, "
        f"or drain and delete the queue so that it is declared again as {wanted}"
    )


async def declare_core(
    channel: AbstractChannel,
    queue_type: QueueType = "classic",
    dead_letter_max: int = DEAD_LETTER_MAX,
) -> dict[str, AbstractExchange]:
    """The exchanges and the dispatcher's queues, bound: the dispatcher declares
    them (publishers declare nothing, edges check them: ``check_declared``)."""
    exchanges = await declare_exchanges(channel)
    for spec in dispatcher_queues(queue_type, dead_letter_max):
        await declare_queue(channel, spec)
    return exchanges


async def declare_deployment(
    channel: AbstractChannel,
    queue_type: QueueType,
    partitions: int,
    dead_letter_max: int = DEAD_LETTER_MAX,
) -> dict[str, AbstractExchange]:
    """What a dispatcher declares: the core, the partition count checked, and the
    partition queues (edges publish joins into them)."""
    exchanges = await declare_core(channel, queue_type, dead_letter_max)
    await declare_partitions(channel, partitions)
    for spec in partition_queues(partitions, queue_type):
        await declare_queue(channel, spec)
    return exchanges


class NotDeclared(BrokerUnavailable):
    """The shared topology is not there yet: no dispatcher has declared it."""

    waiting = True  # on another process, not broker trouble (shared/amqp.py)


async def check_declared(connection: AbstractConnection, partitions: int) -> None:
    """Passive checks (no permission needed) that a dispatcher declared what an
    edge uses: the exchanges and the dispatch queues. Raises NotDeclared naming
    the first one missing (the supervisor retries)."""
    channel = await connection.channel()
    try:
        for exchange in EXCHANGES:
            what = f"the exchange {exchange.name!r}"
            await channel.declare_exchange(exchange.name, passive=True)
        for p in range(partitions):
            what = f"the queue {dispatch_queue(p, partitions)!r}"
            await channel.declare_queue(dispatch_queue(p, partitions), passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise NotDeclared(
            f"waiting for a dispatcher to declare {what} (edges declare no shared "
            "exchange or queue)"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


def internal(queue: str, body: bytes, properties: aiormq.spec.Basic.Properties) -> Publish:
    """A message of ours to ``queue`` (a dispatch queue, ``sse.dead``), through
    ``ssehub.internal``: never the default exchange, which says nothing of who sent it."""
    return Publish(INTERNAL.name, queue, body, properties)


def presence_message(
    node_id: str, user_id: str | None, online: bool, queue: str = DISPATCH.name
) -> Publish:
    """Edge → dispatcher, into a dispatch ``queue`` (through ``ssehub.internal``),
    so it is ordered with the events: a user online on a node, offline, or (no
    user) a heartbeat of the node (to every partition's queue)."""
    body = (
        {"node": node_id}
        if user_id is None
        else {"node": node_id, "user": user_id, "online": online}
    )
    return internal(queue, orjson.dumps(body), PRESENCE_PROPERTIES)


PRESENCE_PROPERTIES = aiormq.spec.Basic.Properties(headers={PRESENCE_HEADER: 1})
ROUTE_PROPERTIES = aiormq.spec.Basic.Properties(headers={ROUTE_HEADER: 1})


def route_message(
    node_id: str, ref: int, ops: list[tuple[str, bool]], queue: str = DISPATCH.name
) -> Publish:
    """Edge → dispatcher, into the dispatch ``queue``: a round of joins (True)
    and leaves, in order; the dispatcher answers ``joined`` with ``ref``."""
    body = {"node": node_id, "ref": ref, "ops": [[user, 1 if join else 0] for user, join in ops]}
    return internal(queue, orjson.dumps(body), ROUTE_PROPERTIES)


# sse.deliver messages: body = the event's SSE bytes, ready to write as is (its ``id:`` line
# is the recipient's sequence number); no property at all, so not persistent
# (the store holds the durable copy) and cheap to decode (ssehub.fastpath.receiver).
# Shared, immutable: built once.
DELIVERY_PROPERTIES = aiormq.spec.Basic.Properties()

NOTICE_HEADER = "x-ssehub-notice"  # a delivery that asks more of an edge: its Notice
NOTICE_KEY = "x-ssehub-key"  # on a receipt notice: the event's idempotency key


class Notice(StrEnum):
    """What an edge must do with a delivery besides writing it (``NOTICE_HEADER``)."""

    RECEIPT = "receipt"  # an event: report a receipt once written (``NOTICE_KEY``: its key)
    CONTROL = "control"  # the body is a control op's JSON, for the user's streams
    CAPS = "caps"  # an edge's streams of the user, for the stream cap (edge/caps.py)
    # dispatcher → one node (per-node delivery): a round of joins applied (body
    # {"ref", "shared"}); and "join every user again, then re-read every stream"
    # (the dispatcher's table is new)
    JOINED = "joined"
    RESYNC = "resync"


def notice_properties(
    notice: Notice, key: str | None = None, user: str | None = None
) -> aiormq.spec.Basic.Properties:
    """The properties of a notice; ``user`` when the routing key is a node's, not
    the user's."""
    headers: FieldTable = {NOTICE_HEADER: notice.value}
    if key is not None:
        headers[NOTICE_KEY] = key
    if user is not None:
        headers[USER_HEADER] = user
    return aiormq.spec.Basic.Properties(headers=headers)


def notice_of(headers: FieldTable) -> Notice | None:
    """The notice a delivery's headers name, None for none. Raises UnknownNotice
    for one this version does not know (a newer peer's): never written to a
    client as if it were an event."""
    value = headers.get(NOTICE_HEADER)
    if value is None:
        return None
    try:
        return Notice(value.decode() if isinstance(value, bytes) else str(value))
    except ValueError:
        raise UnknownNotice(value) from None


class UnknownNotice(SsehubError):
    """A delivery names a notice this version does not know."""


CAPS_PROPERTIES = notice_properties(Notice.CAPS)  # shared, immutable: built once
