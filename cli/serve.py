"""``ssehub dev``, ``ssehub edge``, ``ssehub dispatcher``: running the services.

Process-wide set-up happens here, once, at start: logging, and the AMQP
frame receiver of ``ssehub.fastpath`` (the only process-wide patch).

What can stop a service is checked in the order a user fixes it, each in one
line: the settings, then the port (bound here, before anything connects),
then the store (waited for, one line per failed attempt).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ssehub.config import DEV_JWT_SECRET, Settings
from ssehub.errors import ConfigError, SsehubError
from ssehub.fastpath import receiver
from ssehub.logs import configure_logging

if TYPE_CHECKING:
    import socket

    from ssehub.edge.server import EdgeServer

log = logging.getLogger("ssehub.cli")
DEV_COOKIE = "ssehub_token"


def _start(config: Settings) -> None:
    configure_logging(config.log_level, config.log_format)
    receiver.install()


def _quiet_gc() -> None:
    """A server allocates many short-lived objects per batch; with CPython's
    default thresholds its collector keeps rescanning everything the imports
    and the store left on the heap (py-spy put it inside the allocating
    frames). What is alive now lives until exit: frozen out of the scans, and
    the young generation made larger. Same session, each side twice or
    three times: the dispatcher's CPU per event 26.6–30.8 µs instead of
    34.7–39.4 (bench dispatcher-partitions); the edge's per new stream
    0.64–0.72 ms instead of 0.89–0.93 (bench connect)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


def _wait_for_store(config: Settings, name: str) -> None:
    """Before the server starts: while uvicorn starts an app it holds Ctrl+C and
    reports a failed start as a traceback; here Ctrl+C ends the wait, and a
    database of another schema is one line (a ConfigError)."""
    from ssehub.storage.db import create_engine
    from ssehub.storage.reach import open_store

    async def wait() -> None:
        engine = create_engine(config.database_url)
        try:
            await open_store(engine, name=name, max_delay=config.reconnect_max_delay)
        finally:
            await engine.dispose()

    asyncio.run(wait())


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def dev(args: argparse.Namespace) -> None:
    from fastapi import FastAPI
    from ssehub.cli import settings
    from ssehub.dispatcher.main import running_dispatcher
    from ssehub.edge.app import create_app
    from ssehub.edge.demo import add_demo_routes
    from ssehub.edge.server import EdgeServer, listen
    from ssehub.publisher import Publisher

    base = settings()
    # the demo page's streams carry their token in a cookie when URLs may not
    cookie = base.jwt_cookie or (None if base.query_tokens else DEV_COOKIE)
    config = base.model_copy(
        update={
            "jwt_secret": base.jwt_secret or DEV_JWT_SECRET,
            "jwt_cookie": cookie,
            # any origin, without credentials; with a token cookie, the page's own only
            "cors_origins": base.cors_origins or ([] if cookie else ["*"]),
            "drain_seconds": min(base.drain_seconds, 1.0),  # Ctrl+C should be quick
            # for a terminal, unless SSEHUB_LOG_FORMAT says otherwise
            "log_format": base.log_format if "log_format" in base.model_fields_set else "text",
        }
    )
    socks = listen(config, args.host, args.port)
    _start(config)
    if base.jwt_secret is None:
        print(
            "ssehub dev: SSEHUB_JWT_SECRET is not set: using the built-in development "
            "secret (`ssehub token USER` signs with it too); never use it in production",
            file=sys.stderr,
            flush=True,
        )
    _wait_for_store(config, "ssehub-dev")
    _quiet_gc()
    publisher = Publisher(config.rabbitmq_url, queue_type=config.queue_type)

    @asynccontextmanager
    async def with_dispatcher(_app: FastAPI) -> AsyncIterator[None]:
        async with running_dispatcher(config):
            try:
                yield
            finally:
                await publisher.close()

    app = create_app(config, extra=with_dispatcher)
    add_demo_routes(app, config, publisher)
    print(f"ssehub dev: open {_url(args.host, args.port)} in two browser tabs", flush=True)
    _ops_said(config, socks)
    _run(EdgeServer(app, config, args.host, args.port), socks)


def edge(args: argparse.Namespace) -> None:
    from ssehub.cli import settings
    from ssehub.edge.app import create_app
    from ssehub.edge.server import EdgeServer, listen

    config = settings()
    app = create_app(config)
    socks = listen(config, args.host, args.port)
    _start(config)
    _wait_for_store(config, "ssehub-edge")
    _quiet_gc()
    log.info("ssehub edge: serving on %s", _url(args.host, args.port))
    _ops_said(config, socks)
    _run(EdgeServer(app, config, args.host, args.port), socks)


def _ops_said(config: Settings, socks: list[socket.socket]) -> None:
    if len(socks) > 1:
        host, port = socks[1].getsockname()[:2]
        log.info(
            "ssehub: ops endpoints (/metrics /readyz /healthz /openapi.json /docs) on %s only",
            _url(host, port),
        )


def dispatcher(args: argparse.Namespace) -> None:
    from ssehub.cli import settings
    from ssehub.dispatcher.main import serve
    from ssehub.dispatcher.share import parse_pin

    config = settings()
    pinned = None
    if args.partitions is not None:
        try:
            pinned = parse_pin(args.partitions, config.partitions)
        except ValueError as exc:
            raise ConfigError(f"--partitions {args.partitions}: {exc}") from None
    _start(config)
    _quiet_gc()
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(serve(config, port=args.port, host=args.host, pinned=pinned))


def _run(server: EdgeServer, socks: list[socket.socket]) -> None:
    """Serve on ``socks`` (edge/server.py ``listen``) until stopped. An edge whose
    start-up failed (uvicorn exits, code 3) or whose background work failed exits
    non-zero: one line for an SsehubError (a setting, the store), else (its
    traceback logged) 1."""
    try:
        server.run_on(socks)
    except SystemExit:
        failed = getattr(server.app.state, "failure", None)
        if failed is not None:
            raise failed from None
        raise
    failure = server.failure
    if isinstance(failure, SsehubError):
        raise failure
    if failure is not None:
        raise SystemExit(1)


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop
