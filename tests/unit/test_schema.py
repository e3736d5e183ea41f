"""ssehub.schema: the contract's AMQP messages, parsed or refused with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ssehub.errors import InvalidMessage
from ssehub.schema import (
    EventMessage,
    MembershipMessage,
    event_body,
    membership_body,
    parse_message,
)
from ssehub.sse import render_event

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
routing_keys = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda k, t: f"{k}.{t}",
        st.sampled_from(["user", "conversation", "members"]),
        st.text(max_size=140),
    ),
)


def refused(rk: str, body: bytes, mid: str | None = None, max_bytes: int = 1024) -> str:
    with pytest.raises(InvalidMessage) as info:
        parse_message(rk, body, mid, max_bytes)
    return str(info.value)


# -- what parses -------------------------------------------------------------


def test_a_user_event() -> None:
    msg = parse_message("user.u1", b'{"event":"e","data":{"a": [1, 2]}, "id":"k"}', None, 1024)
    assert msg == EventMessage("user", "u1", "e", b'{"a":[1,2]}', "k", frozenset(), False)


def test_a_conversation_event_with_exclude_and_ephemeral() -> None:
    body = b'{"event":"typing","data":null,"exclude":["a","a","b"],"ephemeral":true}'
    msg = parse_message("conversation.c.1", body, None, 1024)
    assert msg == EventMessage(
        "conversation", "c.1", "typing", b"null", None, frozenset("ab"), True
    )


def test_the_message_id_is_the_key_when_the_body_has_none() -> None:
    msg = parse_message("user.u1", b'{"event":"e","data":1}', "mid-1", 1024)
    assert isinstance(msg, EventMessage) and msg.key == "mid-1"
    msg = parse_message("user.u1", b'{"event":"e","data":1,"id":"body"}', "mid-1", 1024)
    assert isinstance(msg, EventMessage) and msg.key == "body"


def test_a_membership_op() -> None:
    msg = parse_message("members.c", b'{"op":"add","users":["a","b","a"]}', "m1", 1024)
    assert msg == MembershipMessage("c", "add", ("a", "b"), "m1")


def test_numbers_beyond_64_bits_reach_clients_digit_for_digit() -> None:
    big = "123456789012345678901234567890"
    msg = parse_message("user.u1", b'{"event":"e","data":{"n":%s}}' % big.encode(), None, 1024)
    assert isinstance(msg, EventMessage) and msg.data == b'{"n":%s}' % big.encode()


def test_line_separators_are_escaped_on_the_data_line() -> None:
    msg = parse_message("user.u1", '{"event":"e","data":"a\u2028b\u0085c"}'.encode(), None, 1024)
    assert isinstance(msg, EventMessage) and msg.data == b'"a\\u2028b\\u0085c"'


# -- what is refused, and the reason -----------------------------------------------


@pytest.mark.parametrize(
    ("rk", "body", "reason"),
    [
        (
            "queue.x",
            b"{}",
            "routing key 'queue.x': expected user.<id>, conversation.<id>, members.<id>, "
            "control.<id> or batch",
        ),
        ("user.", b"{}", "routing key user.<id>: must be 1-128 bytes, got 0"),
        (
            "user.a b",
            b"{}",
            "routing key user.<id>: character ' ' is not allowed (printable, no spaces)",
        ),
        ("user.u", b"[1]", "body: must be a JSON object, got array"),
        ("user.u", b'{"data":1}', "event: missing"),
        ("user.u", b'{"event":"e"}', "data: missing"),
        (
            "user.u",
            b'{"event":"a b","data":1}',
            "event: must be 1-64 characters of A-Za-z0-9_.:- , got 'a b'",
        ),
        (
            "user.u",
            b'{"event":"e","data":1,"x":2}',
            "x: unknown field (allowed: data, ephemeral, event, exclude, id, receipt)",
        ),
        (
            "user.u",
            b'{"event":"e","data":1,"exclude":["a"]}',
            "exclude: only conversation events take it",
        ),
        (
            "user.u",
            b'{"event":"e","data":1,"ephemeral":1}',
            "ephemeral: must be true or false, got number",
        ),
        ("user.u", b'{"event":"e","data":1,"id":""}', "id: must be a string of 1-128 characters"),
        (
            "members.c",
            b'{"op":"drop","users":[]}',
            'op: must be "set", "add" or "remove", got \'drop\'',
        ),
        ("members.c", b'{"op":"set"}', "users: missing"),
        (
            "members.c",
            b'{"op":"set","users":"a"}',
            "users: must be an array of user ids, got string",
        ),
        ("members.c", b'{"op":"set","users":["a",1]}', "users[1]: must be a string, got number"),
    ],
)
def test_refused_with_a_reason(rk: str, body: bytes, reason: str) -> None:
    assert refused(rk, body) == reason


def test_a_body_over_the_limit() -> None:
    assert refused("user.u", b" " * 2000) == "body: 2000 bytes exceeds the limit of 1024"


def test_not_json() -> None:
    assert refused("user.u", b"{nope").startswith("body: not valid UTF-8 JSON (")


# -- the publisher's bodies ------------------------------------------------------


def test_event_body_round_trips() -> None:
    body = event_body("e", {"a": 1}, key="k", exclude=["x", "x"], ephemeral=True)
    assert body == b'{"event":"e","data":{"a":1},"id":"k","exclude":["x"],"ephemeral":true}'
    msg = parse_message("conversation.c", body, None, 1024)
    assert msg == EventMessage("conversation", "c", "e", b'{"a":1}', "k", frozenset("x"), True)


def test_event_body_with_big_integers() -> None:
    assert event_body("e", 2**70) == b'{"event":"e","data":1180591620717411303424}'


def test_event_body_refuses_what_the_dispatcher_would() -> None:
    with pytest.raises(InvalidMessage, match=r"^event: must be"):
        event_body("no spaces", 1)
    with pytest.raises(InvalidMessage, match=r"^data: not JSON-serialisable"):
        event_body("e", object())


def test_membership_body() -> None:
    assert membership_body("set", ["a", "b", "a"]) == b'{"op":"set","users":["a","b"]}'
    with pytest.raises(InvalidMessage, match=r"^users\[0\]: must be 1-128 bytes"):
        membership_body("add", [""])


# -- property tests: anything in, data or a named error out ------------------------


@settings(max_examples=400)
@given(routing_keys, st.binary(max_size=300), st.none() | st.text(max_size=300))
def test_parse_message_never_raises_anything_else(rk: str, body: bytes, mid: str | None) -> None:
    try:
        msg = parse_message(rk, body, mid, 256)
    except InvalidMessage as exc:
        assert str(exc)
    else:
        assert isinstance(msg, EventMessage | MembershipMessage)


@settings(max_examples=300)
@given(
    st.sampled_from(["user", "conversation", "members"]),
    st.text(min_size=1, max_size=20),
    st.dictionaries(
        st.sampled_from(["event", "data", "id", "exclude", "ephemeral", "op", "users", "x"]),
        json_values,
        max_size=6,
    ),
)
def test_parse_message_on_json_objects(kind: str, target: str, doc: dict[str, object]) -> None:
    try:
        msg = parse_message(f"{kind}.{target}", json.dumps(doc).encode(), None, 1 << 20)
    except InvalidMessage as exc:
        assert str(exc).split(":")[0]  # names the field or part at fault
        return
    if isinstance(msg, EventMessage):
        sse = render_event(7, msg.event, msg.data)
        # one event, exactly: a data line never breaks, the event ends once
        assert sse.count(b"\n\n") == 1 and sse.endswith(b"\n\n")
        assert b"\r" not in sse
        assert json.loads(msg.data) == doc["data"]
