"""The ``ssehub`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import orjson

from shared.config import Settings, load_settings
from shared.errors import SsehubError

DEV_SECRET = "ssehub-dev-secret-do-not-use-in-production"


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except SsehubError as exc:
        print(f"ssehub: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssehub", description="SSE hub on RabbitMQ")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="dispatcher + edge + demo page in one process")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=_dev)

    edge = sub.add_parser("edge", help="one edge node")
    edge.add_argument("--host", default="127.0.0.1")
    edge.add_argument("--port", type=int, default=8000)
    edge.set_defaults(func=_edge)

    disp = sub.add_parser("dispatcher", help="one dispatcher (others wait as standbys)")
    disp.set_defaults(func=_dispatcher)

    tok = sub.add_parser("token", help="print a signed development JWT for USER")
    tok.add_argument("user")
    tok.add_argument("--ttl", type=float, default=24 * 3600, help="seconds (default 1 day)")
    tok.set_defaults(func=_token)

    pub = sub.add_parser("publish", help="publish an event or membership op")
    kinds = pub.add_subparsers(dest="kind", required=True)
    u = kinds.add_parser("user", help="an event to one user")
    u.add_argument("target")
    u.add_argument("event")
    u.add_argument("data", help="JSON value")
    u.add_argument("--key", help="idempotency key")
    u.add_argument("--ephemeral", action="store_true")
    c = kinds.add_parser("conversation", help="an event to every member")
    c.add_argument("target")
    c.add_argument("event")
    c.add_argument("data", help="JSON value")
    c.add_argument("--exclude", default="", help="comma-separated user ids")
    c.add_argument("--key", help="idempotency key")
    c.add_argument("--ephemeral", action="store_true")
    m = kinds.add_parser("members", help="set/add/remove conversation members")
    m.add_argument("target")
    m.add_argument("op", choices=["set", "add", "remove"])
    m.add_argument("users", nargs="*")
    pub.set_defaults(func=_publish)
    return p


def _dev(args: argparse.Namespace) -> None:
    from fastapi import FastAPI

    from dispatcher.main import running_dispatcher
    from edge.app import create_app
    from edge.demo import add_demo_routes
    from edge.logs import configure_logging
    from edge.server import EdgeServer
    from shared.publisher import Hub

    base = load_settings()
    settings = base.model_copy(
        update={
            "jwt_secret": base.jwt_secret or DEV_SECRET,
            "cors_origins": base.cors_origins or ["*"],
            "drain_seconds": min(base.drain_seconds, 1.0),  # Ctrl+C should be quick
        }
    )
    configure_logging(settings.log_level)
    publisher = Hub(settings.rabbitmq_url)

    @asynccontextmanager
    async def with_dispatcher(_app: FastAPI) -> AsyncIterator[None]:
        async with running_dispatcher(settings):
            try:
                yield
            finally:
                await publisher.close()

    app = create_app(settings, extra=with_dispatcher)
    add_demo_routes(app, settings, publisher)
    print(f"ssehub dev: open http://{args.host}:{args.port}/ in two browser tabs", flush=True)
    EdgeServer(app, settings, args.host, args.port).run()


def _edge(args: argparse.Namespace) -> None:
    from edge.app import create_app
    from edge.logs import configure_logging
    from edge.server import EdgeServer

    settings = load_settings()
    configure_logging(settings.log_level)
    EdgeServer(create_app(settings), settings, args.host, args.port).run()


def _dispatcher(_args: argparse.Namespace) -> None:
    from dispatcher.main import serve
    from edge.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(serve(settings))


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it is a dependency, through uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


def _token(args: argparse.Namespace) -> None:
    from edge.auth import mint_token

    settings = load_settings()
    print(mint_token(settings, args.user, ttl_seconds=args.ttl))


def _publish(args: argparse.Namespace) -> None:
    settings = load_settings()
    key = asyncio.run(_publish_one(settings, args))
    print(key)


async def _publish_one(settings: Settings, args: argparse.Namespace) -> str:
    from shared.publisher import Hub

    async with Hub(settings.rabbitmq_url) as hub:
        if args.kind == "members":
            op = {"set": hub.set_members, "add": hub.add_members, "remove": hub.remove_members}
            return await op[args.op](args.target, args.users)
        try:
            data = orjson.loads(args.data)
        except orjson.JSONDecodeError as exc:
            raise SsehubError(f"data: not valid JSON ({exc})") from None
        if args.kind == "user":
            return await hub.send_event_to_user(
                args.target, args.event, data, key=args.key, ephemeral=args.ephemeral
            )
        exclude = [u for u in args.exclude.split(",") if u]
        return await hub.broadcast_to_conversation(
            args.target,
            args.event,
            data,
            exclude=exclude,
            key=args.key,
            ephemeral=args.ephemeral,
        )


if __name__ == "__main__":
    main()
