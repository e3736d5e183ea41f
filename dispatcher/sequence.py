"""Pure sequencing: each user's next numbers, and the frames that carry them."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from dispatcher.expand import Fanout
from shared.frames import event_frame


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for ``sse.deliver``: routing key ``user_id``, body ``frame``."""

    user_id: str
    seq: int | None
    frame: bytes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    user_id: str
    seq: int
    frame: bytes
    key: str | None


def assign(
    fanouts: Sequence[Fanout], last_seq: MutableMapping[str, int]
) -> tuple[list[StoredEvent], list[Delivery]]:
    """Number every non-ephemeral (event, recipient) pair with the recipient's
    next sequence number, in batch order. ``last_seq`` is advanced in place;
    users missing from it start at 1."""
    stored: list[StoredEvent] = []
    deliveries: list[Delivery] = []
    for fanout in fanouts:
        msg = fanout.message
        if msg.ephemeral:
            frame = event_frame(None, msg.event, msg.data)
            deliveries.extend(Delivery(user, None, frame) for user in fanout.recipients)
            continue
        for user in fanout.recipients:
            seq = last_seq.get(user, 0) + 1
            last_seq[user] = seq
            frame = event_frame(seq, msg.event, msg.data)
            stored.append(StoredEvent(user, seq, frame, msg.key))
            deliveries.append(Delivery(user, seq, frame))
    return stored, deliveries
