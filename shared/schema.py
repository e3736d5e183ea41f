"""The contract's AMQP messages: parsing and validation, pure functions.

``parse_message`` turns a routing key and a body into a typed message or
raises :class:`InvalidMessage` with a reason a publisher can act on. The
publisher client builds its bodies with the same rules, so a bad call fails
in the caller's process instead of in ``sse.dead``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from ssehub.errors import InvalidMessage

EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# orjson is exact up to unsigned 64 bits (20 digits) and turns larger integers
# into floats; bodies with such a digit run take the exact (slower) stdlib path
# so that data reaches clients digit for digit. 19-digit ids stay on the fast path.
# Found by mapping every digit to "9" and searching for twenty of them: a regex
# like \d{20,} backtracks through every shorter digit run (most of a batch's
# parse time with 16-digit timestamps in the data).
_ALL_DIGITS = bytes.maketrans(b"012345678", b"999999999")
_TWENTY_DIGITS = b"9" * 20
_ASCII_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII without space: the common id
MAX_ID_BYTES = 128
MAX_KEY_CHARS = 255  # AMQP message_id is a shortstr; the body "id" is capped at 128
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
    """Ids are 1-128 bytes of printable, non-space characters."""
    if not isinstance(value, str):
        raise InvalidMessage(f"{what}: must be a string, got {_type(value)}")
    if _ASCII_ID.fullmatch(value):
        return value
    size = len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_ID_BYTES:
        raise InvalidMessage(f"{what}: must be 1-{MAX_ID_BYTES} bytes, got {size}")
    for ch in value:
        if not ch.isprintable() or ch.isspace():
            raise InvalidMessage(f"{what}: character {ch!r} is not allowed (printable, no spaces)")
    return value


def check_event_name(value: object) -> str:
    if not isinstance(value, str) or not EVENT_NAME.fullmatch(value):
        raise InvalidMessage(
            f"event: must be 1-64 characters of A-Za-z0-9_.:- , got {_short(value)}"
        )
    return value


def check_key(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_BYTES:
        raise InvalidMessage(f"{what}: must be a string of 1-{MAX_ID_BYTES} characters")
    return value


def check_users(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidMessage(f"{what}: must be an array of user ids, got {_type(value)}")
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
    doc, exact = load_json(body)
    if not isinstance(doc, dict):
        raise InvalidMessage(f"body: must be a JSON object, got {_type(doc)}")
    return parse_doc(kind, target, doc, message_key(message_id), exact, now)


def message_key(message_id: str | None) -> str | None:
    """The AMQP ``message_id`` as an idempotency key, when it can be one."""
    return message_id if message_id and len(message_id) <= MAX_KEY_CHARS else None


def load_json(body: bytes) -> tuple[Any, bool]:
    """The body's JSON, and whether it took the exact path (integers beyond 64 bits)."""
    exact = _TWENTY_DIGITS in body.translate(_ALL_DIGITS)
    return (_loads_exact(body) if exact else _loads(body)), exact


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


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"body: not valid UTF-8 JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads_exact(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidMessage(f"body: not valid UTF-8 JSON ({exc})") from None


# JSON leaves these raw, but many line readers (Python's splitlines among them)
# break lines at them; escaped, the data line stays one line for every client.
LINE_BREAKERS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _dumps(value: Any, exact: bool) -> bytes:
    if exact:
        out = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    else:
        out = orjson.dumps(value)
    for raw, escaped in LINE_BREAKERS:
        if raw in out:
            out = out.replace(raw, escaped)
    return out


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
    data = _dumps(doc["data"], exact)
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
        reason = doc.get("reason", "disconnect")
        if not isinstance(reason, str) or not 1 <= len(reason) <= 128:
            raise InvalidMessage("reason: must be a string of 1-128 characters")
        return ControlMessage(user, "disconnect", reason, None, key)
    if op == "revoke":
        if "reason" in doc:
            raise InvalidMessage("reason: only disconnect takes it")
        before = doc.get("before", now)
        if isinstance(before, bool) or not isinstance(before, int | float) or before < 0:
            raise InvalidMessage(f"before: must be unix seconds, got {_short(before)}")
        if before > now + MAX_BEFORE_AHEAD:
            raise InvalidMessage("before: more than a day in the future")
        return ControlMessage(user, "revoke", None, float(before), key)
    raise InvalidMessage(f'op: must be "disconnect" or "revoke", got {_short(op)}')


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
        doc["reason"] = reason
    if before is not None:
        doc["before"] = before
    return doc


def event_body(event: str, data: Any, **options: Any) -> bytes:
    """The JSON body of ``user.*`` / ``conversation.*``, validated."""
    return dump_body(event_doc(event, data, **options))


def dump_body(doc: Any) -> bytes:
    """JSON bytes of a message body; integers beyond 64 bits stay exact."""
    try:
        return orjson.dumps(doc)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise InvalidMessage(f"data: not JSON-serialisable ({exc})") from None
    try:  # integers beyond 64 bits: the exact (slower) encoder
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(f"data: not JSON-serialisable ({exc})") from None


def membership_body(op: MemberOp, users: Iterable[str]) -> bytes:
    return orjson.dumps({"op": op, "users": list(check_users(list(users), "users"))})


def _no_unknown(doc: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidMessage(f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
