"""Fuzzing every parser of what the dispatcher consumes, in process: random and
mutated bodies (valid ones with bytes flipped and inserted, surrogate escapes
spliced in, huge digit runs, deep nesting), random routing keys and message
ids. Each parser only ever raises InvalidMessage, with a reason that fits a
header (one line of UTF-8), and whatever it returns can be stored and written
to a browser: event data is one line of UTF-8 JSON, names and ids pass their
checks, and every message survives the partitions' internal format.

A few thousand cases in the suite; ``SSEHUB_FUZZ_EXAMPLES`` (cases per test,
default 400) raises it for a longer run.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ssehub import batch, topology
from ssehub.dispatcher import forward
from ssehub.dispatcher.presence import PresenceOp, parse_presence
from ssehub.dispatcher.routes import RouteOp, joined_body, parse_caps_notice, parse_route
from ssehub.errors import InvalidMessage
from ssehub.schema import (
    EVENT_NAME,
    MAX_ANY_KEY,
    ControlMessage,
    EventMessage,
    MembershipMessage,
    Message,
    check_id,
    check_key,
    parse_message,
)
from ssehub.sse import render_event

EXAMPLES = int(os.environ.get("SSEHUB_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = 1_767_225_600.0

TOKENS = [
    b"\\ud83d", b"\\udfff", b"\\uDC00", b"\\ud83d\\ude00", b'"\\ud83d"', b"\\u0000", b"\\u2028",
    b"12345678901234567890", b"-9223372036854775809", b"1" * 400, b"9" * 5000, b"1e400",
    b"-1e999", b"1e-400", b"NaN", b"Infinity", b"-Infinity", b'"', b"\\", b"\n", b"\r", b"\x00",
    b"\xff", b"\xc3\x28", b"\xed\xa0\xbd", b"\xe2\x80\xa8", b"\xc2\x85", b"[" * 300,
    b"]" * 300, b'{"a":' * 260, b"}" * 260, b"[" * 1100, b"{", b"}", b"[", b"]", b",", b":",
    b"null", b"true", b"false", b"[]", b"{}", b"0", b"-0", b"1.5", b'"x\\nid: 999999"',
    b'"e"', b'"u"', b'""', b'"a b"',
]  # fmt: skip

# characters a publisher's strings may hold, lone surrogates and line breakers included
CHARS = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from('\x00\n\r\x7f\x85\u2028\u2029 "\\😀'),
)
CLEAN_TEXT = st.text(max_size=12)  # any character but a surrogate: NUL, LF, U+2028 too
TEXT = st.one_of(CLEAN_TEXT, st.text(CHARS, max_size=12))
GOOD_NAMES = st.sampled_from(["e", "message:new", "typing", "user:online"])
NAMES = st.one_of(GOOD_NAMES, st.sampled_from(["x\nid: 9", "", "a b", "é", "x" * 65]), TEXT)
GOOD_IDS = st.sampled_from(["u", "v", "c.1", "ü", "room:42", "😀", "x" * 128])
IDS = st.one_of(
    GOOD_IDS,
    st.sampled_from(["", "a b", "u\x00", "\ud83d", "x" * 129, "u\n", "u\x85"]),
    TEXT,
)
GOOD_KEYS = st.one_of(st.none(), st.sampled_from(["k1", "order 42 😀", "k" * 128]))
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**45), max_value=10**45),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([10**400, -(2**63) - 1, 2**64]),
)


def values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | NUMBERS | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


VALUES = values(TEXT)


def body_of(doc: Any) -> bytes:
    """JSON as any publisher may write it: lone surrogates as escapes."""
    return json.dumps(doc).encode()


def event_doc(event: str, data: Any, key: str | None, ephemeral: bool) -> dict[str, Any]:
    doc = {"event": event, "data": data}
    if key is not None:
        doc["id"] = key
    if ephemeral:
        doc["ephemeral"] = True
    return doc


# valid messages, whatever their data (what must parse, and be sound)
CLEAN_EVENTS = st.builds(
    event_doc,
    GOOD_NAMES,
    values(CLEAN_TEXT),
    GOOD_KEYS,
    st.booleans(),
)
CLEAN = st.one_of(
    st.tuples(st.sampled_from(["user", "conversation"]), GOOD_IDS, CLEAN_EVENTS),
    st.tuples(
        st.just("members"),
        GOOD_IDS,
        st.fixed_dictionaries(
            {"op": st.sampled_from(["set", "add", "remove"]), "users": st.lists(GOOD_IDS)}
        ),
    ),
    st.tuples(
        st.just("control"),
        GOOD_IDS,
        st.one_of(
            st.builds(lambda r: {"op": "disconnect", "reason": r}, st.text(min_size=1)),
            st.builds(lambda b: {"op": "revoke", "before": b}, st.floats(0, NOW)),
        ),
    ),
)
# anything a publisher may write
EVENT_DOCS = st.fixed_dictionaries(
    {"event": NAMES, "data": VALUES},
    optional={
        "id": IDS,
        "exclude": st.lists(IDS, max_size=3),
        "ephemeral": st.booleans() | NUMBERS,
        "receipt": st.booleans(),
    },
)
MEMBER_DOCS = st.fixed_dictionaries(
    {"op": st.sampled_from(["set", "add", "remove", "drop"]), "users": st.lists(IDS, max_size=3)}
)
CONTROL_DOCS = st.fixed_dictionaries(
    {"op": st.sampled_from(["disconnect", "revoke", "x"])},
    optional={"reason": TEXT, "before": NUMBERS},
)
ITEMS = st.one_of(
    CLEAN.map(lambda c: {**c[2], c[0]: c[1]}),
    st.builds(lambda d, u: {**d, "user": u}, EVENT_DOCS, IDS),
    st.builds(lambda d, u: {**d, "users": u}, EVENT_DOCS, st.lists(IDS, max_size=3)),
    st.builds(lambda d, c: {**d, "conversation": c}, EVENT_DOCS, IDS),
    st.builds(lambda d, c: {**d, "members": c}, MEMBER_DOCS, IDS),
    st.builds(lambda d, u: {**d, "control": u}, CONTROL_DOCS, IDS),
)

SEEDS = [
    b'{"event":"message:new","data":{"text":"hi","n":1},"id":"k1"}',
    b'{"event":"e","data":[1,"two",null,{"x":12345678901234567890123}]}',
    b'{"event":"e","data":"x","exclude":["u","v"],"ephemeral":true}',
    b'{"event":"e","data":{"t":"\\ud83d\\ude00 caf\\u00e9"},"receipt":true}',
    b'{"op":"set","users":["u","v"]}',
    b'{"op":"disconnect","reason":"bye"}',
    b'{"op":"revoke","before":1767225000.5}',
]
BATCH_SEEDS = [
    b'[{"user":"u","event":"e","data":1},{"users":["a","b"],"event":"e","data":[2]},'
    b'{"conversation":"c","event":"e","data":{"t":"x"},"exclude":["a"]},'
    b'{"members":"c","op":"add","users":["a"]},{"control":"u","op":"revoke"}]',
]


def forward_seeds() -> list[bytes]:
    messages: list[Message] = [
        parse_message("user.u1", SEEDS[0], "m1", 1 << 16, NOW),  # type: ignore[list-item]
        parse_message("conversation.c", SEEDS[2], None, 1 << 16, NOW),  # type: ignore[list-item]
        EventMessage("users", "", "e", b'{"n":1}', "k:0", frozenset(), True, False, ("a", "b")),
        parse_message("members.c", SEEDS[4], "m2", 1 << 16, NOW),  # type: ignore[list-item]
        parse_message("control.u", SEEDS[5], None, 1 << 16, NOW),  # type: ignore[list-item]
        parse_message("control.u", SEEDS[6], None, 1 << 16, NOW),  # type: ignore[list-item]
    ]
    return [forward.encode(messages), forward.encode(messages[:1])]


SIGNAL_SEEDS = [
    topology.presence_message("host.1.ab", None, True).body,
    topology.presence_message("host.1.ab", "u", False).body,
    topology.route_message("host.1.ab", 3, [("a", True), ("b", False)]).body,
    orjson.dumps({"node": "n1", "user": "a", "hello": True, "streams": ["c-1"]}),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid body, then a few flips, insertions, deletions and spliced tokens."""
    body = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(body)))
        how = draw(st.sampled_from(["flip", "token", "token", "bytes", "cut"]))
        if how == "flip" and body:
            body[min(at, len(body) - 1)] ^= draw(st.integers(1, 255))
        elif how == "token":
            body[at:at] = draw(st.sampled_from(TOKENS))
        elif how == "bytes":
            body[at:at] = draw(st.binary(max_size=6))
        else:
            del body[at : at + draw(st.integers(1, 12))]
    return bytes(body)


def bodies(seeds: list[bytes], docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(seeds), docs.map(body_of), st.binary(max_size=64))


ROUTING_KEYS = st.one_of(
    st.builds(
        lambda kind, target: f"{kind}.{target}",
        st.sampled_from(["user", "conversation", "members", "control"]),
        GOOD_IDS,
    ),
    st.sampled_from(
        [
            *("user.u", "conversation.c.1", "members.c", "control.u", "batch", "user.", "x.y"),
            *("user.a b", "user.u\udcff", "control.\x00", "ssehub.dispatch", ""),
        ]
    ),
    st.builds(
        lambda kind, target: f"{kind}.{target}",
        st.sampled_from(["user", "conversation", "members", "control"]),
        IDS,
    ),
)
MESSAGE_IDS = st.one_of(
    st.none(),
    st.sampled_from(["m1", "k-2", "m" * 240, "m" * 241]),
    st.sampled_from(["", "m\x00", "m\udcff", "m\n"]),
    TEXT,
)


# -- what every outcome must be ------------------------------------------------------------


def sound_reason(reason: str) -> None:
    """A dead letter's reason: words, one line of UTF-8, header-sized."""
    assert reason and "\n" not in reason and "\r" not in reason and len(reason) < 600
    reason.encode("utf-8")


def sound_key(key: str | None) -> None:
    if key is not None:
        check_key(key, "key", MAX_ANY_KEY)
        assert len(f"99 {key}") <= 255  # the store's column, with a partition's prefix


def sound(message: Message) -> None:
    """What the store keeps and a browser receives is well-formed, and the
    message goes through the partitions' internal format unchanged."""
    if isinstance(message, EventMessage):
        assert EVENT_NAME.fullmatch(message.event)
        if message.kind == "users":
            assert message.target == "" and message.targets
        else:
            assert message.kind in ("user", "conversation") and not message.targets
            check_id(message.target, "target")
        for user in (*message.targets, *message.exclude):
            check_id(user, "user")
        assert not message.exclude or message.kind == "conversation"
        assert not (message.receipt and message.ephemeral)
        text = message.data.decode("utf-8")  # strict: no lone surrogate
        assert not any(c in text for c in "\r\n\x85\u2028\u2029")
        json.loads(text)
        sse = render_event(7, message.event, message.data)
        assert sse.count(b"\n\n") == 1 and sse.endswith(b"\n\n") and b"\r" not in sse
    elif isinstance(message, MembershipMessage):
        assert message.op in ("set", "add", "remove")
        for user in (message.conversation, *message.users):
            check_id(user, "user")
    else:
        assert isinstance(message, ControlMessage)
        check_id(message.user, "user")
        if message.op == "disconnect":
            assert isinstance(message.reason, str) and 1 <= len(message.reason) <= 128
            message.reason.encode("utf-8")
        else:
            assert message.op == "revoke" and message.before is not None
            assert math.isfinite(message.before) and 0 <= message.before <= NOW + 86400
    sound_key(message.key)
    assert forward.decode(forward.encode([message])) == [message]


# -- the parsers -----------------------------------------------------------------------------


def parsed_message(routing_key: str, body: bytes, message_id: str | None) -> str:
    try:
        message = parse_message(routing_key, body, message_id, 1 << 16, NOW)
    except InvalidMessage as exc:
        sound_reason(str(exc))
        return f"refused: {str(exc).split(':')[0]}"
    sound(message)
    return f"parsed: {type(message).__name__}"


@FUZZ
@given(ROUTING_KEYS, bodies(SEEDS, EVENT_DOCS | MEMBER_DOCS | CONTROL_DOCS), MESSAGE_IDS)
def test_parse_message(routing_key: str, body: bytes, message_id: str | None) -> None:
    event(parsed_message(routing_key, body, message_id))


@FUZZ
@given(CLEAN, st.none() | st.sampled_from(["m1", "m" * 240]))
def test_parse_message_on_valid_messages(
    clean: tuple[str, str, Any], message_id: str | None
) -> None:
    kind, target, doc = clean
    assert parsed_message(f"{kind}.{target}", body_of(doc), message_id).startswith("parsed: ")


@FUZZ
@given(bodies(BATCH_SEEDS, st.lists(ITEMS, min_size=1, max_size=5)), MESSAGE_IDS)
def test_parse_batch(body: bytes, message_id: str | None) -> None:
    try:
        items = batch.parse_batch(body, message_id, 1 << 20, NOW)
    except InvalidMessage as exc:
        sound_reason(str(exc))
        return
    event(f"items: {sum(not isinstance(i, batch.ItemError) for i in items)} of {len(items)}")
    for index, item in enumerate(items):
        if isinstance(item, batch.ItemError):
            assert item.index == index and item.reason.startswith(f"item {index}: ")
            sound_reason(item.reason)
            json.loads(item.body)  # the item, as JSON, for its dead letter
        else:
            sound(item)


RECORDS = st.lists(
    st.one_of(
        st.tuples(
            st.just("e"),
            st.sampled_from(["user", "users", "conversation", "x"]),
            IDS,
            NAMES,
            st.one_of(VALUES.map(json.dumps), TEXT, NUMBERS),
            st.none() | IDS,
            st.lists(IDS, max_size=2),
            st.booleans() | NUMBERS,
            st.booleans(),
            st.lists(IDS, max_size=2),
        ),
        st.tuples(st.just("m"), IDS, st.sampled_from(["set", "x"]), st.lists(IDS), IDS),
        st.tuples(st.just("c"), IDS, st.sampled_from(["disconnect", "revoke"]), TEXT, NUMBERS),
        st.lists(VALUES, max_size=3),
    ),
    max_size=3,
)


def decoded(body: bytes) -> str:
    try:
        messages = forward.decode(body)
    except InvalidMessage as exc:
        sound_reason(str(exc))
        assert str(exc).startswith("forward: ")
        return f"refused: {' '.join(str(exc).split()[:3])}"
    for message in messages:
        sound(message)
    return f"decoded: {len(messages)}"


def valid_forward(cleans: list[tuple[str, str, Any]]) -> bytes:
    messages = [parse_message(f"{k}.{t}", body_of(d), "m1", 1 << 16, NOW) for k, t, d in cleans]
    return forward.encode(messages)


@FUZZ
@given(st.one_of(bodies(forward_seeds(), RECORDS), st.lists(CLEAN, max_size=4).map(valid_forward)))
def test_forward_decode(body: bytes) -> None:
    event(decoded(body))


SIGNAL_DOCS = st.fixed_dictionaries(
    {},
    optional={
        "node": IDS,
        "user": IDS,
        "online": st.booleans() | NUMBERS,
        "ref": NUMBERS,
        "ops": st.lists(st.tuples(IDS, st.sampled_from([0, 1, 2, True, "1"]))),
        "hello": st.booleans(),
        "streams": st.lists(IDS, max_size=2),
    },
)


@FUZZ
@given(bodies(SIGNAL_SEEDS, SIGNAL_DOCS))
def test_edge_signals(body: bytes) -> None:
    try:
        presence = parse_presence(body)
    except InvalidMessage as exc:
        sound_reason(str(exc))
    else:
        assert isinstance(presence, PresenceOp) and isinstance(presence.online, bool)
        check_id(presence.node, "node")
        assert presence.user is None or check_id(presence.user, "user")
    try:
        route = parse_route(body)
    except InvalidMessage as exc:
        sound_reason(str(exc))
    else:
        assert isinstance(route, RouteOp) and type(route.ref) is int
        check_id(route.node, "node")
        for user, join in route.ops:
            check_id(user, "user")
            assert isinstance(join, bool)
        joined_body(route.ref, [user for user, _ in route.ops])  # the answer can be written
    try:
        check_id(parse_caps_notice(body), "user")
    except InvalidMessage as exc:
        sound_reason(str(exc))


def test_the_issues_bodies_are_cases_of_the_fuzz() -> None:
    body = b'{"event":"note","data":{"text":"\\ud83d 12345678901234567890"}}'
    for routing_key in ("user.u", "conversation.c"):
        assert parsed_message(routing_key, body, "m1") == "refused: body"
    forged = forward.encode([EventMessage("user", "u", "e", b"1", None, frozenset(), False)])
    for mend in (b'"x\\nid: 999999","1"', b'"e",1'):
        assert decoded(forged.replace(b'"e","1"', mend)) == "refused: forward: record 0:"
