"""Messages handed on to the partition that owns them (``SSEHUB_PARTITIONS`` > 1).

Every user and every conversation belongs to one partition (ssehub.partition:
a user's events and control ops to the user's, a conversation's events and
membership changes to the conversation's). Two stages hand messages on:

- the *front* splits what publishers send to the intake queue, in order, into
  one message per partition (dispatcher/front.py);
- a partition that expands a conversation event hands the event for members
  owned by other partitions on to them, as ``users`` messages (stage C,
  dispatcher/worker.py), one message per partition per batch.

Within a message the order is kept, and one channel publishes them all, so a
partition receives each user's and each conversation's messages in publish
order. Keys go along unchanged (each partition dedupes its own keys: a
re-forwarded message is deduped like a publisher's retry); a ``users``
message split between partitions keeps its key in each.

The body is internal and trusted (it was validated once, by the stage that
sent it): a JSON array of one record per message:

    ["e", kind, target, event, data, key, exclude, ephemeral, receipt, targets]
    ["m", conversation, op, users, key]
    ["c", user, op, reason, before, key]

Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import aiormq
import orjson
from ssehub import topology
from ssehub.errors import InvalidMessage
from ssehub.fastpath.marshal import Publish
from ssehub.partition import partition_of
from ssehub.schema import ControlMessage, EventMessage, MembershipMessage, Message

# publishes a batch's forwards, and returns once the broker confirmed them
Send = Callable[[dict[int, list[Message]]], Coroutine[Any, Any, None]]
PROPERTIES = aiormq.spec.Basic.Properties(headers={topology.FORWARD_HEADER: 1}, delivery_mode=2)
MAX_BODY = 1 << 20  # a forward's body, roughly: larger parts go as several, in order


def owner(message: Message, partitions: int) -> int | None:
    """The partition that works on ``message``; None for a ``users`` event,
    whose users may belong to several (``split``)."""
    if isinstance(message, ControlMessage):
        return partition_of(message.user, partitions)
    if isinstance(message, MembershipMessage):
        return partition_of(message.conversation, partitions)
    if message.kind == "users":
        return None
    return partition_of(message.target, partitions)


def split(messages: Sequence[Message], partitions: int) -> dict[int, list[Message]]:
    """``messages`` by owning partition, each partition's in their order."""
    out: dict[int, list[Message]] = {}
    for message in messages:
        p = owner(message, partitions)
        if p is not None:
            out.setdefault(p, []).append(message)
            continue
        assert isinstance(message, EventMessage)
        for p, users in by_partition(message.targets, partitions).items():
            out.setdefault(p, []).append(replace(message, targets=tuple(users)))
    return out


def by_partition(users: Sequence[str], partitions: int) -> dict[int, list[str]]:
    """``users`` grouped by partition, in their order."""
    out: dict[int, list[str]] = {}
    for user in users:
        out.setdefault(partition_of(user, partitions), []).append(user)
    return out


def publishes(parts: dict[int, list[Message]], partitions: int) -> list[Publish]:
    """The messages for ``parts``: persistent, into each partition's queue."""
    out: list[Publish] = []
    for p in sorted(parts):
        queue = topology.dispatch_queue(p, partitions)
        chunk: list[Message] = []
        size = 0
        for message in parts[p]:
            weight = _weight(message)
            if chunk and size + weight > MAX_BODY:
                out.append(Publish("", queue, encode(chunk), PROPERTIES))
                chunk, size = [], 0
            chunk.append(message)
            size += weight
        if chunk:
            out.append(Publish("", queue, encode(chunk), PROPERTIES))
    return out


def _weight(message: Message) -> int:
    if isinstance(message, EventMessage):
        return len(message.data) + 64 + sum(len(u) + 3 for u in message.targets)
    if isinstance(message, MembershipMessage):
        return 64 + sum(len(u) + 3 for u in message.users)
    return 128


def encode(messages: Sequence[Message]) -> bytes:
    return orjson.dumps([_record(m) for m in messages])


def decode(body: bytes) -> list[Message]:
    """Raises InvalidMessage for a body no stage of ours wrote."""
    try:
        return [_message(r) for r in orjson.loads(body)]
    except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidMessage(f"forward: malformed ({exc})") from None


def _record(m: Message) -> list[Any]:
    if isinstance(m, EventMessage):
        return [
            "e",
            m.kind,
            m.target,
            m.event,
            m.data.decode(),
            m.key,
            sorted(m.exclude),
            m.ephemeral,
            m.receipt,
            list(m.targets),
        ]
    if isinstance(m, MembershipMessage):
        return ["m", m.conversation, m.op, list(m.users), m.key]
    return ["c", m.user, m.op, m.reason, m.before, m.key]


def _message(r: list[Any]) -> Message:
    tag = r[0]
    if tag == "e":
        _, kind, target, event, data, key, exclude, ephemeral, receipt, targets = r
        return EventMessage(
            kind,
            target,
            event,
            data.encode(),
            key,
            frozenset(exclude),
            bool(ephemeral),
            bool(receipt),
            tuple(targets),
        )
    if tag == "m":
        _, conversation, op, users, key = r
        return MembershipMessage(conversation, op, tuple(users), key)
    if tag == "c":
        _, user, op, reason, before, key = r
        return ControlMessage(user, op, reason, before, key)
    raise ValueError(f"record kind {tag!r}")
