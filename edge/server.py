"""Serving an edge app with uvicorn: fast loop and parser, redacted logs, drain on SIGTERM."""

from __future__ import annotations

import importlib.util
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from edge.app import drain
from edge.logs import UVICORN_LOG_CONFIG


class EdgeServer(uvicorn.Server):
    """On SIGTERM/SIGINT, close our streams first: uvicorn's own shutdown waits
    for open responses to finish, and an SSE response never does by itself."""

    def __init__(self, app: FastAPI, host: str, port: int, log_level: str) -> None:
        self.app = app
        has = importlib.util.find_spec
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop" if has("uvloop") else "asyncio",
            http="httptools" if has("httptools") else "h11",
            log_config=UVICORN_LOG_CONFIG,
            log_level=log_level.lower(),
            timeout_graceful_shutdown=10,
            lifespan="on",
        )
        super().__init__(config)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        hub = getattr(self.app.state, "hub", None)
        if hub is not None and sig in (signal.SIGTERM, signal.SIGINT):
            drain(hub)
        super().handle_exit(sig, frame)
