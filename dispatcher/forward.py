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

The body is internal: a JSON array of one record per message,

    ["e", kind, target, event, data, key, exclude, ephemeral, receipt, targets]
    ["m", conversation, op, users, key]
    ["c", user, op, reason, before, key]

and each record is checked as strictly as a publisher's message all the same
(``decode``): only the hub's processes can write it, but what a bug or a
forgery would put there must not reach a store or a browser.

Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import aiormq
import orjson
from ssehub import topology, untrusted
from ssehub.errors import InvalidMessage
from ssehub.fastpath.marshal import Publish
from ssehub.partition import partition_of
from ssehub.schema import (
    MAX_ANY_KEY,
    ControlMessage,
    EventMessage,
    MembershipMessage,
    Message,
    check_before,
    check_event_name,
    check_id,
    check_key,
    check_reason,
    check_users,
)

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
    """The messages for ``parts``: persistent, into each partition's queue
    (through ``ssehub.internal``)."""
    out: list[Publish] = []
    for p in sorted(parts):
        queue = topology.dispatch_queue(p, partitions)
        chunk: list[Message] = []
        size = 0
        for message in parts[p]:
            weight = _weight(message)
            if chunk and size + weight > MAX_BODY:
                out.append(topology.internal(queue, encode(chunk), PROPERTIES))
                chunk, size = [], 0
            chunk.append(message)
            size += weight
        if chunk:
            out.append(topology.internal(queue, encode(chunk), PROPERTIES))
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
    """The messages of a forward. Raises InvalidMessage, naming the record at
    fault, for a body that is not what ``encode`` writes of valid messages."""
    records, _ = untrusted.parse(body, "forward", exact=False)  # (numbers are small)
    if not isinstance(records, list):
        raise InvalidMessage("forward: must be a JSON array of records")
    out: list[Message] = []
    for index, record in enumerate(records):
        try:
            out.append(_message(record))
        except InvalidMessage as exc:
            raise InvalidMessage(f"forward: record {index}: {exc}") from None
    return out


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


_FIELDS = {"e": 10, "m": 5, "c": 6}  # a record's length by its kind


def _message(r: Any) -> Message:
    """One record, checked by the rules of the message it stands for."""
    if not isinstance(r, list) or not r or not isinstance(r[0], str) or r[0] not in _FIELDS:
        raise InvalidMessage('must be an array starting with "e", "m" or "c"')
    if len(r) != _FIELDS[r[0]]:
        raise InvalidMessage(f'"{r[0]}" records have {_FIELDS[r[0]]} fields, got {len(r)}')
    if r[0] == "e":
        return _event(r)
    if r[0] == "m":
        _, conversation, op, users, key = r
        if op not in ("set", "add", "remove"):
            raise InvalidMessage('op: must be "set", "add" or "remove"')
        return MembershipMessage(
            check_id(conversation, "conversation"), op, check_users(users, "users"), _key(key)
        )
    _, user, op, reason, before, key = r
    if op == "disconnect" and before is None:
        return ControlMessage(check_id(user, "user"), op, check_reason(reason), None, _key(key))
    if op == "revoke" and reason is None:
        before = float(check_before(before))
        return ControlMessage(check_id(user, "user"), op, None, before, _key(key))
    raise InvalidMessage('op: must be "disconnect" with a reason or "revoke" with a before')


def _event(r: list[Any]) -> EventMessage:
    _, kind, target, event, data, key, exclude, ephemeral, receipt, targets = r
    if kind not in ("user", "conversation", "users"):
        raise InvalidMessage('kind: must be "user", "conversation" or "users"')
    if kind == "users":
        if target != "":
            raise InvalidMessage("target: a users event has none")
        users = check_users(targets, "targets")
        if not users:
            raise InvalidMessage("targets: must list at least one user")
    else:
        target = check_id(target, "target")
        if targets != []:
            raise InvalidMessage(f"targets: only users events have them, not {kind} events")
        users = ()
    ignored = () if exclude == [] else check_users(exclude, "exclude")
    if ignored and kind != "conversation":
        raise InvalidMessage("exclude: only conversation events take it")
    if not isinstance(data, str):
        raise InvalidMessage("data: must be a string of JSON")
    untrusted.check_text(data, "data")
    if type(ephemeral) is not bool or type(receipt) is not bool:
        raise InvalidMessage("ephemeral, receipt: must be true or false")
    if receipt and ephemeral:
        raise InvalidMessage("receipt: ephemeral events have no receipts")
    return EventMessage(
        kind,
        target,
        check_event_name(event),
        data.encode(),
        _key(key),
        frozenset(ignored),
        ephemeral,
        receipt,
        users,
    )


def _key(value: object) -> str | None:
    return None if value is None else check_key(value, "key", MAX_ANY_KEY)
