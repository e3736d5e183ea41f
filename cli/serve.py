"""``ssehub dev``, ``ssehub edge``, ``ssehub dispatcher``: running the services.

Process-wide set-up happens here, once, at start: logging, and the AMQP
frame receiver of ``ssehub.fastpath`` (the only process-wide patch).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ssehub.config import DEV_JWT_SECRET, Settings
from ssehub.fastpath import receiver
from ssehub.logs import configure_logging

if TYPE_CHECKING:
    from ssehub.edge.server import EdgeServer


DEV_COOKIE = "ssehub_token"


def _start(config: Settings) -> None:
    configure_logging(config.log_level, config.log_format)
    receiver.install()


def dev(args: argparse.Namespace) -> None:
    from fastapi import FastAPI
    from ssehub.cli import settings
    from ssehub.dispatcher.main import running_dispatcher
    from ssehub.edge.app import create_app
    from ssehub.edge.demo import add_demo_routes
    from ssehub.edge.server import EdgeServer
    from ssehub.publisher import Publisher

    base = settings()
    config = base.model_copy(
        update={
            "jwt_secret": base.jwt_secret or DEV_JWT_SECRET,
            # the demo page's streams carry their token in a cookie when URLs may not
            "jwt_cookie": base.jwt_cookie or (None if base.query_tokens else DEV_COOKIE),
            "cors_origins": base.cors_origins or ["*"],
            "drain_seconds": min(base.drain_seconds, 1.0),  # Ctrl+C should be quick
            # for a terminal, unless SSEHUB_LOG_FORMAT says otherwise
            "log_format": base.log_format if "log_format" in base.model_fields_set else "text",
        }
    )
    _start(config)
    if base.jwt_secret is None:
        print(
            "ssehub dev: SSEHUB_JWT_SECRET is not set: using the built-in development "
            "secret (`ssehub token USER` signs with it too); never use it in production",
            file=sys.stderr,
            flush=True,
        )
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
    print(f"ssehub dev: open http://{args.host}:{args.port}/ in two browser tabs", flush=True)
    _run(EdgeServer(app, config, args.host, args.port))


def edge(args: argparse.Namespace) -> None:
    from ssehub.cli import settings
    from ssehub.edge.app import create_app
    from ssehub.edge.server import EdgeServer

    config = settings()
    _start(config)
    app = create_app(config)
    _run(EdgeServer(app, config, args.host, args.port))


def _run(server: EdgeServer) -> None:
    """uvicorn exits (code 3) when the app's start-up fails; one that failed with
    an SsehubError (a setting, the store) is raised again, for the command line
    to say in one line."""
    try:
        server.run()
    except SystemExit:
        failed = getattr(server.app.state, "failure", None)
        if failed is not None:
            raise failed from None
        raise


def dispatcher(args: argparse.Namespace) -> None:
    from ssehub.cli import settings
    from ssehub.dispatcher.main import serve

    config = settings()
    _start(config)
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(serve(config, port=args.port, host=args.host))


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop
