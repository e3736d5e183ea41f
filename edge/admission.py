"""The answer to a connection over the edge's bound (SSEHUB_MAX_CONNECTIONS).

The guard (ssehub.fastpath.guard) marks the request of a connection that
opened over the bound and closes that connection after one answer; this
middleware gives the answer, inside CORS so a page on another origin can read
it:

- ``GET /sse/connect``: what the contract gives a stream when the edge is
  overloaded, ``200`` with a short jittered ``retry:`` (``RetryLater``), so
  the browser's EventSource comes back (it gives up for good on a 5xx);
- ``/healthz``, ``/readyz``, ``/metrics``: answered as usual. A full edge is
  alive and serves its streams: a liveness probe that failed would have it
  restarted, every stream with it; and it stays observable;
- anything else: ``503`` with a jittered ``Retry-After`` and a short JSON body.
"""

from __future__ import annotations

import logging
import random

from ssehub.edge.context import EdgeContext
from ssehub.edge.response import RetryLater
from ssehub.edge.route import PATH
from ssehub.fastpath.guard import OVER_BOUND
from starlette.datastructures import State
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("ssehub.edge")

SERVED_OVER_BOUND = frozenset({"/healthz", "/readyz", "/metrics"})
OVER_CAPACITY = {
    "error": "over_capacity",
    "message": "This edge holds as many connections as it may; try again shortly.",
}
RETRY_AFTER = (1, 5)  # seconds, jittered: the refused do not come back together


class Admission:
    def __init__(self, app: ASGIApp, *, state: State) -> None:
        self._app = app
        self._state = state  # the app's: the lifespan puts the EdgeContext there

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if OVER_BOUND not in scope or scope["path"] in SERVED_OVER_BOUND:
            await self._app(scope, receive, send)
            return
        ctx: EdgeContext = self._state.edge
        answer: Response
        if scope["path"] == PATH and scope["method"] == "GET":
            ctx.metrics.refused.labels("retry").inc()
            answer = RetryLater()
        else:
            ctx.metrics.refused.labels("unavailable").inc()
            answer = JSONResponse(
                OVER_CAPACITY,
                status_code=503,
                headers={"Retry-After": str(random.randint(*RETRY_AFTER))},
            )
        answer.raw_headers.append((b"connection", b"close"))
        await answer(scope, receive, send)
