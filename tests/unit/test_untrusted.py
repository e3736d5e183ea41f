"""ssehub.untrusted: one parser for untrusted JSON, its refusals in words, and
the publisher's check that says the same before anything is sent."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ssehub import untrusted
from ssehub.errors import InvalidMessage
from ssehub.untrusted import MAX_DEPTH, NESTING, check_text, dumps, fault, parse, parse_items

EMOJI_CUT = (
    "holds a lone surrogate (\\ud83d) that UTF-8 cannot carry "
    "(a string cut in the middle of an emoji?)"
)


def refused(body: bytes, what: str = "body") -> str:
    with pytest.raises(InvalidMessage) as info:
        parse(body, what)
    return str(info.value)


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """``depth`` arrays and objects inside each other, alternating."""
    opens = b"".join(b"[" if i % 2 else b'{"a":' for i in range(depth))
    closes = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(depth)))
    return opens + inner + closes


# -- what parses, and how it comes back --------------------------------------------


def test_the_fast_path_is_orjsons() -> None:
    assert parse(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == (
        {"a": [1, 2.5, "é", None, True]},
        False,
    )


@pytest.mark.parametrize(
    "number",
    [
        b"12345678901234567890",  # 20 digits, within 64 bits unsigned: exact path anyway
        b"123456789012345678901234567890",
        b"-9223372036854775809",  # 19 digits: orjson would make it a float
        b"-9999999999999999999",
        b"1" + b"0" * 400,  # beyond a double: orjson refuses, the exact path keeps it
        b"7" * untrusted.MAX_INT_DIGITS,
    ],
)
def test_integers_of_any_size_come_back_digit_for_digit(number: bytes) -> None:
    value, exact = parse(b'{"n":%s}' % number)
    assert exact and value == {"n": int(number)}
    assert dumps(value, exact) == b'{"n":%s}' % number


def test_nineteen_digit_ids_and_floats_stay_on_the_fast_path() -> None:
    assert parse(b"[9223372036854775807, -922337203685477580, 1.5e300, 1e-400]") == (
        [9223372036854775807, -922337203685477580, 1.5e300, 0.0],
        False,
    )
    # 19 digits after a minus may be beyond 64 bits: the exact path, to be sure
    assert parse(b"[-9223372036854775808]") == ([-9223372036854775808], True)


def test_a_whole_emoji_in_escapes_is_one_character() -> None:
    assert parse(b'"\\ud83d\\ude00"') == ("\U0001f600", False)
    assert parse(b'{"n": 12345678901234567890, "t": "\\ud83d\\ude00"}')[0]["t"] == "\U0001f600"


@pytest.mark.parametrize("exact", [b"", b', "n": 123456789012345678901234567890'])
def test_nesting_up_to_the_bound_parses_and_writes_back(exact: bytes) -> None:
    body = b'{"deep":' + nested(MAX_DEPTH - 1) + exact + b"}"
    value, took_exact = parse(body)
    assert took_exact == bool(exact)
    assert json.loads(dumps(value, took_exact)) == json.loads(body)


def test_line_breakers_are_escaped_when_written_back() -> None:
    for exact in (b"", b',"n":123456789012345678901234567890'):
        value, took = parse('{"t":"a\u2028b\u2029c\u0085d"%s}'.encode() % exact)
        assert dumps(value, took).startswith(b'{"t":"a\\u2028b\\u2029c\\u0085d"')


# -- what is refused, in words ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"event":"note","data":{"text":"\\ud83d 12345678901234567890"}}',
            f"body: data.text {EMOJI_CUT}",
        ),
        (b'{"event":"note","data":{"text":"\\ud83d"}}', f"body: data.text {EMOJI_CUT}"),
        (b'{"a":[0,{"b c":"x\\uDE00"}]}', 'body: a[1]["b c"] ' + EMOJI_CUT.replace("d83d", "de00")),
        (b'"\\ud83d"', f"body: the value {EMOJI_CUT}"),
        (b'{"data":{"\\ud83d x":1}}', f'body: the key data["\\ud83d x"] {EMOJI_CUT}'),
        (b'{"\\ud83d":1}', f'body: the key ["\\ud83d"] {EMOJI_CUT}'),
        (
            b'{"data":{"\\u00e9t\\u00e9":[1,"\\ud83d"]}}',
            f'body: data["\\u00e9t\\u00e9"][1] {EMOJI_CUT}',
        ),
        (
            b'{"data":1e400}',
            "body: data is a number beyond a 64-bit float (1e400): send it as a string",
        ),
        (
            b'{"n":12345678901234567890,"data":[-1e999]}',
            "body: data[0] is a number beyond a 64-bit float (-1e999): send it as a string",
        ),
        (
            b'{"n":%s}' % (b"1" * 4301),
            "body: n is an integer of 4301 digits (at most 4300): send it as a string",
        ),
        (
            b'"\xff"',
            "body: not valid UTF-8 JSON (byte 0xff at position 1 is not UTF-8: invalid start byte)",
        ),
        (
            b'"\xed\xa0\xbd"',  # a surrogate encoded: not UTF-8 either
            "body: not valid UTF-8 JSON "
            "(byte 0xed at position 1 is not UTF-8: invalid continuation byte)",
        ),
        (b"[" * 300 + b"]" * 300, f"body: {NESTING}"),
        (b"[" * 5000 + b"]" * 5000, f"body: {NESTING}"),
        (b'{"n":12345678901234567890,"d":' + nested(MAX_DEPTH) + b"}", f"body: {NESTING}"),
        (b'["\\ud83d",' + nested(MAX_DEPTH) + b"]", f"body: {NESTING}"),  # (the body's first)
    ],
)
def test_refused_with_where_and_why(body: bytes, reason: str) -> None:
    assert refused(body) == reason


@pytest.mark.parametrize(
    "body",
    [b"NaN", b"[Infinity]", b'{"a":-Infinity}', b'{"a":NaN,"n":12345678901234567890}', b"{nope"],
)
def test_what_is_not_json_is_refused_as_such(body: bytes) -> None:
    assert refused(body).startswith("body: not valid UTF-8 JSON (")


def test_the_reason_names_the_part_it_parses() -> None:
    assert refused(b'"\\ud83d"', "presence").startswith("presence: the value holds")


def test_a_long_place_is_cut_and_odd_keys_are_quoted_in_ascii() -> None:
    body = json.dumps({"k" * 200: {'é 😀"\\\n': ["\ud83d"]}}).encode()
    reason = refused(body)
    assert reason.startswith("body: " + "k" * 117 + "... " + EMOJI_CUT[:22])
    body = json.dumps({'é 😀"\\\n': ["\ud83d"]}).encode()
    assert refused(body) == f'body: ["\\u00e9 \\ud83d\\ude00\\"\\\\\\u000a"][0] {EMOJI_CUT}'
    reason = refused(json.dumps({"x y" * 20: "\ud83d"}).encode())
    assert reason == f'body: ["{"x y" * 12}...] {EMOJI_CUT}'


@pytest.mark.parametrize("body", [b'"\\ud83d"', b"[" * 300 + b"]" * 300, b'{"a":1e400}'])
def test_every_reason_is_one_line_of_utf8(body: bytes) -> None:
    reason = refused(body)
    assert "\n" not in reason and reason.encode("utf-8")


# -- a batch: items on their own ----------------------------------------------------------


def test_a_lone_surrogate_refuses_its_item_alone() -> None:
    body = b'[{"a":1},{"t":"\\ud83d 12345678901234567890"},{"b":2},{"c":["x","\\udfff"]}]'
    value, exact, faults = parse_items(body)
    assert exact and [set(item) for item in value] == [{"a"}, {"t"}, {"b"}, {"c"}]
    assert faults == {1: f"t {EMOJI_CUT}", 3: "c[1] " + EMOJI_CUT.replace("d83d", "dfff")}


def test_each_item_may_nest_up_to_the_bound() -> None:
    item = nested(MAX_DEPTH)
    assert parse_items(b"[" + item + b"," + item + b"]")[2] == {}
    with pytest.raises(InvalidMessage, match=re.escape(f"body: item 1: {NESTING}")):
        parse_items(b"[1," + nested(MAX_DEPTH + 1) + b"]")
    with pytest.raises(InvalidMessage, match=re.escape(f"body: {NESTING}")):
        parse(b"[" + item + b"]")


def test_other_faults_of_an_item_refuse_the_whole_body() -> None:
    with pytest.raises(InvalidMessage, match="1e400"):
        parse_items(b'[{"a":"\\ud83d"},{"b":1e400}]')


def test_a_clean_batch_has_no_faults() -> None:
    assert parse_items(b'[{"a":1}]') == ([{"a": 1}], False, {})


# -- internal messages: event data as a string --------------------------------------------


@pytest.mark.parametrize("data", ['{"a":1}', "null", '"x"', "1" * 400, '{"n":' + "9" * 30 + "}"])
def test_data_text_that_is_one_line_of_json_passes(data: str) -> None:
    check_text(data, "data")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('{"a":\n1}', "data: must be one line of JSON (it holds a line break)"),
        ('"a"\r', "data: must be one line of JSON (it holds a line break)"),
        ('"a\u2028"', "data: must be one line of JSON (it holds a line break)"),
        ("{nope", "data: not valid UTF-8 JSON ("),
        ("", "data: not valid UTF-8 JSON ("),
        ('"\ud83d"', "data: not valid UTF-8 JSON (byte 0xed at position 1 is not UTF-8"),
        ("1e400", "data: the value is a number beyond a 64-bit float"),
    ],
)
def test_data_text_that_is_not_is_refused(data: str, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_text(data, "data")
    assert str(info.value).startswith(reason)


# -- the publisher's side: the same words, before sending ---------------------------------


def test_fault_finds_a_lone_surrogate_where_the_hub_would() -> None:
    doc = {"event": "note", "data": {"text": "\ud83d 12345678901234567890"}}
    assert fault(doc) == f"data.text {EMOJI_CUT}"
    hub = refused(json.dumps(doc).encode())
    assert hub == f"body: {fault(doc)}"


def test_fault_looks_at_keys_tuples_and_subclasses() -> None:
    class Text(str):
        pass

    assert fault({"data": ({"ok": 1}, [Text("\ud83d")])}) == f"data[1][0] {EMOJI_CUT}"
    assert fault({"data": {"\ud83d": 1}}) == f'the key data["\\ud83d"] {EMOJI_CUT}'
    assert fault({"data": {"ok": "😀", "n": 10**30, "f": 1.5}}) is None
    assert fault({"data": {(1, 2): ["\ud83d"]}}) == f'data["(1, 2)"][0] {EMOJI_CUT}'  # (orjson: no)


def test_fault_says_nesting_and_survives_a_cycle() -> None:
    deep: list[object] = []
    deep.append(deep)
    assert fault({"data": deep}) == f"data: {NESTING}"
    value: object = 1
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert fault({"data": value}) is None  # the message's own level makes MAX_DEPTH
    assert fault({"data": [value]}) == f"data: {NESTING}"


def test_fault_refuses_non_finite_numbers_only_when_asked() -> None:
    assert fault({"data": [math.nan]}) is None  # orjson writes null, as JSON.stringify does
    assert fault({"data": [math.inf]}, finite=True) == (
        "data[0] is not a finite number (inf): JSON has no NaN or Infinity"
    )


# -- properties ---------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_whatever_json_comes_in_comes_back_the_same(value: object, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    parsed, exact = parse(body)
    assert parsed == value or (isinstance(value, float) and parsed == value)
    again = dumps(parsed, exact)
    assert json.loads(again) == value
    assert b"\n" not in again and b"\r" not in again
    assert fault({"data": value}) is None


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["\ud83d", "\udc00", "\udbff"]), st.data())
def test_a_lone_surrogate_anywhere_is_found_in_the_same_place_by_both_sides(
    value: object, lone: str, data: st.DataObject
) -> None:
    doc = {"event": "e", "data": [value, data.draw(texts) + lone]}
    body = json.dumps(doc).encode()
    words = refused(body)
    assert words.startswith("body: ") and "lone surrogate" in words
    assert words == f"body: {fault(doc)}"
