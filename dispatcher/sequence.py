"""Pure sequencing: each user's next numbers, and the SSE bytes that carry them."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any, NamedTuple

import orjson
from ssehub.dispatcher.expand import Fanout
from ssehub.schema import ControlMessage, control_doc
from ssehub.sse import render_body, render_event, with_id
from ssehub.topology import Notice


class Delivery(NamedTuple):
    """One delivery for one user: an event's SSE bytes (``seq`` None: ephemeral),
    or a notice's JSON. A NamedTuple: a 1,000-member fan-out makes 1,000 of them
    (a frozen dataclass cost five ``object.__setattr__`` calls each)."""

    user_id: str
    seq: int | None  # a numbered delivery is also the row stored for it
    # the SSE bytes of an event; with a CONTROL or CAPS notice, that notice's JSON
    body: bytes
    # What edges must do besides writing it (ssehub.topology.Notice): RECEIPT
    # (publish a receipt once written; ``key`` is its id), CONTROL or CAPS.
    notice: Notice | None = None
    key: str | None = None  # the event's idempotency key


def stored_rows(deliveries: Sequence[Delivery], now: float) -> list[tuple[Any, ...]]:
    """The numbered deliveries as ``ssehub_event`` rows: (user_id, seq, sse,
    key, created_at, receipt). Ephemeral events and control ops have no number
    and are not stored."""
    return [
        (d.user_id, d.seq, d.body.decode(), d.key, now, d.notice is Notice.RECEIPT)
        for d in deliveries
        if d.seq is not None
    ]


def control_delivery(op: ControlMessage) -> Delivery:
    """A control op for the edges holding the user's streams (the op's body, as
    publishers send it, with a revoke's ``before`` resolved)."""
    doc = control_doc(op.op, reason=op.reason, before=op.before)
    return Delivery(op.user, None, orjson.dumps(doc), Notice.CONTROL)


def assign(
    fanouts: Sequence[Fanout | ControlMessage], last_seq: MutableMapping[str, int]
) -> list[Delivery]:
    """Number every non-ephemeral (event, recipient) pair with the recipient's
    next sequence number, in batch order. ``last_seq`` is advanced in place;
    users missing from it start at 1. The numbered deliveries are what is
    stored (``stored_rows``): one tuple per recipient, not two."""
    deliveries: list[Delivery] = []
    for fanout in fanouts:
        if isinstance(fanout, ControlMessage):
            deliveries.append(control_delivery(fanout))
            continue
        msg = fanout.message
        if msg.ephemeral:
            sse = render_event(None, msg.event, msg.data)
            deliveries.extend(Delivery(user, None, sse) for user in fanout.recipients)
            continue
        notice, key = Notice.RECEIPT if msg.receipt else None, msg.key
        body = render_body(msg.event, msg.data)
        for user in fanout.recipients:
            seq = last_seq.get(user, 0) + 1
            last_seq[user] = seq
            deliveries.append(Delivery(user, seq, with_id(seq, body), notice, key))
    return deliveries
