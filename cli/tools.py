"""``ssehub token`` and ``ssehub publish``: talking to a running deployment."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from ssehub.config import DEV_JWT_SECRET, Settings
from ssehub.errors import ConfigError, SsehubError
from ssehub.logs import configure_logging
from ssehub.publisher import Publisher


def token(args: argparse.Namespace) -> None:
    from ssehub.cli import settings
    from ssehub.edge.auth import mint_token

    config = settings()
    if not args.ttl > 0:  # an expired token is no use to anyone (nan is refused too)
        raise ConfigError(f"--ttl {args.ttl:g}: must be a number of seconds above 0")
    if config.jwt_secret is None and config.jwt_algorithm.startswith("HS"):
        # The same secret as `ssehub dev`, so the token works there at once.
        config = config.model_copy(update={"jwt_secret": DEV_JWT_SECRET})
        print(
            "ssehub token: SSEHUB_JWT_SECRET is not set: signed with the development "
            "secret that `ssehub dev` uses",
            file=sys.stderr,
        )
    print(mint_token(config, args.user, ttl_seconds=args.ttl))


def publish(args: argparse.Namespace) -> None:
    from ssehub.cli import settings

    config = settings()
    # aiormq logs each failed connect itself; the error raised after the last
    # attempt says it once, in words (host and port, never the password)
    configure_logging("WARNING")
    key = asyncio.run(_publish(config, args))
    print(f"published {_what(args)} (idempotency key {key})")


def _what(args: argparse.Namespace) -> str:
    """The message, as the routing key and what it carries."""
    if args.kind == "members":
        return f"members.{args.target}: {args.op} {' '.join(args.users) or '(nobody)'}"
    if args.kind == "control":
        return f"control.{args.target}: {args.op}"
    return f"{args.kind}.{args.target}: {args.event}"


async def _publish(config: Settings, args: argparse.Namespace) -> str:
    async with Publisher(config.rabbitmq_url) as publisher:  # declares nothing
        if args.kind == "members":
            op = {
                "set": publisher.set_members,
                "add": publisher.add_members,
                "remove": publisher.remove_members,
            }
            return await op[args.op](args.target, args.users)
        if args.kind == "control":
            if args.op == "disconnect":
                return await publisher.disconnect_user(args.target, args.reason or "disconnect")
            return await publisher.revoke_tokens(args.target, args.before)
        try:
            data = orjson.loads(args.data)
        except orjson.JSONDecodeError as exc:
            raise SsehubError(f"data: not valid JSON ({exc})") from None
        if args.kind == "user":
            return await publisher.send_event_to_user(
                args.target, args.event, data, key=args.key, ephemeral=args.ephemeral
            )
        exclude = [u for u in args.exclude.split(",") if u]
        return await publisher.broadcast_to_conversation(
            args.target,
            args.event,
            data,
            exclude=exclude,
            key=args.key,
            ephemeral=args.ephemeral,
        )
