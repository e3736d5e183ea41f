"""The edge's FastAPI application: routes, lifespan, CORS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp

from edge.auth import TokenVerifier
from edge.lifecycle import pinger
from edge.metrics import EdgeMetrics
from edge.node import EdgeNode
from edge.registry import Registry
from edge.route import StreamRoute
from edge.stream import Hub
from shared.config import Settings
from shared.db import create_engine, create_schema
from shared.errors import StoreUnavailable
from shared.store import EventStore

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
        await create_schema(engine)
        registry = Registry()
        hub = Hub(
            settings, EventStore(engine), registry, EdgeNode(settings, registry), EdgeMetrics()
        )
        app.state.hub = hub
        tasks = [
            asyncio.create_task(hub.node.supervisor.run(), name="edge-amqp"),
            asyncio.create_task(pinger(hub), name="edge-pinger"),
            asyncio.create_task(hub.node.heartbeats(), name="edge-heartbeats"),
        ]
        try:
            if extra is None:
                yield
            else:
                async with extra(app):
                    yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if hub.node.supervisor.connection is not None:
                with contextlib.suppress(Exception):
                    await hub.node.supervisor.connection.close()
            await engine.dispose()

    app = EdgeApp(
        verifier,
        _cors(settings),
        title="ssehub edge",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz(request: Request) -> JSONResponse:
        hub: Hub = request.app.state.hub
        problems = []
        if hub.draining:
            problems.append("draining")
        if not hub.node.ready:
            problems.append("rabbitmq: not connected")
        try:
            await hub.store.ping()
        except StoreUnavailable as exc:
            problems.append(str(exc))
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "connections": len(hub.registry)})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        hub: Hub = request.app.state.hub
        hub.metrics.users.set(hub.node.bound_users)
        hub.metrics.tasks.set(len(asyncio.all_tasks()))
        return Response(hub.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


class EdgeApp(FastAPI):
    """FastAPI, with ``GET /sse/connect`` answered in front of its whole
    middleware stack (edge/route.py) and CORS around both."""

    def __init__(self, verifier: TokenVerifier, cors: dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._verifier = verifier
        self._cors = cors

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = StreamRoute(
            super().build_middleware_stack(), state=self.state, verifier=self._verifier
        )
        if self._cors is not None:
            app = CORSMiddleware(app, **self._cors)
        return app


def _cors(settings: Settings) -> dict[str, Any] | None:
    origins = settings.cors_origins
    if not origins:
        return None
    # "*" is answered by echoing the caller's origin: EventSource(withCredentials)
    # refuses a literal "*" in Access-Control-Allow-Origin.
    any_origin = "*" in origins
    return {
        "allow_origins": [] if any_origin else origins,
        "allow_origin_regex": ".*" if any_origin else None,
        "allow_credentials": True,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "X-Auth-Token", "Last-Event-ID", "Content-Type"],
    }
