"""Sorting a consumed batch: contract messages, presence signals, dead letters.

Pure: takes the delivered AMQP messages and returns what the transaction gets
(in consumption order, a ``batch`` message's items in place) and what goes to
``sse.dead``, each with its reason. An invalid item of a ``batch`` is
dead-lettered alone with its own JSON as the body; the other items go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from aiormq.abc import DeliveredMessage
from pamqp.common import FieldTable
from ssehub import batch, topology
from ssehub.dispatcher import forward
from ssehub.dispatcher.presence import PresenceOp, parse_presence
from ssehub.dispatcher.routes import RouteOp, parse_route
from ssehub.dispatcher.sequence import Delivery
from ssehub.errors import InvalidMessage
from ssehub.schema import Message, check_id, parse_message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: DeliveredMessage  # where it came from: its properties go along
    reason: str
    body: bytes  # the whole body, or the one invalid item's JSON


@dataclass(slots=True)
class Intake:
    good: list[Message] = field(default_factory=list)
    presence: list[PresenceOp] = field(default_factory=list)
    routes: list[RouteOp] = field(default_factory=list)  # SSEHUB_DELIVERY=nodes
    notices: list[Delivery] = field(default_factory=list)  # edges' caps notices, to forward
    dead: list[DeadLetter] = field(default_factory=list)


def sort_batch(
    messages: list[DeliveredMessage], max_bytes: int, max_batch_bytes: int, now: float
) -> Intake:
    out = Intake()
    for message in messages:
        routing_key = message.routing_key or ""
        message_id = message.header.properties.message_id
        try:
            if routing_key.startswith(topology.DISPATCH.name):  # ours, not via sse.events
                _internal(message, out)
            elif routing_key == batch.ROUTING_KEY:
                for item in batch.parse_batch(message.body, message_id, max_batch_bytes, now):
                    if isinstance(item, batch.ItemError):
                        out.dead.append(DeadLetter(message, item.reason, item.body))
                    else:
                        out.good.append(item)
            else:
                out.good.append(
                    parse_message(routing_key, message.body, message_id, max_bytes, now)
                )
        except InvalidMessage as exc:
            out.dead.append(DeadLetter(message, str(exc), message.body))
    return out


def _internal(message: DeliveredMessage, out: Intake) -> None:
    """What comes straight to a dispatch queue: another stage's forward
    (partitions, dispatcher/forward.py), and edges' signals: presence, route
    rounds, and (per-node delivery) caps notices to forward to the user's edges."""
    headers = message.header.properties.headers or {}
    if topology.FORWARD_HEADER in headers:
        out.good.extend(forward.decode(message.body))
    elif topology.PRESENCE_HEADER in headers:
        out.presence.append(parse_presence(message.body))
    elif topology.ROUTE_HEADER in headers:
        out.routes.append(parse_route(message.body))
    elif _notice(headers) is topology.Notice.CAPS:
        try:
            user = check_id(orjson.loads(message.body)["user"], "user")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidMessage(f"caps notice: malformed ({exc})") from None
        out.notices.append(Delivery(user, None, message.body, topology.Notice.CAPS))
    else:
        raise InvalidMessage("unknown message in the dispatch queue")


def _notice(headers: FieldTable) -> topology.Notice | None:
    try:
        return topology.notice_of(headers)
    except topology.UnknownNotice as exc:
        raise InvalidMessage(f"unknown notice {exc}") from None
