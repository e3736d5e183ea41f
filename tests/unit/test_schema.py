"""ssehub.schema: the contract's AMQP messages, parsed or refused with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ssehub.errors import InvalidMessage
from ssehub.schema import (
    MAX_ANY_KEY,
    MAX_KEY_CHARS,
    ControlMessage,
    EventMessage,
    MembershipMessage,
    check_id,
    check_key,
    control_doc,
    dump_body,
    event_body,
    membership_body,
    message_key,
    parse_message,
)
from ssehub.sse import render_event
from ssehub.untrusted import MAX_DEPTH, NESTING

EMOJI_CUT = (
    "holds a lone surrogate (\\ud83d) that UTF-8 cannot carry "
    "(a string cut in the middle of an emoji?)"
)

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


# -- what crashed the dispatcher, and its kin ----------------------------------------


@pytest.mark.parametrize("rk", ["user.u", "conversation.c"])
def test_half_an_emoji_beside_a_big_number_is_refused_in_words(rk: str) -> None:
    body = b'{"event":"note","data":{"text":"\\ud83d 12345678901234567890"}}'
    assert refused(rk, body) == f"body: data.text {EMOJI_CUT}"


def test_a_number_beyond_a_double_is_refused_not_written_as_infinity() -> None:
    for body in (b'{"event":"e","data":1e400}', b'{"event":"e","data":[1e400,%s]}' % (b"9" * 25)):
        assert "beyond a 64-bit float (1e400)" in refused("user.u", body)


def test_data_nested_to_the_bound_is_written_back_and_deeper_is_refused() -> None:
    deep = b"[" * (MAX_DEPTH - 1) + b"1" + b"]" * (MAX_DEPTH - 1)
    msg = parse_message("user.u", b'{"event":"e","data":%s}' % deep, None, 1 << 16)
    assert isinstance(msg, EventMessage) and msg.data == deep
    body = b'{"event":"e","data":[%s]}' % deep
    assert refused("user.u", body, max_bytes=1 << 16) == f"body: {NESTING}"


def test_an_odd_unknown_field_is_named_by_its_repr() -> None:
    body = b'{"event":"e","data":1,"x\\ny":2}'
    assert refused("user.u", body).startswith("'x\\ny': unknown field")
    assert refused("user.u", b'{"event":"e","data":1,"%s":2}' % (b"k" * 500)).startswith(
        "'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...: unknown field"
    )


def test_a_revoke_before_must_be_finite_unix_seconds() -> None:
    assert "beyond a 64-bit float" in refused("control.u", b'{"op":"revoke","before":1e400}')
    huge = b'{"op":"revoke","before":%s}' % (b"9" * 40)
    assert refused("control.u", huge) == "before: more than a day in the future"
    msg = parse_message("control.u", b'{"op":"revoke","before":100}', None, 1024, now=200.0)
    assert msg == ControlMessage("u", "revoke", None, 100.0, None)


# -- keys and ids: what the store and UTF-8 can hold -----------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("k\x00", "id: character '\\x00' is not allowed (no control characters)"),
        ("a\nb", "id: character '\\n' is not allowed (no control characters)"),
        ("del\x7f", "id: character '\\x7f' is not allowed (no control characters)"),
        ("c1\x85", "id: character '\\x85' is not allowed (no control characters)"),
        (
            "cut\ud83d",
            "id: character '\\ud83d' is not allowed (a lone surrogate, which UTF-8 cannot "
            "carry: a string cut in the middle of an emoji?)",
        ),
    ],
)
def test_a_key_the_store_cannot_keep_is_refused(key: str, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_key(key)
    assert str(info.value) == reason
    body = json.dumps({"event": "e", "data": 1, "id": key}).encode()
    if "\ud83d" in key:  # the parser finds it first, in the body
        reason = f"body: id {EMOJI_CUT}"
    assert refused("user.u", body) == reason


def test_keys_may_hold_spaces_and_whole_emoji() -> None:
    assert check_key("order 42 😀") == "order 42 😀"
    assert check_key("😀" * 128) == "😀" * 128


def test_the_message_id_is_a_key_only_when_the_store_can_keep_it() -> None:
    assert message_key("m" * MAX_KEY_CHARS) == "m" * MAX_KEY_CHARS
    assert message_key("m" * (MAX_KEY_CHARS + 1)) is None  # at-least-once, as before
    assert len(f"{'m' * MAX_KEY_CHARS}:999") == MAX_ANY_KEY <= 255 - len("99 ")
    with pytest.raises(InvalidMessage, match=r"^message_id: character '\\x00' is not allowed"):
        message_key("m\x00")
    with pytest.raises(InvalidMessage, match=r"^message_id: character '\\udcff'"):
        message_key("m\udcff")  # (invalid UTF-8 in the property, escaped by the reader)
    assert refused("user.u", b'{"event":"e","data":1}', mid="m\x00").startswith("message_id:")


def test_an_id_with_a_lone_surrogate_says_so() -> None:
    with pytest.raises(InvalidMessage) as info:
        check_id("u\ud83d", "user_id")
    assert str(info.value) == (
        "user_id: character '\\ud83d' is not allowed (a lone surrogate, which UTF-8 "
        "cannot carry: a string cut in the middle of an emoji?)"
    )
    assert refused("user.u\udcff", b"{}").startswith("routing key user.<id>: character")


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


@pytest.mark.parametrize("big", [1, 10**30])  # orjson's path, and the exact one
def test_a_lone_surrogate_in_a_publishers_data_is_refused_in_the_hubs_words(big: int) -> None:
    data = {"n": big, "text": "\ud83d 12345678901234567890"}
    with pytest.raises(InvalidMessage) as info:
        event_body("note", data)
    assert str(info.value) == f"data.text {EMOJI_CUT}"
    hub = refused("user.u", json.dumps({"event": "note", "data": data}).encode())
    assert hub == f"body: {info.value}"


@pytest.mark.parametrize("big", [1, 10**30])
def test_a_publishers_data_nests_no_deeper_than_the_hub_parses(big: int) -> None:
    value: object = big
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    body = event_body("e", value)  # the message's own object makes MAX_DEPTH
    assert isinstance(parse_message("user.u", body, None, 1 << 16), EventMessage)
    with pytest.raises(InvalidMessage) as info:
        event_body("e", [value])
    assert str(info.value) == f"data: {NESTING}"


def test_nan_is_null_as_orjson_writes_it_but_refused_beside_a_big_integer() -> None:
    assert event_body("e", float("nan")) == b'{"event":"e","data":null}'
    with pytest.raises(InvalidMessage, match=r"^data\[1\] is not a finite number \(nan\)"):
        event_body("e", [10**30, float("nan")])


def test_a_bad_reason_or_key_is_refused_before_sending() -> None:
    with pytest.raises(InvalidMessage, match=r"^reason: must be a string of 1-128 characters"):
        control_doc("disconnect", reason="")
    with pytest.raises(InvalidMessage) as info:
        dump_body(control_doc("disconnect", reason="bye \ud83d"))
    assert str(info.value) == f"reason {EMOJI_CUT}"
    with pytest.raises(InvalidMessage, match=r"^id: character"):
        event_body("e", 1, key="k\x00")


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
        assert str(exc) and str(exc).encode()
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
