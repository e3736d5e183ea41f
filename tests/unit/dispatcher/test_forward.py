"""dispatcher/forward.py and ssehub.partition: who owns what, split in order,
and the internal format there and back."""

from __future__ import annotations

import json
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


def test_data_keys_and_numbers_survive_the_internal_format() -> None:
    messages: list[Message] = [
        parse_message(
            "user.u1",
            json.dumps(
                {"event": "e", "data": {"n": 10**30, "t": "😀\u2028é"}, "id": "k 1"}
            ).encode(),
            None,
            1 << 16,
        ),
        parse_batch_item_with_a_long_message_id(),
    ]
    assert forward.decode(forward.encode(messages)) == messages


def parse_batch_item_with_a_long_message_id() -> Message:
    from ssehub.batch import parse_batch
    from ssehub.schema import MAX_KEY_CHARS

    body = orjson.dumps([{"user": "u"} | {"event": "e", "data": 1}] * 1000)
    items = parse_batch(body, "m" * MAX_KEY_CHARS, 1 << 20, 0.0)
    last = items[-1]
    assert isinstance(last, EventMessage) and last.key == "m" * MAX_KEY_CHARS + ":999"
    return last


E = ["e", "user", "u1", "e", "1", None, [], False, False, []]
M = ["m", "c1", "set", ["a"], None]
C = ["c", "u1", "disconnect", "bye", None, None]


def with_(record: list[object], **fields: object) -> list[object]:
    names = {
        "e": "tag kind target event data key exclude ephemeral receipt targets",
        "m": "tag conversation op users key",
        "c": "tag user op reason before key",
    }[str(record[0])].split()
    out = list(record)
    for name, value in fields.items():
        out[names.index(name)] = value
    return out


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        # the forgeries of the issue: two SSE lines from one event name, a crash from a number
        (with_(E, event="x\nid: 999999"), "event: must be 1-64 characters of A-Za-z0-9_.:- "),
        (with_(E, data=1), "data: must be a string of JSON"),
        (with_(E, data='{"a":\n1}'), "data: must be one line of JSON (it holds a line break)"),
        (with_(E, data='"a\u2029"'), "data: must be one line of JSON (it holds a line break)"),
        (with_(E, data="{nope"), "data: not valid UTF-8 JSON ("),
        (with_(E, data="NaN"), "data: not valid UTF-8 JSON ("),
        (with_(E, data="[" * 300 + "]" * 300), "data: nested too deep"),
        (with_(E, data="1e400"), "data: the value is a number beyond a 64-bit float"),
        (with_(E, kind="broadcast"), 'kind: must be "user", "conversation" or "users"'),
        (with_(E, target="a b"), "target: character ' ' is not allowed"),
        (with_(E, target=7), "target: must be a string, got number"),
        (with_(E, kind="users"), "target: a users event has none"),
        (with_(E, kind="users", target=""), "targets: must list at least one user"),
        (with_(E, kind="users", target="", targets=["a", ""]), "targets[1]: must be 1-128 bytes"),
        (with_(E, targets=["a"]), "targets: only users events have them, not user events"),
        (with_(E, exclude=["a"]), "exclude: only conversation events take it"),
        (with_(E, kind="conversation", exclude="a"), "exclude: must be an array of user ids"),
        (with_(E, ephemeral=1), "ephemeral, receipt: must be true or false"),
        (with_(E, receipt=None), "ephemeral, receipt: must be true or false"),
        (with_(E, ephemeral=True, receipt=True), "receipt: ephemeral events have no receipts"),
        (with_(E, key="k\x00"), "key: character '\\x00' is not allowed (no control characters)"),
        (with_(E, key=""), "key: must be a string of 1-244 characters"),
        (with_(E, key="k" * 245), "key: must be a string of 1-244 characters"),
        (with_(M, op="drop"), 'op: must be "set", "add" or "remove"'),
        (with_(M, conversation=""), "conversation: must be 1-128 bytes, got 0"),
        (with_(M, users=[1]), "users[0]: must be a string, got number"),
        (with_(C, before=5.0), 'op: must be "disconnect" with a reason or "revoke" with a before'),
        (with_(C, reason=None), "reason: must be a string of 1-128 characters"),
        (with_(C, reason=""), "reason: must be a string of 1-128 characters"),
        (with_(C, op="revoke", reason=None, before=-1), "before: must be unix seconds, got -1"),
        (with_(C, op="revoke", reason=None, before="1"), "before: must be unix seconds, got '1'"),
        (with_(C, op="revoke", before=1.0), 'op: must be "disconnect" with a reason or "revoke"'),
        (with_(C, op="explode"), 'op: must be "disconnect" with a reason or "revoke"'),
        (with_(C, user="u\x85"), "user: character '\\x85' is not allowed (printable, no spaces)"),
        (["x"], 'must be an array starting with "e", "m" or "c"'),
        ([1, 2], 'must be an array starting with "e", "m" or "c"'),
        ({"e": 1}, 'must be an array starting with "e", "m" or "c"'),
        ([], 'must be an array starting with "e", "m" or "c"'),
        (E[:-1], '"e" records have 10 fields, got 9'),
        ([*M, None], '"m" records have 5 fields, got 6'),
    ],
)
def test_a_bad_record_is_refused_naming_it(record: list[object], reason: str) -> None:
    from ssehub.errors import InvalidMessage

    good = forward.decode(orjson.dumps([E, M, C]))
    assert [type(m).__name__ for m in good] == [
        "EventMessage",
        "MembershipMessage",
        "ControlMessage",
    ]
    body = json.dumps([E, M, record]).encode()
    with pytest.raises(InvalidMessage) as info:
        forward.decode(body)
    assert str(info.value).startswith(f"forward: record 2: {reason}")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"nope", "forward: not valid UTF-8 JSON ("),
        (b'{"e": 1}', "forward: must be a JSON array of records"),
        (b'[["e", "user", "\\ud83d"]]', "forward: [0][2] holds a lone surrogate (\\ud83d)"),
        (b"[" * 300 + b"]" * 300, "forward: nested too deep"),
        (b"\xff", "forward: not valid UTF-8 JSON (byte 0xff at position 0 is not UTF-8"),
    ],
)
def test_a_body_no_stage_wrote_is_refused_in_words(body: bytes, reason: str) -> None:
    from ssehub.errors import InvalidMessage

    with pytest.raises(InvalidMessage) as info:
        forward.decode(body)
    assert str(info.value).startswith(reason)


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
