"""``GET /sse/connect`` as plain ASGI, ahead of FastAPI's routing.

Opening a stream is the edge's hottest request (a reconnect storm is
thousands of them), and FastAPI's routing, dependency solving and middleware
around an endpoint cost about a fifth of it. This middleware answers the
path itself: the token and ``Last-Event-ID`` straight from the ASGI scope,
then 401 (a bad token), 403 (the token cookie sent from a page of an origin
that may not use it: edge/credentials.py), a short ``retry:``, or the
stream. Everything else goes on to FastAPI (edge/app.py puts it in front of
the whole FastAPI stack, inside CORS, so cross-origin ``EventSource`` works
the same).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from ssehub.edge.auth import TokenVerifier
from ssehub.edge.context import EdgeContext
from ssehub.edge.credentials import COOKIE, cookie_value, find_token, origin_allowed
from ssehub.edge.replays import ReplayBudget, retry_ms
from ssehub.edge.response import RetryLater, StreamResponse, refuse
from ssehub.errors import AuthError
from ssehub.sse import parse_last_event_id
from starlette.datastructures import State
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PATH = "/sse/connect"
log = logging.getLogger("ssehub.edge")
ORIGIN_NOT_ALLOWED = {
    "error": "origin_not_allowed",
    "message": "The token cookie is not accepted from a page of this origin; list the "
    "origin in SSEHUB_CORS_ORIGINS, or send the token another way.",
}
TOO_MANY_STREAMS = {
    "error": "too_many_streams",
    "message": "This user has the most streams open that are allowed; close one first.",
}


class StreamRoute:
    def __init__(
        self,
        app: ASGIApp,
        *,
        state: State,
        verifier: TokenVerifier,
        cookie: str | None = None,
        query_tokens: bool = True,
        origins: list[str] | None = None,
        replays: ReplayBudget | None = None,
    ) -> None:
        self._app = app
        self._state = state  # the app's: the lifespan puts the EdgeContext there
        self._verifier = verifier
        self._cookie = cookie  # SSEHUB_JWT_COOKIE: the cookie holding a token, if any
        self._query_tokens = query_tokens  # SSEHUB_QUERY_TOKENS
        self._origins = origins or []  # SSEHUB_CORS_ORIGINS: may use the cookie too
        self._replays = replays  # SSEHUB_REPLAY_RATE (edge/replays.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self._app(scope, receive, send)
            return
        if scope["method"] != "GET":
            await JSONResponse(
                {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "GET"}
            )(scope, receive, send)
            return
        ctx: EdgeContext = self._state.edge
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        headers = _headers(
            scope,
            (b"authorization", b"x-auth-token", b"last-event-id", b"cookie", b"origin", b"host"),
        )
        try:
            raw, source = find_token(
                query.get("token"),
                headers[0],
                headers[1],
                cookie_value(headers[3], self._cookie),
                query_allowed=self._query_tokens,
            )
            origin = headers[4]
            if (
                source == COOKIE
                and origin is not None
                and not origin_allowed(origin, scope["scheme"], headers[5], self._origins)
            ):
                ctx.metrics.auth_failures.inc()
                log.info(
                    "refused a stream: 403 origin_not_allowed (Origin %r)",
                    origin[:200],
                    extra={"reason": "origin_not_allowed", "status": 403},
                )
                await JSONResponse(ORIGIN_NOT_ALLOWED, status_code=403)(scope, receive, send)
                return
            identity = self._verifier.verify(raw)
        except AuthError as exc:
            ctx.metrics.auth_failures.inc()
            # why, never the token: the code names the cause (token_expired, ...)
            log.info(
                "refused a stream: 401 %s",
                exc.code,
                extra={"reason": exc.code, "status": 401},
            )
            await refuse(exc)(scope, receive, send)
            return
        if ctx.draining or not ctx.node.ready:
            ctx.metrics.retry_later.inc()
            await RetryLater()(scope, receive, send)
            return
        if ctx.caps.full(identity.user_id):
            log.info(
                "refused a stream: 429 too_many_streams",
                extra={"reason": "too_many_streams", "status": 429, "user": identity.user_id},
            )
            await JSONResponse(TOO_MANY_STREAMS, status_code=429)(scope, receive, send)
            return
        last_event_id = parse_last_event_id(headers[2] or query.get("lastEventId"))
        if last_event_id is not None and self._replays is not None:
            # a user in replay debt is sent away before any work is done for it
            wait = self._replays.wait(identity.user_id, 1, time.monotonic())
            if wait > 0:
                ctx.metrics.retry_later.inc()
                await RetryLater(retry_ms(wait))(scope, receive, send)
                return
        await StreamResponse(ctx, identity, last_event_id, self._replays)(scope, receive, send)


def _headers(scope: Scope, names: tuple[bytes, ...]) -> list[str | None]:
    """The first value of each of ``names`` (lower case), like Starlette's Headers.get."""
    found: list[str | None] = [None] * len(names)
    for key, value in scope["headers"]:
        if key in names:
            i = names.index(key)
            if found[i] is None:
                found[i] = value.decode("latin-1")
    return found
