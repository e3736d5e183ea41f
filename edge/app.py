"""The edge's FastAPI application: routes, lifespan, CORS, and which port serves what.

With ``SSEHUB_OPS_PORT`` the ops endpoints (``OPS_PATHS``) are served on that
port only, and it serves nothing else; the public port keeps ``/healthz`` (a
load balancer checks the port it sends traffic to, and it says nothing). The
server binds the ops port and says which it is (``app.state.ops_port``); a
request's port is the one its connection was accepted on (``scope["server"]``).
Without it the public port serves them all, as before, but ``/readyz`` says
"store: unavailable" only: the store's host, database and user are for the log
and the ops port.
"""

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
from ssehub.edge.replays import ReplayBudget
from ssehub.edge.route import PATH, StreamRoute
from ssehub.errors import ConfigError, SsehubError, StoreUnavailable, unwrap
from ssehub.fastpath.transport import RAW_SEND
from ssehub.storage.db import create_engine
from ssehub.storage.identity import store_identity
from ssehub.storage.reach import describe, open_store
from ssehub.storage.store import EventStore
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ssehub.edge")

Extra = Callable[[FastAPI], AbstractAsyncContextManager[None]]
# what the ops port serves (FastAPI's /docs asks for /openapi.json and the redirect)
OPS_PATHS = frozenset(
    {"/metrics", "/readyz", "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
)
PUBLIC_TOO = frozenset({"/healthz"})  # of those, what the public port serves as well
NOT_FOUND = {"detail": "Not Found"}


def create_app(settings: Settings, *, extra: Extra | None = None) -> FastAPI:
    """``extra``: a lifespan nested inside the edge's (``ssehub dev`` runs the
    dispatcher and the demo routes that way)."""
    settings.require_jwt()
    if settings.jwt_cookie and "*" in settings.cors_origins:
        raise ConfigError(
            "SSEHUB_CORS_ORIGINS=* cannot go with SSEHUB_JWT_COOKIE: any web page could read "
            "a signed-in user's stream; list the origins that may open streams"
        )
    verifier = TokenVerifier(settings)
    ops = settings.ops_port is not None

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
        origins=settings.cors_origins,
        ops_port=settings.ops_port,
        replays=ReplayBudget(settings.replay_rate, settings.replay_burst),
        title="ssehub edge",
        version=ssehub.__version__,
        lifespan=lifespan,
        docs_url="/docs" if ops else None,  # on the ops port only
        redoc_url=None,
    )
    store_said: list[str | None] = [None]  # the store's last problem logged by /readyz

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
            detail = describe(exc, ctx.store.engine.url)
            if detail != store_said[0]:  # once, not at every probe
                log.warning("readiness: the store is unavailable: %s", detail)
                store_said[0] = detail
            # the store's host, database and user: not for the public port
            problems.append(f"store: {detail}" if on_ops_port(request.scope) else _NO_STORE)
        else:
            store_said[0] = None
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


_NO_STORE = "store: unavailable"


def on_ops_port(scope: Scope) -> bool:
    """Whether the request came in on the edge's ops port (SSEHUB_OPS_PORT)."""
    port = scope["app"].ops_port if "app" in scope else None
    server = scope.get("server")
    return port is not None and server is not None and server[1] == port


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
        origins: list[str] | None = None,
        ops_port: int | None = None,
        replays: ReplayBudget | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._verifier = verifier
        self._cors = cors
        self._cookie = cookie
        self._query_tokens = query_tokens
        self._origins = origins
        self._ops_port = ops_port
        self.replays = replays

    @property
    def ops_port(self) -> int | None:
        """The ops port: as bound by the server (``state.ops_port``: SSEHUB_OPS_PORT=0
        is any free one), else as configured; None without one."""
        if self._ops_port is None:
            return None
        bound: int | None = getattr(self.state, "ops_port", None)
        return self._ops_port if bound is None else bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._failure_said_once(send))
            return
        if self._ops_port is not None and scope["type"] == "http" and not self._here(scope):
            await JSONResponse(NOT_FOUND, status_code=404)(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == PATH:
            # Past FastAPI's own __call__: its OpenTelemetry check reads
            # os.environ on every request (~4 % of opening a stream), and a span
            # as long as a stream would say nothing. Other routes keep it.
            scope[RAW_SEND] = send
            await Starlette.__call__(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _here(self, scope: Scope) -> bool:
        """Whether the port the request came in on serves its path."""
        path = scope["path"]
        server = scope.get("server")
        if server is not None and server[1] == self.ops_port:
            return path in OPS_PATHS
        return path not in OPS_PATHS or path in PUBLIC_TOO

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
            origins=self._origins,
            replays=self.replays,
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
    # "*" is answered with a literal "*" and no credentials: a page of any origin
    # may open a stream with a token it holds (in the URL), never read one that
    # rides on the browser's credentials. Listed origins are echoed, with
    # credentials (EventSource(withCredentials), a cookie token), and "Vary: Origin".
    any_origin = "*" in origins
    return {
        "allow_origins": ["*"] if any_origin else origins,
        "allow_credentials": not any_origin,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "X-Auth-Token", "Last-Event-ID", "Content-Type"],
    }
