"""Sorting a consumed batch: contract messages, presence signals, dead letters.

Pure: takes the delivered AMQP messages and returns what the transaction gets
(in consumption order, a ``batch`` message's items in place) and what goes to
``sse.dead``, each with its reason. An invalid item of a ``batch`` is
dead-lettered alone with its own JSON as the body; the other items go on.

Every message is isolated: whatever its bytes, headers or routing key, it
either sorts or becomes a dead letter; an exception nobody expected (a bug
met by this message) dead-letters it as ``internal_error: <type>`` and the
batch goes on.

What is internal (another stage's forward, an edge's signal, a probe) is
decided by the broker, not by the message: it arrived through the exchange
``ssehub.internal``, which publishers cannot write to. Anything else, whatever
its routing key and headers, is public input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
from aiormq.abc import DeliveredMessage
from pamqp.common import FieldTable
from ssehub import batch, topology
from ssehub.dispatcher import forward
from ssehub.dispatcher.presence import PresenceOp, parse_presence
from ssehub.dispatcher.routes import RouteOp, parse_caps_notice, parse_route
from ssehub.dispatcher.sequence import Delivery
from ssehub.errors import InvalidMessage
from ssehub.fastpath.receiver import UNDECODABLE
from ssehub.schema import (
    ControlMessage,
    MembershipMessage,
    Message,
    parse_message,
)

log = logging.getLogger("ssehub.dispatcher")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: DeliveredMessage  # where it came from: its properties go along
    reason: str
    body: bytes  # the whole body, or the one invalid item's JSON


@dataclass(slots=True)
class Intake:
    good: list[Message] = field(default_factory=list)
    # the delivered message each of ``good`` came from (same order): a message
    # the plan refuses, or that meets a bug, is dead-lettered with its properties
    origins: list[DeliveredMessage] = field(default_factory=list)
    presence: list[PresenceOp] = field(default_factory=list)
    routes: list[RouteOp] = field(default_factory=list)  # SSEHUB_DELIVERY=nodes
    notices: list[Delivery] = field(default_factory=list)  # edges' caps notices, to forward
    dead: list[DeadLetter] = field(default_factory=list)

    def origin_of(self, message: Message) -> DeliveredMessage | None:
        """The delivered message ``message`` (one of ``good``) came from."""
        for m, origin in zip(self.good, self.origins, strict=True):
            if m is message:
                return origin
        return None


def is_internal(message: DeliveredMessage) -> bool:
    """Published by an ssehub process: the broker says it came through
    ``ssehub.internal`` (a publisher's role cannot write there)."""
    delivery = message.delivery
    return getattr(delivery, "exchange", None) == topology.INTERNAL.name


def sort_batch(
    messages: list[DeliveredMessage], max_bytes: int, max_batch_bytes: int, now: float
) -> Intake:
    out = Intake()
    for message in messages:
        good = len(out.good)
        try:
            _sort_one(message, out, max_bytes, max_batch_bytes, now)
        except InvalidMessage as exc:
            del out.good[good:], out.origins[good:]  # a batch's earlier items too
            out.dead.append(DeadLetter(message, str(exc), message.body))
        except Exception as exc:  # a bug met by this message: it alone is set aside
            del out.good[good:], out.origins[good:]
            out.dead.append(internal_error(message, exc))
        else:
            out.origins.extend([message] * (len(out.good) - good))
    return out


def internal_error(
    message: DeliveredMessage, exc: BaseException, body: bytes | None = None
) -> DeadLetter:
    """A message that met a bug: logged at ERROR with its id, dead-lettered."""
    reason = f"internal_error: {type(exc).__name__}"
    log.error(
        "message %r met a bug (%s); dead-lettered",
        message.header.properties.message_id,
        reason,
        exc_info=exc,
        extra={"message_id": message.header.properties.message_id, "reason": reason},
    )
    return DeadLetter(message, reason, message.body if body is None else body)


def item_body(message: Message, origin: DeliveredMessage) -> bytes:
    """A dead letter's body for one message that came in ``origin``: the body
    as published when it was the message's own, else the message as the JSON
    of a ``batch`` item (what a publisher would resend)."""
    if not is_internal(origin) and origin.routing_key != batch.ROUTING_KEY:
        return origin.body
    doc: dict[str, object]
    if isinstance(message, MembershipMessage):
        doc = {"members": message.conversation, "op": message.op, "users": list(message.users)}
    elif isinstance(message, ControlMessage):
        doc = {"control": message.user, "op": message.op}
        if message.reason is not None:
            doc["reason"] = message.reason
        if message.before is not None:
            doc["before"] = message.before
    else:
        target: object = list(message.targets) if message.kind == "users" else message.target
        doc = {message.kind: target, "event": message.event, "data": orjson.Fragment(message.data)}
        if message.exclude:
            doc["exclude"] = sorted(message.exclude)
        if message.ephemeral:
            doc["ephemeral"] = True
        if message.receipt:
            doc["receipt"] = True
    if message.key is not None:
        doc["id"] = message.key
    return orjson.dumps(doc)


def _sort_one(
    message: DeliveredMessage, out: Intake, max_bytes: int, max_batch_bytes: int, now: float
) -> None:
    properties = message.header.properties
    if properties is UNDECODABLE:
        raise InvalidMessage("properties: not decodable (strings must be UTF-8)")
    if is_internal(message):
        _internal(message, out)
        return
    routing_key = message.routing_key or ""
    message_id = properties.message_id
    if routing_key == batch.ROUTING_KEY:
        for item in batch.parse_batch(message.body, message_id, max_batch_bytes, now):
            if isinstance(item, batch.ItemError):
                out.dead.append(DeadLetter(message, item.reason, item.body))
            else:
                out.good.append(item)
    else:
        out.good.append(parse_message(routing_key, message.body, message_id, max_bytes, now))


def _internal(message: DeliveredMessage, out: Intake) -> None:
    """What an ssehub process sent to a dispatch queue: another stage's forward
    (partitions, dispatcher/forward.py), and edges' signals: presence, route
    rounds, and (per-node delivery) caps notices to forward to the user's edges.
    Validated as strictly as public input all the same."""
    headers = message.header.properties.headers or {}
    if topology.FORWARD_HEADER in headers:
        out.good.extend(forward.decode(message.body))
    elif topology.PRESENCE_HEADER in headers:
        out.presence.append(parse_presence(message.body))
    elif topology.ROUTE_HEADER in headers:
        out.routes.append(parse_route(message.body))
    elif _notice(headers) is topology.Notice.CAPS:
        user = parse_caps_notice(message.body)
        out.notices.append(Delivery(user, None, message.body, topology.Notice.CAPS))
    else:
        raise InvalidMessage("unknown message in the dispatch queue")


def _notice(headers: FieldTable) -> topology.Notice | None:
    try:
        return topology.notice_of(headers)
    except topology.UnknownNotice as exc:
        raise InvalidMessage(f"unknown notice {exc}") from None
