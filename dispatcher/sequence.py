"""Pure sequencing: each user's next numbers, and the SSE bytes that carry them."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from ssehub.dispatcher.expand import Fanout
from ssehub.sse import render_event


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one user: ``sse``, its SSE bytes (``seq`` None: ephemeral)."""

    user_id: str
    seq: int | None
    sse: bytes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    user_id: str
    seq: int
    sse: bytes
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
            sse = render_event(None, msg.event, msg.data)
            deliveries.extend(Delivery(user, None, sse) for user in fanout.recipients)
            continue
        for user in fanout.recipients:
            seq = last_seq.get(user, 0) + 1
            last_seq[user] = seq
            sse = render_event(seq, msg.event, msg.data)
            stored.append(StoredEvent(user, seq, sse, msg.key))
            deliveries.append(Delivery(user, seq, sse))
    return stored, deliveries
