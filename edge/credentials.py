"""Where a request's token comes from: ``?token=``, ``Authorization: Bearer``,
``X-Auth-Token``, the configured cookie, in that order. Pure: the route hands
over the raw values.

With ``SSEHUB_QUERY_TOKENS=false`` a request whose URL has a ``token``
parameter is refused (``query_token_disabled``), whatever else it carries: the
token in the URL has reached the logs and history the setting is there to keep
it out of, and a client that a header happens to rescue would go on putting it
there unnoticed.

A token from the cookie is sent by the browser whatever page asks for the
stream, so it counts only from a page of an allowed origin (``origin_allowed``):
the edge's own, or one of ``SSEHUB_CORS_ORIGINS``. A token in the URL or a
header was put there by a page that had it: no such check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ssehub.errors import AuthError
from starlette.requests import cookie_parser

COOKIE = "cookie"  # ``find_token``'s source for the cookie; the others are "query", "header"
DEFAULT_PORTS = {"http": 80, "https": 443}


def extract_token(
    query_token: str | None,
    authorization: str | None,
    x_auth_token: str | None,
    cookie: str | None = None,
    *,
    query_allowed: bool = True,
) -> str:
    """The request's token: ``?token=``, then ``Authorization: Bearer``, then
    ``X-Auth-Token``, then ``cookie`` (the value of the ``SSEHUB_JWT_COOKIE`` cookie).
    ``query_token`` is None when the URL has no ``token`` parameter, "" when it
    is there but empty; ``query_allowed``: ``SSEHUB_QUERY_TOKENS``.

    A non-Bearer ``Authorization`` header (say, Basic added by a proxy) is an
    error only when no other method supplies a token.
    """
    return find_token(
        query_token, authorization, x_auth_token, cookie, query_allowed=query_allowed
    )[0]


def find_token(
    query_token: str | None,
    authorization: str | None,
    x_auth_token: str | None,
    cookie: str | None = None,
    *,
    query_allowed: bool = True,
) -> tuple[str, str]:
    """``extract_token``, and where the token came from: "query", "header" or
    ``COOKIE``."""
    if query_token is not None and not query_allowed:
        raise AuthError(
            "query_token_disabled",
            "This service refuses tokens in the URL (they end up in logs and browser "
            f"history): send the token {_NOT_IN_THE_URL}.",
        )
    query, header, x_auth, from_cookie = (
        v.strip() if v else "" for v in (query_token, authorization, x_auth_token, cookie)
    )
    if query:
        return query, "query"
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), "header"
    if x_auth:
        return x_auth, "header"
    if from_cookie:
        return from_cookie, COOKIE
    if header:
        raise AuthError("invalid_request", "The Authorization header must be 'Bearer <token>'.")
    raise AuthError(
        "missing_token",
        "No token: send ?token=, an 'Authorization: Bearer' header, an X-Auth-Token header"
        " or, where configured, the token cookie."
        if query_allowed
        else f"No token: send it {_NOT_IN_THE_URL}.",
    )


_NOT_IN_THE_URL = (
    "in an 'Authorization: Bearer' header, an X-Auth-Token header or, where configured, "
    "the token cookie"
)


def cookie_value(header: str | None, name: str | None) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None.

    Parsed the way browsers send it (``a=1; b=2``), leniently: one malformed
    cookie of some other app on the domain does not hide ours (unlike
    ``http.cookies.SimpleCookie``, which gives up on the whole header).
    """
    if not header or not name:
        return None
    return cookie_parser(header).get(name)


def origin_allowed(origin: str, scheme: str, host: str | None, allowed: list[str]) -> bool:
    """Whether a page of ``origin`` (a request's ``Origin`` header) may use the
    token cookie: it is the edge's own origin (``scheme``, as uvicorn sets it
    from a trusted proxy's X-Forwarded-Proto, and the ``Host`` header) or one of
    ``allowed`` (SSEHUB_CORS_ORIGINS; "*" allows none: the edge refuses it with
    a cookie). Compared as RFC 6454 origins: case-insensitive, default ports
    implied."""
    theirs = _origin(origin)
    if theirs is None:  # "null" (a sandboxed frame, a file), or garbage
        return False
    if host and theirs == _origin(f"{scheme}://{host}"):
        return True
    return any(theirs == _origin(a) for a in allowed if a != "*")


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, or None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]
