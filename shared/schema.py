"""The contract's AMQP messages: parsing and validation, pure functions.

``parse_message`` turns a routing key and a body into a typed message or
raises :class:`InvalidMessage` with a reason a publisher can act on. Bodies
are parsed by ssehub.untrusted (the one parser of untrusted JSON). The
publisher client builds its bodies with the same rules, so a bad call fails
in the caller's process instead of in ``sse.dead``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from ssehub import untrusted
from ssehub.errors import InvalidMessage

EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ASCII_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII without space: the common id
# What no key may hold: the store cannot keep NUL, UTF-8 cannot carry a lone
# surrogate, and control characters are never meant.
_NOT_IN_KEY = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_ID_BYTES = 128
# A message_id longer than this is no key (at-least-once): with a batch item's
# ":<index>" and a partition's prefix a key must fit the store's 255.
MAX_KEY_CHARS = 240
MAX_ANY_KEY = MAX_KEY_CHARS + len(":999")  # the longest key a message can have
EVENT_FIELDS = frozenset({"event", "data", "id", "exclude", "ephemeral", "receipt"})
MEMBER_FIELDS = frozenset({"op", "users"})
CONTROL_FIELDS = frozenset({"op", "reason", "before"})
MAX_USERS = 1000  # users of one ``users`` batch item
MAX_BEFORE_AHEAD = 24 * 3600.0  # a revoke's ``before`` may be at most this far in the future
MemberOp = Literal["set", "add", "remove"]
ControlOp = Literal["disconnect", "revoke"]
EventKind = Literal["user", "users", "conversation"]


@dataclass(frozen=True, slots=True)
class EventMessage:
    """``user.<id>``, ``conversation.<id>`` or a ``users`` batch item: one event
    to fan out. ``targets``: the listed users of a ``users`` item."""

    kind: EventKind
    target: str
    event: str
    data: bytes  # compact one-line JSON, exactly as it goes on the ``data:`` line
    key: str | None
    exclude: frozenset[str]
    ephemeral: bool
    receipt: bool = False
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MembershipMessage:
    """``members.<conversationId>``: a change of the member list."""

    conversation: str
    op: MemberOp
    users: tuple[str, ...]
    key: str | None


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """``control.<userId>``: an operation on the user's open streams.
    ``before``: a revoke's cut-off (unix seconds), resolved at parse time."""

    user: str
    op: ControlOp
    reason: str | None
    before: float | None
    key: str | None


Message = EventMessage | MembershipMessage | ControlMessage


def check_id(value: object, what: str) -> str:
    """Ids are 1-128 bytes of printable, non-space characters. Every id the hub
    takes (user, conversation, node, stream) is checked here."""
    if not isinstance(value, str):
        raise InvalidMessage(f"{what}: must be a string, got {_type(value)}")
    if _ASCII_ID.fullmatch(value):
        return value
    size = len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_ID_BYTES:
        raise InvalidMessage(f"{what}: must be 1-{MAX_ID_BYTES} bytes, got {size}")
    for ch in value:
        if not ch.isprintable() or ch.isspace():
            raise InvalidMessage(not_allowed(what, ch, "printable, no spaces"))
    return value


def not_allowed(what: str, ch: str, rule: str) -> str:
    """The words for a character an id or a key may not hold."""
    if "\ud800" <= ch <= "\udfff":
        rule = "a lone surrogate, which UTF-8 cannot carry: a string cut in the middle of an emoji?"
    return f"{what}: character {ch!r} is not allowed ({rule})"


def check_event_name(value: object) -> str:
    if not isinstance(value, str) or not EVENT_NAME.fullmatch(value):
        raise InvalidMessage(
            f"event: must be 1-64 characters of A-Za-z0-9_.:- , got {_short(value)}"
        )
    return value


def check_key(value: object, what: str = "id", limit: int = MAX_ID_BYTES) -> str:
    """Idempotency keys: 1-128 characters (a body's ``id``; ``limit``: MAX_ANY_KEY
    for any key a message has), no control character, no lone surrogate."""
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidMessage(f"{what}: must be a string of 1-{limit} characters")
    _key_chars(value, what)
    return value


def _key_chars(value: str, what: str) -> None:
    """Refuses what no key may hold (``_NOT_IN_KEY``)."""
    if value.isascii() and value.isprintable():  # the common key: nothing to look for
        return
    bad = _NOT_IN_KEY.search(value)
    if bad:
        raise InvalidMessage(not_allowed(what, bad.group(), "no control characters"))


def check_users(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidMessage(f"{what}: must be an array of user ids, got {_type(value)}")
    if not value:
        return ()
    return tuple(dict.fromkeys(check_id(u, f"{what}[{i}]") for i, u in enumerate(value)))


def split_routing_key(routing_key: str) -> tuple[str, str]:
    """``kind.id`` where the id is everything after the first dot."""
    kind, dot, target = routing_key.partition(".")
    if kind not in ("user", "conversation", "members", "control") or not dot:
        raise InvalidMessage(
            f"routing key {_short(routing_key)}: expected user.<id>, conversation.<id>, "
            "members.<id>, control.<id> or batch"
        )
    return kind, check_id(target, f"routing key {kind}.<id>")


def parse_message(
    routing_key: str,
    body: bytes,
    message_id: str | None,
    max_bytes: int,
    now: float | None = None,
) -> Message:
    """Validate one consumed message (not ``batch``: ssehub.batch). Raises
    :class:`InvalidMessage`. ``now``: the clock for a revoke's default ``before``."""
    kind, target = split_routing_key(routing_key)
    if len(body) > max_bytes:
        raise InvalidMessage(f"body: {len(body)} bytes exceeds the limit of {max_bytes}")
    doc, exact = untrusted.parse(body)
    if not isinstance(doc, dict):
        raise InvalidMessage(f"body: must be a JSON object, got {_type(doc)}")
    return parse_doc(kind, target, doc, message_key(message_id), exact, now)


def message_key(message_id: str | None) -> str | None:
    """The AMQP ``message_id`` as an idempotency key, when it can be one (None
    when longer than MAX_KEY_CHARS). One the store cannot keep is refused."""
    if not message_id:
        return None
    _key_chars(message_id, "message_id")
    return message_id if len(message_id) <= MAX_KEY_CHARS else None


def parse_doc(
    kind: str,
    target: str,
    doc: dict[str, Any],
    fallback: str | None,
    exact: bool,
    now: float | None = None,
) -> Message:
    """One message's JSON object, for a routing key's ``kind`` and ``target``."""
    if kind == "members":
        return _parse_membership(target, doc, fallback)
    if kind == "control":
        return _parse_control(target, doc, fallback, time.time() if now is None else now)
    return _parse_event(kind, target, doc, fallback, exact)  # type: ignore[arg-type]


def _parse_event(
    kind: EventKind,
    target: str,
    doc: dict[str, Any],
    fallback: str | None,
    exact: bool,
    targets: tuple[str, ...] = (),
) -> EventMessage:
    _no_unknown(doc, EVENT_FIELDS)
    if "event" not in doc:
        raise InvalidMessage("event: missing")
    if "data" not in doc:
        raise InvalidMessage("data: missing")
    event = check_event_name(doc["event"])
    key = check_key(doc["id"]) if "id" in doc else fallback
    exclude: frozenset[str] = frozenset()
    if "exclude" in doc:
        if kind != "conversation":
            raise InvalidMessage("exclude: only conversation events take it")
        exclude = frozenset(check_users(doc["exclude"], "exclude"))
    ephemeral = _flag(doc, "ephemeral")
    receipt = _flag(doc, "receipt")
    if receipt and ephemeral:
        raise InvalidMessage("receipt: ephemeral events have no receipts")
    data = untrusted.dumps(doc["data"], exact)  # total for what untrusted.parse returned
    return EventMessage(kind, target, event, data, key, exclude, ephemeral, receipt, targets)


def parse_users_item(doc: dict[str, Any], fallback: str | None, exact: bool) -> EventMessage:
    """A ``users`` batch item: one event for each listed user."""
    users = check_users(doc.pop("users"), "users")
    if not users:
        raise InvalidMessage("users: must list at least one user")
    if len(users) > MAX_USERS:
        raise InvalidMessage(f"users: at most {MAX_USERS} users, got {len(users)}")
    return _parse_event("users", "", doc, fallback, exact, users)


def _flag(doc: dict[str, Any], name: str) -> bool:
    value = doc.get(name, False)
    if not isinstance(value, bool):
        raise InvalidMessage(f"{name}: must be true or false, got {_type(value)}")
    return value


def _parse_control(user: str, doc: dict[str, Any], key: str | None, now: float) -> ControlMessage:
    _no_unknown(doc, CONTROL_FIELDS)
    op = doc.get("op")
    if op == "disconnect":
        if "before" in doc:
            raise InvalidMessage("before: only revoke takes it")
        return ControlMessage(
            user, "disconnect", check_reason(doc.get("reason", "disconnect")), None, key
        )
    if op == "revoke":
        if "reason" in doc:
            raise InvalidMessage("reason: only disconnect takes it")
        before = check_before(doc.get("before", now))
        if before > now + MAX_BEFORE_AHEAD:
            raise InvalidMessage("before: more than a day in the future")
        return ControlMessage(user, "revoke", None, float(before), key)
    raise InvalidMessage(f'op: must be "disconnect" or "revoke", got {_short(op)}')


def check_reason(value: object) -> str:
    """A disconnect's reason: 1-128 characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise InvalidMessage("reason: must be a string of 1-128 characters")
    return value


def check_before(value: object) -> float:
    """A revoke's cut-off: unix seconds, a finite number, not negative."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise InvalidMessage(f"before: must be unix seconds, got {_short(value)}")
    return value


def _parse_membership(target: str, doc: dict[str, Any], key: str | None) -> MembershipMessage:
    _no_unknown(doc, MEMBER_FIELDS)
    op = doc.get("op")
    if op not in ("set", "add", "remove"):
        raise InvalidMessage(f'op: must be "set", "add" or "remove", got {_short(op)}')
    if "users" not in doc:
        raise InvalidMessage("users: missing")
    return MembershipMessage(target, op, check_users(doc["users"], "users"), key)


def event_doc(
    event: str,
    data: Any,
    *,
    key: str | None = None,
    exclude: Iterable[str] = (),
    ephemeral: bool = False,
    receipt: bool = False,
) -> dict[str, Any]:
    """The JSON object of an event (``user.*``, ``conversation.*``, a batch item), validated."""
    doc: dict[str, Any] = {"event": check_event_name(event), "data": data}
    if key is not None:
        doc["id"] = check_key(key)
    users = check_users(list(exclude), "exclude")
    if users:
        doc["exclude"] = list(users)
    if ephemeral:
        doc["ephemeral"] = True
    if receipt:
        if ephemeral:
            raise InvalidMessage("receipt: ephemeral events have no receipts")
        doc["receipt"] = True
    return doc


def control_doc(
    op: ControlOp, *, reason: str | None = None, before: float | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"op": op}
    if reason is not None:
        doc["reason"] = check_reason(reason)
    if before is not None:
        doc["before"] = before
    return doc


def event_body(event: str, data: Any, **options: Any) -> bytes:
    """The JSON body of ``user.*`` / ``conversation.*``, validated."""
    return dump_body(event_doc(event, data, **options))


def dump_body(doc: Any) -> bytes:
    """JSON bytes of a message body; integers beyond 64 bits stay exact. Raises
    InvalidMessage for what the hub would refuse (ssehub.untrusted's rules:
    a lone surrogate, nesting beyond its bound) in the hub's words."""
    try:
        return orjson.dumps(doc)  # (refuses lone surrogates and deep nesting itself)
    except TypeError as exc:
        big = "64-bit" in str(exc)
        why = untrusted.fault(doc, finite=big)
        if why is not None:
            raise InvalidMessage(why) from None
        if not big:
            raise InvalidMessage(f"data: not JSON-serialisable ({exc})") from None
    try:  # integers beyond 64 bits: the exact (slower) encoder
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMessage(f"data: not JSON-serialisable ({exc})") from None


def membership_body(op: MemberOp, users: Iterable[str]) -> bytes:
    return orjson.dumps({"op": op, "users": list(check_users(list(users), "users"))})


def _no_unknown(doc: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        name = unknown[0] if _FIELD_NAME.fullmatch(unknown[0]) else _short(unknown[0])
        raise InvalidMessage(f"{name}: unknown field (allowed: {', '.join(sorted(allowed))})")


_FIELD_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,40}")  # shown as is; others as their repr


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
