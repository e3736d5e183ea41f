"""Sorting a consumed batch: contract messages, presence signals, dead letters.

Pure: takes the delivered AMQP messages and returns what the transaction gets
(in consumption order, a ``batch`` message's items in place) and what goes to
``sse.dead``, each with its reason. An invalid item of a ``batch`` is
dead-lettered alone with its own JSON as the body; the other items go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiormq.abc import DeliveredMessage
from ssehub import batch, topology
from ssehub.dispatcher.presence import PresenceOp, parse_presence
from ssehub.errors import InvalidMessage
from ssehub.schema import Message, parse_message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: DeliveredMessage  # where it came from: its properties go along
    reason: str
    body: bytes  # the whole body, or the one invalid item's JSON


@dataclass(slots=True)
class Intake:
    good: list[Message] = field(default_factory=list)
    presence: list[PresenceOp] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def sort_batch(
    messages: list[DeliveredMessage], max_bytes: int, max_batch_bytes: int, now: float
) -> Intake:
    out = Intake()
    for message in messages:
        routing_key = message.routing_key or ""
        message_id = message.header.properties.message_id
        try:
            if is_presence(message):
                out.presence.append(parse_presence(message.body))
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


def is_presence(message: DeliveredMessage) -> bool:
    """Edges' presence signals come straight to the dispatch queue, not via sse.events."""
    return message.routing_key == topology.DISPATCH.name and topology.PRESENCE_HEADER in (
        message.header.properties.headers or {}
    )
