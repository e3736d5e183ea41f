"""ssehub.edge.server: which uvicorn an edge runs, with the guard or without it."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator

import pytest
from ssehub.edge import server as server_module
from ssehub.edge.app import create_app
from ssehub.edge.handles import OVERHEAD
from ssehub.edge.server import EdgeServer
from ssehub.fastpath.guard import GuardedHttpTools

from tests.unit.edge.tokens import make_settings


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """EdgeServer sets up the process's logging (uvicorn's dictConfig): undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def said() -> Iterator[list[str]]:
    """What the edge logs (on its own logger: uvicorn's set-up replaces the root's handlers)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ssehub.edge")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_an_edge_serves_with_the_guard() -> None:
    settings = make_settings(max_connections=1000, request_head_timeout=2, request_timeout=7)
    app = create_app(settings)
    config = EdgeServer(app, settings, "127.0.0.1", 0).config
    assert isinstance(config.http, type) and issubclass(config.http, GuardedHttpTools)
    assert config.limit_concurrency is None
    guard = app.state.guard
    assert (guard.head_timeout, guard.request_timeout, guard.max_connections) == (2, 7, 1000)


def test_without_httptools_the_bound_is_uvicorns(
    monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        server_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "httptools" else real(name, *a),
    )
    settings = make_settings(max_connections=1000)
    app = create_app(settings)
    config = EdgeServer(app, settings, "127.0.0.1", 0).config
    assert config.http == "h11"
    assert config.limit_concurrency == 1000
    assert not hasattr(app.state, "guard")
    assert any("without request deadlines" in line for line in said)


def test_a_bound_the_file_handles_cannot_hold_is_lowered_and_said(
    monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    monkeypatch.setattr(server_module.handles, "raise_soft_limit", lambda: (4096, 4096))
    settings = make_settings(max_connections=10_000)
    app = create_app(settings)
    EdgeServer(app, settings, "127.0.0.1", 0)
    assert app.state.guard.max_connections == 4096 - OVERHEAD
    assert "file handles: 4096 (hard 4096); at most 3840 connections" in said
    warning = "SSEHUB_MAX_CONNECTIONS=10000 needs 10256 file handles but RLIMIT_NOFILE is 4096"
    assert any(line.startswith(warning) for line in said)
