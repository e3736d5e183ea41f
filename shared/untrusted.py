"""JSON from outside the process: parsed, checked and written back by one set of rules.

Every body a dispatcher consumes (publishers' messages, ``batch`` items, and
the hub's own internal messages, validated as strictly) is parsed by
:func:`parse`; what a publisher client sends is checked by :func:`fault`
before it leaves the caller. The rules, so that whatever is accepted can be
stored and written to a browser again:

- valid UTF-8 and valid JSON (no ``NaN`` or ``Infinity``);
- no lone surrogate anywhere, keys included (``"\\ud83d"`` alone: JSON can
  spell it, UTF-8 cannot carry it; JavaScript writes it for a string cut in
  the middle of an emoji);
- no number beyond a 64-bit float (``1e400``), and integers of any size up to
  4,300 digits, kept exact;
- at most :data:`MAX_DEPTH` arrays and objects inside each other.

Refusals are :class:`InvalidMessage` with the reason in words, naming where
in the body the fault is. Pure: no I/O here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson
from ssehub.errors import InvalidMessage

# What orjson can write back (its encoder stops at 255 levels): parsed values
# that pass re-encode with orjson, and a message is checked in one call.
MAX_DEPTH = 254
MAX_INT_DIGITS = 4300  # Python's default bound on int <-> str conversions
NESTING = f"nested too deep (at most {MAX_DEPTH} arrays and objects inside each other)"
LONE_SURROGATE = (
    "holds a lone surrogate ({}) that UTF-8 cannot carry (a string cut in the middle of an emoji?)"
)

# orjson is exact for integers in [-2**63, 2**64 - 1] and turns others into
# floats; bodies with a run of 20 digits, or of 19 after a minus, take the
# exact (slower) stdlib path so that data reaches clients digit for digit.
# Found by mapping every digit to "9" and searching: a regex like \d{20,}
# backtracks through every shorter digit run.
_ALL_DIGITS = bytes.maketrans(b"012345678", b"999999999")
_NINETEEN = b"9" * 19
_TWENTY_DIGITS = b"9" * 20
_NEGATIVE_19 = b"-" + b"9" * 19
_SHALLOW_BYTES = 2 * (MAX_DEPTH + 1)  # a shorter body cannot nest deeper: two bytes a level
_LONE = re.compile("[\ud800-\udfff]")  # in a Python str, any surrogate is a lone one
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_WHERE = 120

# JSON leaves these raw, but many line readers (Python's splitlines among them)
# break lines at them; escaped, the data line stays one line for every client.
LINE_BREAKERS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def parse(body: bytes, what: str = "body", *, exact: bool = True) -> tuple[Any, bool]:
    """The JSON value of ``body``, and whether it took the exact path (write it,
    or a part of it, back with ``dumps(part, exact)``). Raises InvalidMessage
    ``"<what>: ..."``. ``exact=False``: integers beyond 64 bits may come back as
    floats (for bodies that hold no such number by construction: the hub's own)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _slow(body, what, False, exc)[0], True
    if len(body) >= _SHALLOW_BYTES:
        _check_depth(value, what, False)
    if exact and _big_numbers(body):
        return _exact(body, what), True
    return value, False


def parse_items(body: bytes, what: str = "body") -> tuple[Any, bool, dict[int, str]]:
    """A ``batch`` body: :func:`parse` for a top-level array whose elements are
    each a message: the nesting bound holds for each element, and a lone
    surrogate inside an element refuses that element alone (``{index: words}``,
    the words naming where in the element), so the others go on."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _slow(body, what, True, exc)
    if len(body) >= _SHALLOW_BYTES:
        _check_depth(value, what, True)
    if _big_numbers(body):
        return _exact(body, what), True, {}
    return value, False, {}


def dumps(value: Any, exact: bool) -> bytes:
    """Compact one-line JSON of a value :func:`parse` returned, or of a part of
    it (total for those): the ``data:`` line of an event."""
    if exact:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        out = text.encode()
    else:
        out = orjson.dumps(value)
    for raw, escaped in LINE_BREAKERS:
        if raw in out:
            out = out.replace(raw, escaped)
    return out


def check_text(data: str, what: str) -> None:
    """``data`` is one line of JSON as :func:`dumps` writes it (an internal
    message carries event data so): valid JSON by these rules, no CR, LF or
    raw line breaker. (A lone surrogate cannot be in a str parse returned.)"""
    if "\n" in data or "\r" in data or "\x85" in data or "\u2028" in data or "\u2029" in data:
        raise InvalidMessage(f"{what}: must be one line of JSON (it holds a line break)")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:  # the words, or numbers beyond 64-bit floats (exact)
        parse(data.encode("utf-8", "surrogatepass"), what)
        return
    if len(data) >= _SHALLOW_BYTES:
        _check_depth(value, what, False)


def fault(value: Any, *, finite: bool = False) -> str | None:
    """Why a value a publisher built cannot go out under these rules, in words
    (``"data.text holds a lone surrogate ..."``, ``"data: nested too deep ..."``),
    or None. Paths start at ``value``, the message's JSON object. ``finite``:
    refuse NaN and infinities too (orjson writes them as null; the exact
    encoder would write ``NaN``, which is not JSON)."""
    found = _walk(value, 1, surrogates=True, finite=finite)
    if found is None:
        return None
    where, words = found
    return f"{where} {words}" if where else f"data: {words}"


def lone_surrogate(ch: str) -> str:
    """The words for a lone surrogate, ``ch`` shown as its JSON escape."""
    return LONE_SURROGATE.format(f"\\u{ord(ch):04x}")


# -- parsing ------------------------------------------------------------------------


def _big_numbers(body: bytes) -> bool:
    digits = body.translate(_ALL_DIGITS)
    # one search in the common case: no run of 19 digits at all
    return _NINETEEN in digits and (_TWENTY_DIGITS in digits or _NEGATIVE_19 in digits)


def _check_depth(value: Any, what: str, items: bool) -> None:
    """orjson writes at most MAX_DEPTH levels: what it writes is within the bound."""
    try:
        orjson.dumps(value)
        return
    except orjson.JSONEncodeError:
        pass
    if items and isinstance(value, list):  # the array's own level is not a message's
        for index, item in enumerate(value):
            try:
                orjson.dumps(item)
            except orjson.JSONEncodeError:
                raise InvalidMessage(f"{what}: item {index}: {NESTING}") from None
        return
    raise InvalidMessage(f"{what}: {NESTING}")


def _exact(body: bytes, what: str) -> Any:
    """The stdlib's parse of a body orjson accepted: integers stay integers."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except RecursionError:  # (within MAX_DEPTH: only on an already deep stack)
        raise InvalidMessage(f"{what}: {NESTING}") from None
    except ValueError as exc:
        raise InvalidMessage(f"{what}: not valid JSON ({exc})") from None


def _slow(
    body: bytes, what: str, items: bool, error: orjson.JSONDecodeError
) -> tuple[Any, bool, dict[int, str]]:
    """orjson refused the body: say why in words, or (integers too long for a
    64-bit float, lone surrogates of batch items) take it on the exact path."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise InvalidMessage(
            f"{what}: not valid UTF-8 JSON (byte 0x{byte:02x} at position {exc.start} "
            f"is not UTF-8: {exc.reason})"
        ) from None
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise InvalidMessage(f"{what}: {NESTING}") from None
    except ValueError:  # orjson's words: the position, and what it expected there
        raise InvalidMessage(f"{what}: not valid UTF-8 JSON ({error})") from None
    top = items and isinstance(value, list)
    found = _walk(value, 0 if top else 1, surrogates=False, finite=False)
    if found is not None:  # nesting, numbers: the body's fault
        raise InvalidMessage(f"{what}: {_words(*found)}")
    problems: dict[int, str] = {}
    if "\\ud" in text or "\\uD" in text:
        for index, part in enumerate(value) if top else [(-1, value)]:
            found = _walk(part, 1, surrogates=True, finite=False)
            if found is None:
                continue
            if index < 0:
                raise InvalidMessage(f"{what}: {_words(*found)}")
            problems[index] = _words(*found)
    return value, True, problems


class _Unfit:
    """A number parsed but not kept: refused with its place in the body."""

    __slots__ = ("words",)

    def __init__(self, words: str) -> None:
        self.words = words


def _float(text: str) -> float | _Unfit:
    value = float(text)
    if math.isinf(value):
        return _Unfit(f"is a number beyond a 64-bit float ({_cut(text)}): send it as a string")
    return value


def _int(text: str) -> int | _Unfit:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Unfit(
            f"is an integer of {digits} digits (at most {MAX_INT_DIGITS}): send it as a string"
        )
    return int(text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# -- finding a fault, and where ---------------------------------------------------------


# A place in a value: None (the root), or (parent place, key or index).
Place = tuple[Any, str | int] | None


def _walk(value: Any, depth: int, *, surrogates: bool, finite: bool) -> tuple[str, str] | None:
    """The first fault in ``value`` in document order: (where, words); where is
    "" for the nesting bound. Iterative: a publisher's value may nest deeper
    than Python recurses."""
    stack: list[tuple[Any, int, Place]] = [(value, depth, None)]
    while stack:
        node, level, place = stack.pop()
        if surrogates and place is not None and isinstance(place[1], str):
            lone = _LONE.search(place[1])
            if lone:
                return f"the key {_path(place)}", lone_surrogate(lone.group())
        if isinstance(node, str):
            lone = _LONE.search(node) if surrogates else None
            if lone:
                return _path(place) or "the value", lone_surrogate(lone.group())
        elif isinstance(node, dict | list | tuple):
            if level > MAX_DEPTH:
                return "", NESTING
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((child, level + 1, (place, key)) for key, child in reversed(list(pairs)))
        elif isinstance(node, _Unfit):
            return _path(place) or "the value", node.words
        elif finite and isinstance(node, float) and not math.isfinite(node):
            words = f"is not a finite number ({node!r}): JSON has no NaN or Infinity"
            return _path(place) or "the value", words
    return None


def _words(where: str, words: str) -> str:
    return f"{where} {words}" if where else words


def _path(place: Place) -> str:
    """``data.items[3]["a b"]``: keys that are names after a dot, others quoted."""
    parts: list[str] = []
    while place is not None:
        place, key = place
        if not isinstance(key, str):  # an index (or a publisher's odd key)
            parts.append(f"[{key}]" if isinstance(key, int) else f"[{_quote(repr(key))}]")
        elif _NAME.fullmatch(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{_quote(key)}]")
    path = "".join(reversed(parts)).removeprefix(".")
    return path if len(path) <= _MAX_WHERE else path[: _MAX_WHERE - 3] + "..."


def _quote(key: str) -> str:
    """A key as a JSON string of printable ASCII (the Node client writes the same)."""
    out = []
    for ch in key:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            for unit in _utf16(ch):
                out.append(f"\\u{unit:04x}")
    text = '"' + "".join(out) + '"'
    return text if len(text) <= 40 else text[:37] + "..."


def _utf16(ch: str) -> tuple[int, ...]:
    code = ord(ch)
    if code < 0x10000:
        return (code,)
    code -= 0x10000
    return (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def _cut(text: str) -> str:
    return text if len(text) <= 24 else text[:21] + "..."
