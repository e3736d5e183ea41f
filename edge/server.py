"""Serving an edge app with uvicorn: fast loop and parser, redacted logs, drain on
SIGTERM, deadlines and a bound on connections (ssehub.fastpath.guard) within the
file-handle limit (edge/handles.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI
from ssehub.config import Settings
from ssehub.edge import handles
from ssehub.edge.context import EdgeContext
from ssehub.edge.lifecycle import close_all, drain
from ssehub.edge.route import PATH
from ssehub.errors import ConfigError, SsehubError
from ssehub.fastpath.guard import Guard, guarded_protocol
from ssehub.listen import bind
from ssehub.logs import uvicorn_log_config

log = logging.getLogger("ssehub.edge")


def listen(settings: Settings, host: str, port: int) -> list[socket.socket]:
    """The edge's sockets, bound at start: the public port, then the ops port when
    SSEHUB_OPS_PORT is set, on SSEHUB_OPS_HOST or else the edge's own ``host``
    (probes and Prometheus reach an edge where its load balancer does; what keeps
    the ops port private is that the load balancer, or Ingress, forwards only the
    public one; SSEHUB_OPS_HOST=127.0.0.1 keeps it on the machine). A port in use,
    or the same port twice: one line."""
    ops_port = settings.ops_port
    if ops_port is not None and ops_port == port and port != 0:
        raise ConfigError(
            f"SSEHUB_OPS_PORT={ops_port} is the port of the streams (--port): choose another"
        )
    public = bind(host, port)
    if ops_port is None:
        return [public]
    try:
        ops = bind(settings.ops_host or host, ops_port, option="SSEHUB_OPS_PORT")
    except BaseException:
        public.close()
        raise
    return [public, ops]


class EdgeServer(uvicorn.Server):
    """SIGTERM drains first (readiness 503, streams closed in staggered batches,
    node queue deleted) and only then lets uvicorn stop: uvicorn's own shutdown
    waits for open responses, and an SSE response never ends by itself.
    A second signal closes everything at once."""

    def __init__(self, app: FastAPI, settings: Settings, host: str, port: int) -> None:
        self.app = app
        self._drain_seconds = settings.drain_seconds
        self._draining: asyncio.Task[None] | None = None
        # what stopped the edge's background work, if anything did (edge/app.py)
        self.failure: BaseException | None = None
        app.state.fatal = self._fatal
        has = importlib.util.find_spec
        budget = handles.budget(settings.max_connections, handles.raise_soft_limit())
        guard = Guard(
            head_timeout=settings.request_head_timeout,
            request_timeout=settings.request_timeout,
            max_connections=budget.max_connections,
            stream_path=PATH,
        )
        protocol = guarded_protocol(guard) if has("httptools") else None
        if protocol is not None:
            app.state.guard = guard  # its counts go to /metrics (edge/metrics.py)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop" if has("uvloop") else "asyncio",
            http=protocol or "h11",
            # Without the guard, uvicorn's own bound: a plain 503 (which an
            # EventSource does not retry), but file handles never run out.
            limit_concurrency=None if protocol else budget.max_connections,
            log_config=uvicorn_log_config(settings.log_format, settings.log_level),
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=5,
            # A reconnect storm is thousands of SYNs at once; uvicorn's default
            # accept backlog (2048) resets some. The kernel caps it at somaxconn.
            backlog=16384,
            lifespan="on",
        )
        super().__init__(config)
        log.info(budget.describe(), extra={"max_connections": budget.max_connections})
        if budget.wanted is not None:
            log.warning(
                "SSEHUB_MAX_CONNECTIONS=%d needs %d file handles but RLIMIT_NOFILE is %d: "
                "serving at most %d connections (raise the limit: docs/architecture.md, "
                "File handles)",
                budget.wanted,
                budget.wanted + handles.OVERHEAD,
                budget.limit,
                budget.max_connections,
            )
        if protocol is None:
            log.warning(
                "httptools is not installed: uvicorn serves with h11, without request "
                "deadlines; over the connection bound it answers a plain 503"
            )

    def run_on(self, sockets: list[socket.socket]) -> None:
        """Serve on ``sockets`` (``listen``'s) until stopped."""
        if len(sockets) > 1:  # the app tells the ops port's requests by it (edge/app.py)
            self.app.state.ops_port = sockets[1].getsockname()[1]
        self.run(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        ctx = getattr(self.app.state, "edge", None)
        if ctx is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
        elif self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain(ctx))
        else:
            close_all(ctx)
            super().handle_exit(sig, frame)

    def _fatal(self, exc: BaseException) -> None:
        """The edge's background work failed (a bug, or a setting the broker
        refused): stop serving at once; the caller raises ``failure``."""
        if not isinstance(exc, SsehubError):  # a bug: its traceback, once
            log.critical("the edge's background work failed", exc_info=exc)
        self.failure = exc
        ctx = getattr(self.app.state, "edge", None)
        if ctx is not None:
            close_all(ctx)
        self.should_exit = True

    async def _drain(self, ctx: EdgeContext) -> None:
        await drain(ctx, self._drain_seconds)
        super().handle_exit(signal.SIGTERM, None)
