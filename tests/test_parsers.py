"""Property tests: the parsers take anything and answer with data or a named error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from ssehub.errors import InvalidMessage
from ssehub.schema import EventMessage, MembershipMessage, parse_message
from ssehub.sse import parse_last_event_id, render_event

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


@given(st.text(max_size=50))
def test_last_event_id_is_a_cursor_or_absent(raw: str) -> None:
    got = parse_last_event_id(raw)
    if got is not None:
        assert got >= 0 and got == int(raw.strip())


@given(st.integers(min_value=0, max_value=10**17))
def test_last_event_id_round_trips(n: int) -> None:
    assert parse_last_event_id(str(n)) == n
