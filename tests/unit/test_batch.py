"""ssehub.batch: a batch body into its items, in order, with keys and per-item errors."""

from __future__ import annotations

import orjson
import pytest
from ssehub.batch import ItemError, parse_batch
from ssehub.errors import InvalidMessage
from ssehub.schema import ControlMessage, EventMessage, MembershipMessage


def parse(items: object, message_id: str | None = "M") -> list[object]:
    return list(parse_batch(orjson.dumps(items), message_id, 1 << 20, now=1000.0))


def test_items_come_out_in_order_with_their_keys() -> None:
    got = parse(
        [
            {"user": "a", "event": "e", "data": 1},
            {"user": "a", "event": "e", "data": 2, "id": "own"},
            {"members": "c", "op": "set", "users": ["a", "b"]},
            {"conversation": "c", "event": "e", "data": 3, "exclude": ["b"]},
            {"users": ["a", "b", "a"], "event": "e", "data": 4, "receipt": True},
            {"control": "a", "op": "revoke"},
        ]
    )
    assert [type(m).__name__ for m in got] == [
        "EventMessage",
        "EventMessage",
        "MembershipMessage",
        "EventMessage",
        "EventMessage",
        "ControlMessage",
    ]
    a, own, members, conv, users, control = got
    assert isinstance(a, EventMessage) and (a.kind, a.target, a.key) == ("user", "a", "M:0")
    assert isinstance(own, EventMessage) and own.key == "own"
    assert isinstance(members, MembershipMessage) and members.users == ("a", "b")
    assert isinstance(conv, EventMessage) and conv.exclude == frozenset({"b"})
    assert isinstance(users, EventMessage)
    assert (users.kind, users.targets, users.receipt, users.key) == (
        "users",
        ("a", "b"),
        True,
        "M:4",
    )
    assert isinstance(control, ControlMessage) and (control.op, control.before) == (
        "revoke",
        1000.0,
    )


def test_without_a_message_id_items_have_no_key() -> None:
    (item,) = parse([{"user": "a", "event": "e", "data": 1}], message_id=None)
    assert isinstance(item, EventMessage) and item.key is None


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"user": "a", "users": ["b"], "event": "e", "data": 1}, "found: user, users"),
        ({"event": "e", "data": 1}, "found: none"),
        ({"user": "a b", "event": "e", "data": 1}, "user: character ' ' is not allowed"),
        ({"users": [], "event": "e", "data": 1}, "users: must list at least one user"),
        ({"users": [f"u{i}" for i in range(1001)], "event": "e", "data": 1}, "at most 1000"),
        ({"control": "a", "op": "revoke", "before": 1000.0 + 86401}, "more than a day"),
        ({"control": "a", "op": "explode"}, 'op: must be "disconnect" or "revoke"'),
    ],
)
def test_a_bad_item_is_an_error_of_its_own(item: dict[str, object], reason: str) -> None:
    good = {"user": "z", "event": "e", "data": 0}
    first, bad, last = parse([good, item, good])
    assert isinstance(first, EventMessage) and isinstance(last, EventMessage)
    assert isinstance(bad, ItemError) and bad.index == 1
    assert bad.reason.startswith("item 1: ") and reason in bad.reason
    assert orjson.loads(bad.body) == item


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"user": "a"}', "a batch must be a JSON array of objects"),
        (b'[{"user": "a", "event": "e", "data": 1}, 7]', "a batch must be a JSON array of objects"),
        (b"[]", "a batch holds 1-1000 items, got 0"),
        (b"[" + b",".join([b"{}"] * 1001) + b"]", "got 1001"),
        (b"[not json", "not valid UTF-8 JSON"),
    ],
)
def test_a_bad_body_refuses_the_whole_message(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        parse_batch(body, "M", 1 << 20, now=0.0)


def test_a_body_over_the_limit_is_refused() -> None:
    body = orjson.dumps([{"user": "a", "event": "e", "data": "x" * 2000}])
    with pytest.raises(InvalidMessage, match="exceeds the batch limit of 1024"):
        parse_batch(body, "M", 1024, now=0.0)


# -- what crashed the dispatcher: half an emoji in one item ------------------------------


def test_half_an_emoji_in_one_item_refuses_that_item_alone() -> None:
    body = (
        b'[{"user": "a", "event": "one", "data": 1},'
        b' {"user": "a", "event": "note", "data": {"text": "\\ud83d 12345678901234567890"}},'
        b' {"user": "a", "event": "three", "data": 12345678901234567890123}]'
    )
    first, bad, last = parse_batch(body, "M", 1 << 20, now=0.0)
    assert isinstance(first, EventMessage) and first.event == "one" and first.key == "M:0"
    assert isinstance(last, EventMessage) and last.data == b"12345678901234567890123"
    assert isinstance(bad, ItemError) and bad.index == 1
    assert bad.reason == (
        "item 1: data.text holds a lone surrogate (\\ud83d) that UTF-8 cannot carry "
        "(a string cut in the middle of an emoji?)"
    )
    # its dead letter is the item as the publisher wrote it: JSON, the surrogate escaped
    assert bad.body == (
        b'{"user":"a","event":"note","data":{"text":"\\ud83d 12345678901234567890"}}'
    )


def test_a_message_id_the_store_cannot_keep_refuses_the_batch() -> None:
    body = orjson.dumps([{"user": "a", "event": "e", "data": 1}])
    with pytest.raises(InvalidMessage, match=r"^message_id: character '\\x00'"):
        parse_batch(body, "M\x00", 1 << 20, now=0.0)


def test_an_item_nested_too_deep_refuses_the_batch() -> None:
    deep = b"[" * 300 + b"]" * 300
    body = b'[{"user": "a", "event": "e", "data": %s}]' % deep
    with pytest.raises(InvalidMessage, match=r"^body: item 0: nested too deep"):
        parse_batch(body, "M", 1 << 20, now=0.0)


def test_an_item_key_or_target_with_a_control_character_is_its_own_error() -> None:
    good = {"user": "z", "event": "e", "data": 0}
    _, bad_key, bad_user = parse([good, {**good, "id": "k\n"}, {**good, "user": "u\x00"}])
    assert isinstance(bad_key, ItemError) and bad_key.reason == (
        "item 1: id: character '\\n' is not allowed (no control characters)"
    )
    assert isinstance(bad_user, ItemError) and bad_user.reason.startswith(
        "item 2: user: character '\\x00' is not allowed"
    )
