"""Where a request's token comes from: ``?token=``, ``Authorization: Bearer``,
``X-Auth-Token``, the configured cookie, in that order. Pure: the route hands
over the raw values.

With ``SSEHUB_QUERY_TOKENS=false`` a request whose URL has a ``token``
parameter is refused (``query_token_disabled``), whatever else it carries: the
token in the URL has reached the logs and history the setting is there to keep
it out of, and a client that a header happens to rescue would go on putting it
there unnoticed.
"""

from __future__ import annotations

from ssehub.errors import AuthError
from starlette.requests import cookie_parser


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
        return query
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if x_auth:
        return x_auth
    if from_cookie:
        return from_cookie
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
