"""Contract messages for the planning tests, parsed as the dispatcher parses them."""

from __future__ import annotations

from typing import Any

import orjson
from ssehub.schema import EventMessage, MembershipMessage, parse_message


def event(rk: str, name: str = "e", data: Any = None, **fields: Any) -> EventMessage:
    msg = parse_message(rk, orjson.dumps({"event": name, "data": data, **fields}), None, 1 << 16)
    assert isinstance(msg, EventMessage)
    return msg


def members(
    conversation: str, op: str, users: list[str], key: str | None = None
) -> MembershipMessage:
    msg = parse_message(
        f"members.{conversation}", orjson.dumps({"op": op, "users": users}), key, 1 << 16
    )
    assert isinstance(msg, MembershipMessage)
    return msg
