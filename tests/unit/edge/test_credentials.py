"""ssehub.edge.credentials: where a request's token comes from."""

from __future__ import annotations

import pytest
from ssehub.edge.credentials import (
    COOKIE,
    cookie_value,
    extract_token,
    find_token,
    origin_allowed,
)
from ssehub.errors import AuthError


def test_query_token() -> None:
    assert extract_token("abc", None, None) == "abc"


@pytest.mark.parametrize("header", ["Bearer abc", "bearer abc", "BEARER  abc ", "  Bearer abc"])
def test_bearer_header(header: str) -> None:
    assert extract_token(None, header, None) == "abc"


def test_x_auth_token() -> None:
    assert extract_token(None, None, "abc") == "abc"


def test_precedence() -> None:
    assert extract_token("q", "Bearer h", "x") == "q"
    assert extract_token(None, "Bearer h", "x") == "h"
    assert extract_token("", "Bearer h", "x") == "h"
    assert extract_token(None, "", "x") == "x"


@pytest.mark.parametrize("args", [(None, None, None), ("", "", ""), (" ", None, "  ")])
def test_missing_token(args: tuple[str | None, str | None, str | None]) -> None:
    with pytest.raises(AuthError) as info:
        extract_token(*args)
    assert info.value.code == "missing_token"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Token abc", "Bearer", "Bearer   ", "abc"]
)
def test_non_bearer_authorization(header: str) -> None:
    with pytest.raises(AuthError) as info:
        extract_token(None, header, None)
    assert info.value.code == "invalid_request"
    assert "dXNlcjpwYXNz" not in info.value.message


def test_non_bearer_authorization_yields_to_other_methods() -> None:
    # A proxy's Basic credentials must not hide a token sent another way.
    assert extract_token("q", "Basic dXNlcjpwYXNz", None) == "q"
    assert extract_token(None, "Basic dXNlcjpwYXNz", "x") == "x"


def test_cookie_is_the_last_source() -> None:
    assert extract_token(None, None, None, "c") == "c"
    assert extract_token(None, None, "x", "c") == "x"
    assert extract_token(None, "Bearer h", None, "c") == "h"
    assert extract_token("q", None, None, "c") == "q"
    # a proxy's Basic credentials do not hide the cookie either
    assert extract_token(None, "Basic dXNlcjpwYXNz", None, "c") == "c"


@pytest.mark.parametrize("cookie", [None, "", "  "])
def test_empty_cookie_is_no_token(cookie: str | None) -> None:
    with pytest.raises(AuthError) as info:
        extract_token(None, None, None, cookie)
    assert info.value.code == "missing_token"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("sse_token=abc", "abc"),
        ("theme=dark; sse_token=abc; lang=en", "abc"),
        ("theme=dark;sse_token=abc", "abc"),
        ('sse_token="abc"', "abc"),
        # someone else's malformed cookie on the domain does not hide ours
        ('bad"cookie; =x; sse_token=abc', "abc"),
        ("theme=dark", None),
        ("xsse_token=abc", None),
        ("", None),
        (None, None),
    ],
)
def test_cookie_value(header: str | None, value: str | None) -> None:
    assert cookie_value(header, "sse_token") == value


def test_cookie_value_when_off() -> None:
    assert cookie_value("sse_token=abc", None) is None


# -- SSEHUB_QUERY_TOKENS=false ----------------------------------------------------
@pytest.mark.parametrize(
    "other",
    [
        (None, None, None),
        ("Bearer h", None, None),
        (None, "x", None),
        (None, None, "from-cookie"),
    ],
    ids=["alone", "with-bearer", "with-x-auth-token", "with-cookie"],
)
@pytest.mark.parametrize("query", ["abc", "", "  "], ids=["token", "empty", "blank"])
def test_a_token_parameter_is_refused_whatever_else_comes(
    query: str, other: tuple[str | None, str | None, str | None]
) -> None:
    header, x_auth, cookie = other
    with pytest.raises(AuthError) as info:
        extract_token(query, header, x_auth, cookie, query_allowed=False)
    assert info.value.code == "query_token_disabled"
    assert "URL" in info.value.message and "Authorization: Bearer" in info.value.message
    assert query.strip() == "" or query not in info.value.message  # never the token


def test_without_query_tokens_the_other_sources_still_work() -> None:
    assert extract_token(None, "Bearer h", None, query_allowed=False) == "h"
    assert extract_token(None, None, "x", query_allowed=False) == "x"
    assert extract_token(None, None, None, "c", query_allowed=False) == "c"


def test_without_query_tokens_a_missing_token_does_not_suggest_the_url() -> None:
    with pytest.raises(AuthError) as info:
        extract_token(None, None, None, query_allowed=False)
    assert info.value.code == "missing_token"
    assert "?token=" not in info.value.message


# -- where the token came from, and the cookie's origins --------------------------


def test_find_token_says_where_it_came_from() -> None:
    assert find_token("q", "Bearer h", "x", "c") == ("q", "query")
    assert find_token(None, "Bearer h", "x", "c") == ("h", "header")
    assert find_token(None, None, "x", "c") == ("x", "header")
    assert find_token(None, "Basic abc", None, "c") == ("c", COOKIE)


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "allowed", "ok"),
    [
        ("http://127.0.0.1:8000", "http", "127.0.0.1:8000", [], True),  # the edge's own
        ("https://chat.example", "https", "chat.example", [], True),
        ("https://chat.example", "https", "chat.example:443", [], True),  # default port
        ("HTTPS://Chat.Example", "https", "chat.example", [], True),
        ("https://chat.example", "http", "chat.example", [], False),  # scheme matters
        ("http://127.0.0.1:8001", "http", "127.0.0.1:8000", [], False),  # port matters
        ("https://app.example", "http", "edge", ["https://app.example"], True),
        ("https://app.example", "http", "edge", ["https://app.example:443/"], True),
        ("https://app.example.evil", "http", "edge", ["https://app.example"], False),
        ("https://evil.example", "http", "edge", ["*"], False),  # "*" allows no cookie
        ("null", "http", "edge", ["null"], False),  # sandboxed frames, files
        ("https://user@app.example", "http", "edge", ["https://app.example"], False),
        ("https://app.example/path", "http", "edge", ["https://app.example"], False),
        ("https://app.example:99999", "http", "edge", ["https://app.example"], False),
        ("ftp://app.example", "http", "edge", ["ftp://app.example"], False),
        ("https://app.example", "http", None, [], False),  # no Host: not the own origin
    ],
)
def test_origin_allowed(
    origin: str, scheme: str, host: str | None, allowed: list[str], ok: bool
) -> None:
    assert origin_allowed(origin, scheme, host, allowed) is ok
