"""The ``batch`` routing key: several items in one AMQP message, applied in order.

Pure: ``parse_batch`` turns a body into one result per item, in order: the
item's message, or an :class:`ItemError` (dead-lettered alone, with its JSON as
the body and the reason prefixed ``item <index>: ``). A body that is not a JSON
array of 1-1,000 objects, or too large, raises InvalidMessage: the whole
message is dead-lettered. Item keys: the item's ``id``, else ``M:<index>`` for
a message with AMQP ``message_id`` M (a redelivered batch stays exactly-once),
else none. A lone surrogate inside one item (a string cut in the middle of an
emoji) refuses that item alone, like any other fault of an item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from ssehub import untrusted
from ssehub.errors import InvalidMessage
from ssehub.schema import (
    Message,
    check_id,
    message_key,
    parse_doc,
    parse_users_item,
)

ROUTING_KEY = "batch"
MAX_ITEMS = 1000
# An item's target field: the routing-key kind of the single message it stands for.
TARGETS = {
    "user": "user",
    "conversation": "conversation",
    "members": "members",
    "control": "control",
}
TARGET_FIELDS = frozenset([*TARGETS, "users"])


@dataclass(frozen=True, slots=True)
class ItemError:
    index: int
    reason: str  # "item <index>: ..."
    body: bytes  # the item's JSON


def parse_batch(
    body: bytes, message_id: str | None, max_bytes: int, now: float
) -> list[Message | ItemError]:
    if len(body) > max_bytes:
        raise InvalidMessage(f"body: {len(body)} bytes exceeds the batch limit of {max_bytes}")
    doc, exact, faults = untrusted.parse_items(body)
    if not isinstance(doc, list) or not all(isinstance(item, dict) for item in doc):
        raise InvalidMessage("body: a batch must be a JSON array of objects")
    if not 1 <= len(doc) <= MAX_ITEMS:
        raise InvalidMessage(f"body: a batch holds 1-{MAX_ITEMS} items, got {len(doc)}")
    base = message_key(message_id)
    out: list[Message | ItemError] = []
    for index, item in enumerate(doc):
        fallback = None if base is None else f"{base}:{index}"
        try:
            if index in faults:
                raise InvalidMessage(faults[index])
            out.append(_parse_item(dict(item), fallback, exact, now))
        except InvalidMessage as exc:
            out.append(ItemError(index, f"item {index}: {exc}", _dump(item)))
    return out


def _parse_item(item: dict[str, Any], fallback: str | None, exact: bool, now: float) -> Message:
    targets = sorted(TARGET_FIELDS & item.keys())
    if "members" in targets and "users" in targets:  # a membership item's member list
        targets.remove("users")
    if len(targets) != 1:
        found = ", ".join(targets) or "none"
        raise InvalidMessage(
            f"target: an item has exactly one of user, users, conversation, members, "
            f"control (found: {found})"
        )
    (field,) = targets
    if field == "users":
        return parse_users_item(item, fallback, exact)
    target = check_id(item.pop(field), field)
    return parse_doc(field, target, item, fallback, exact, now)


def _dump(item: Any) -> bytes:
    """A refused item's JSON, for its dead letter."""
    try:
        return orjson.dumps(item)
    except TypeError:  # beyond 64 bits, lone surrogates (written as the publisher did: escaped)
        return json.dumps(item, separators=(",", ":")).encode()
