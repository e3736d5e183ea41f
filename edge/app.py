"""The edge's FastAPI application: routes, lifespan, CORS."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any

import ssehub
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from ssehub.config import Settings
from ssehub.edge.admission import Admission
from ssehub.edge.auth import TokenVerifier
from ssehub.edge.context import EdgeContext
from ssehub.edge.lifecycle import pinger
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.node import EdgeNode
from ssehub.edge.registry import Registry
from ssehub.edge.route import PATH, StreamRoute
from ssehub.errors import SsehubError, StoreUnavailable, unwrap
from ssehub.fastpath.transport import RAW_SEND
from ssehub.storage.db import create_engine
from ssehub.storage.identity import store_identity
from ssehub.storage.reach import describe, open_store
from ssehub.storage.store import EventStore
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ssehub.edge")

Extra = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(settings: Settings, *, extra: Extra | None = None) -> FastAPI:
    """``extra``: a lifespan nested inside the edge's (``ssehub dev`` runs the
    dispatcher and the demo routes that way)."""
    settings.require_jwt()
    verifier = TokenVerifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        try:
            # `ssehub edge` and `ssehub dev` wait for the store before the server
            # starts (cli/serve.py); this covers one that went away since
            await open_store(engine, name="ssehub-edge", max_delay=settings.reconnect_max_delay)
            # checked with RabbitMQ on every link, before the node consumes
            identity = await store_identity(engine, settings.database_url)
        except SsehubError as exc:
            await engine.dispose()
            app.state.failure = exc  # said in one line (EdgeApp, ssehub.cli.serve)
            raise
        registry = Registry()
        # app.state.guard: the connection guard, when edge/server.py serves with one
        metrics = EdgeMetrics(getattr(app.state, "guard", None))
        store = EventStore(engine)
        node = EdgeNode(settings, registry, metrics, store, identity)
        ctx = EdgeContext(settings, store, registry, node, metrics)
        app.state.edge = ctx
        running = asyncio.create_task(node.run(pinger(ctx)), name="edge-node")
        running.add_done_callback(functools.partial(_stopped, app))
        try:
            if extra is None:
                yield
            else:
                try:
                    async with extra(app):
                        yield
                except SsehubError as exc:
                    app.state.failure = exc
                    raise
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await engine.dispose()

    app = EdgeApp(
        verifier,
        _cors(settings),
        cookie=settings.jwt_cookie,
        query_tokens=settings.query_tokens,
        title="ssehub edge",
        version=ssehub.__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz(request: Request) -> JSONResponse:
        ctx: EdgeContext = request.app.state.edge
        problems = []
        if ctx.draining:
            problems.append("draining")
        if not ctx.node.ready:
            problems.append("rabbitmq: not connected")
        try:
            await ctx.store.ping()
        except StoreUnavailable as exc:
            problems.append(f"store: {describe(exc, ctx.store.engine.url)}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "connections": len(ctx.registry)})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        ctx: EdgeContext = request.app.state.edge
        ctx.metrics.users.set(len(ctx.node.seam.routed))
        ctx.metrics.tasks.set(len(asyncio.all_tasks()))
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    helper = resources.files("ssehub.edge").joinpath("static/ssehub.js").read_bytes()

    # HEAD as well as GET, like any static file (FastAPI adds no HEAD by itself)
    @app.api_route("/ssehub.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def ssehub_js() -> Response:
        # the browser helper (SPEC "Browser helper"); short cache: it changes with upgrades
        return Response(
            helper,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return app


class EdgeApp(FastAPI):
    """FastAPI, with ``GET /sse/connect`` answered in front of its whole
    middleware stack (edge/route.py), connections over the bound answered in
    front of that (edge/admission.py), and CORS around all. A lifespan that
    fails with an SsehubError (a setting, the store) is not reported with its
    traceback: ``app.state.failure`` holds it, for one line (ssehub.cli.serve)."""

    def __init__(
        self,
        verifier: TokenVerifier,
        cors: dict[str, Any] | None,
        cookie: str | None = None,
        query_tokens: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._verifier = verifier
        self._cors = cors
        self._cookie = cookie
        self._query_tokens = query_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._failure_said_once(send))
            return
        if scope["type"] == "http" and scope["path"] == PATH:
            # Past FastAPI's own __call__: its OpenTelemetry check reads
            # os.environ on every request (~4 % of opening a stream), and a span
            # as long as a stream would say nothing. Other routes keep it.
            scope[RAW_SEND] = send
            await Starlette.__call__(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _failure_said_once(self, send: Send) -> Send:
        """Starlette sends a failed lifespan's traceback for the server to log; for
        an SsehubError, its one line (``app.state.failure``) is said elsewhere."""

        async def sending(message: Message) -> None:
            failed = getattr(self.state, "failure", None)
            if message["type"].endswith(".failed") and failed is not None:
                message = {"type": message["type"], "message": ""}
            await send(message)

        return sending

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = StreamRoute(
            super().build_middleware_stack(),
            state=self.state,
            verifier=self._verifier,
            cookie=self._cookie,
            query_tokens=self._query_tokens,
        )
        app = Admission(app, state=self.state)  # connections over SSEHUB_MAX_CONNECTIONS
        if self._cors is not None:
            app = CORSMiddleware(app, **self._cors)
        return app


def _stopped(app: FastAPI, running: asyncio.Task[None]) -> None:
    """The node's background work ended by itself: a bug (or a setting the
    broker refused). The edge no longer works, so it must not go on serving:
    the server that runs it (edge/server.py) stops, and the process fails."""
    if running.cancelled():
        return
    failure = running.exception()
    if failure is None:
        return
    exc = unwrap(failure)
    fatal: Callable[[BaseException], None] | None = getattr(app.state, "fatal", None)
    if fatal is not None:
        fatal(exc)
    else:
        log.critical("the edge's background work failed; it no longer works", exc_info=exc)


def _cors(settings: Settings) -> dict[str, Any] | None:
    origins = settings.cors_origins
    if not origins:
        return None
    # "*" is answered by echoing the caller's origin: EventSource(withCredentials)
    # refuses a literal "*" in Access-Control-Allow-Origin, and a cookie token
    # needs credentials. Starlette adds "Vary: Origin" to every echoed origin.
    any_origin = "*" in origins
    return {
        "allow_origins": [] if any_origin else origins,
        "allow_origin_regex": ".*" if any_origin else None,
        "allow_credentials": True,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "X-Auth-Token", "Last-Event-ID", "Content-Type"],
    }
