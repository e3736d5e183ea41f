"""dispatcher/forward.py and ssehub.partition: who owns what, split in order,
and the internal format there and back."""

from __future__ import annotations

import zlib

import orjson
import pytest
from ssehub import topology
from ssehub.dispatcher import forward
from ssehub.partition import partition_of
from ssehub.schema import ControlMessage, EventMessage, Message, parse_message

from tests.unit.dispatcher.messages import event, members


def control(user: str) -> ControlMessage:
    msg = parse_message(f"control.{user}", b'{"op": "disconnect", "reason": "x"}', "k", 1 << 16)
    assert isinstance(msg, ControlMessage)
    return msg


def users_event(users: list[str], key: str = "k1") -> EventMessage:
    return EventMessage("users", "", "e", b"1", key, frozenset(), False, True, tuple(users))


def test_the_partition_function_is_crc32_of_the_id_and_stable() -> None:
    # pinned values: publishers in any language compute the same (zlib.crc32)
    assert [partition_of(u, 4) for u in ("alice", "bob", "carol", "dave")] == [
        zlib.crc32(u.encode()) % 4 for u in ("alice", "bob", "carol", "dave")
    ]
    assert partition_of("alice", 4) == 3 and partition_of("bob", 4) == 0
    assert partition_of("anything", 1) == 0
    assert partition_of("ünïcode", 7) == zlib.crc32("ünïcode".encode()) % 7


def test_a_users_events_and_control_ops_share_a_partition_and_so_do_a_conversations() -> None:
    n = 8
    for user in ("u1", "u2", "someone.with.dots"):
        assert forward.owner(event(f"user.{user}"), n) == forward.owner(control(user), n)
    for conv in ("c1", "c2", "room:42"):
        assert forward.owner(event(f"conversation.{conv}"), n) == forward.owner(
            members(conv, "add", ["a"]), n
        )
    assert forward.owner(users_event(["a", "b"]), n) is None  # split by its users


def test_a_batch_splits_in_item_order_and_a_users_item_by_its_users_partitions() -> None:
    n = 4
    users = [f"u{i}" for i in range(12)]
    messages: list[Message] = [event(f"user.{u}", "e", i) for i, u in enumerate(users)]
    messages.insert(5, users_event(users, key="all"))
    parts = forward.split(messages, n)
    for p, part in parts.items():
        singles = [m for m in part if isinstance(m, EventMessage) and m.kind == "user"]
        assert [m.target for m in singles] == [u for u in users if partition_of(u, n) == p]
        (split,) = [m for m in part if isinstance(m, EventMessage) and m.kind == "users"]
        assert split.key == "all"  # each partition dedupes its own part by the key
        assert list(split.targets) == [u for u in users if partition_of(u, n) == p]
        # the users item stays where it was among that partition's items
        before = [m for m in messages[:5] if isinstance(m, EventMessage)]
        assert part.index(split) == len([m for m in before if partition_of(m.target, n) == p])


def test_every_kind_of_message_survives_the_internal_format() -> None:
    messages: list[Message] = [
        event("conversation.c1", "message:new", {"t": "é"}, exclude=["a"], id="k1"),
        event("user.u1", "typing", None, ephemeral=True),
        users_event(["a", "b"]),
        members("c1", "set", ["a", "b"], key="m1"),
        control("u9"),
        ControlMessage("u9", "revoke", None, 1767225600.5, None),
    ]
    assert forward.decode(forward.encode(messages)) == messages


def test_a_body_no_stage_wrote_is_refused_in_words() -> None:
    from ssehub.errors import InvalidMessage

    for body in (b"nope", b"[1]", b'[["x"]]', orjson.dumps([["e", "user"]])):
        with pytest.raises(InvalidMessage, match="forward: malformed"):
            forward.decode(body)


def test_large_parts_go_as_several_persistent_messages_in_order() -> None:
    big = b'"' + b"x" * (300 << 10) + b'"'
    part: list[Message] = [
        EventMessage("user", "u1", "e", big, f"k{i}", frozenset(), False) for i in range(7)
    ]
    out = forward.publishes({3: part, 1: part[:1]}, 4)
    assert [m.routing_key for m in out][:1] == [topology.dispatch_queue(1, 4)]
    to_3 = [m for m in out if m.routing_key == "ssehub.dispatch.3"]
    assert len(to_3) > 1
    decoded = [m for p in to_3 for m in forward.decode(p.body)]
    assert decoded == part
    for m in out:
        assert m.properties.delivery_mode == 2
        assert (m.properties.headers or {})[topology.FORWARD_HEADER] == 1
