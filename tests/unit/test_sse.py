"""ssehub.sse: the exact bytes on a stream, and the cursor a client sends back."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ssehub.sse import (
    PING,
    event_seq,
    parse_last_event_id,
    render_connected,
    render_event,
    render_retry,
)


def test_an_event() -> None:
    assert render_event(3, "e", b'{"a":1}') == b'id: 3\nevent: e\ndata: {"a":1}\n\n'


def test_an_ephemeral_event_has_no_id() -> None:
    assert render_event(None, "typing", b"[]") == b"event: typing\ndata: []\n\n"


def test_ping_is_a_comment() -> None:
    assert PING == b": ping\n\n"


def test_connected() -> None:
    sse = render_connected(12, "u1", "c-9", True)
    assert sse == (
        b'id: 12\nevent: connected\ndata: {"userId":"u1","connectionId":"c-9","recovered":true}\n\n'
    )
    data = sse.split(b"data: ")[1].strip()
    assert orjson.loads(data) == {"userId": "u1", "connectionId": "c-9", "recovered": True}


@pytest.mark.parametrize(("r", "ms"), [(0.0, 1500), (0.5, 3000), (0.999, 4497)])
def test_retry_is_jittered_around_the_base(r: float, ms: int) -> None:
    class Fixed(random.Random):
        def random(self) -> float:
            return r

    assert render_retry(3000, Fixed()) == b"retry: %d\n\n" % ms


@pytest.mark.parametrize(
    ("sse", "seq"),
    [
        (b"id: 42\nevent: e\ndata: 1\n\n", 42),
        (b"event: e\ndata: 1\n\n", None),
        (b"id: x\nevent: e\n\n", None),
    ],
)
def test_event_seq_reads_the_id_line(sse: bytes, seq: int | None) -> None:
    assert event_seq(sse) == seq


@given(st.integers(min_value=0, max_value=2**62), st.sampled_from(["e", "a.b:c-d_1"]))
def test_event_seq_round_trips(seq: int, event: str) -> None:
    assert event_seq(render_event(seq, event, b"{}")) == seq


@pytest.mark.parametrize(
    ("raw", "cursor"),
    [
        (None, None),
        ("", None),
        ("7", 7),
        (" 7 ", 7),
        ("0", 0),
        ("-1", None),
        ("1e3", None),
        ("٣", None),  # a digit, but not ASCII
        ("9" * 18, 10**18 - 1),
        ("1" * 19, None),
    ],
)
def test_last_event_id(raw: str | None, cursor: int | None) -> None:
    assert parse_last_event_id(raw) == cursor


@given(st.text(max_size=50))
def test_last_event_id_is_a_cursor_or_absent(raw: str) -> None:
    got = parse_last_event_id(raw)
    if got is not None:
        assert got >= 0 and got == int(raw.strip())


@given(st.integers(min_value=0, max_value=10**17))
def test_last_event_id_round_trips(n: int) -> None:
    assert parse_last_event_id(str(n)) == n
