"""Where a request's token comes from: ``?token=``, ``Authorization: Bearer``,
``X-Auth-Token``, in that order. Pure: the route hands over the raw values."""

from __future__ import annotations

from ssehub.errors import AuthError


def extract_token(
    query_token: str | None, authorization: str | None, x_auth_token: str | None
) -> str:
    """The request's token: ``?token=``, then ``Authorization: Bearer``, then ``X-Auth-Token``.

    A non-Bearer ``Authorization`` header (say, Basic added by a proxy) is an
    error only when no other method supplies a token.
    """
    query, header, x_auth = (
        v.strip() if v else "" for v in (query_token, authorization, x_auth_token)
    )
    if query:
        return query
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if x_auth:
        return x_auth
    if header:
        raise AuthError("invalid_request", "The Authorization header must be 'Bearer <token>'.")
    raise AuthError(
        "missing_token",
        "No token: send ?token=, an 'Authorization: Bearer' header or an X-Auth-Token header.",
    )
