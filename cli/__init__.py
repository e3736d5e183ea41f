"""The ``ssehub`` command line: the top layer, the only one that reads the
process environment and imports both services.

Commands that run a service (``dev``, ``edge``, ``dispatcher``) live in
``ssehub.cli.serve``, the ones that talk to a running deployment (``token``,
``publish``) in ``ssehub.cli.tools``; both are imported only when used, so
that ``ssehub publish`` works with the light install (no server extra).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import ssehub
from ssehub.cli.helptext import description, settings_epilog
from ssehub.config import (
    ENV_FILE,
    Settings,
    closest_setting,
    env_file_names,
    load_settings,
    unknown_settings,
)
from ssehub.errors import SsehubError

# ssehub is on no package index: installed from a checkout (README, Installing)
SERVER_EXTRA = "pip install '/path/to/ssehub-checkout[server]' (README, Installing)"


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except SsehubError as exc:
        print(f"ssehub: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "ssehub":
            print(
                f"ssehub {args.command}: needs {exc.name!r}, part of the server extra: "
                f"{SERVER_EXTRA}",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        raise
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def settings(**overrides: object) -> Settings:
    """The settings, parsed once; a typo'd ``SSEHUB_*`` variable, in the
    environment or in ``.env``, is warned about."""
    typos = [("", name) for name in unknown_settings(os.environ)]
    typos += [(f"{ENV_FILE}: ", name) for name in unknown_settings(env_file_names())]
    for where, name in typos:
        guess = closest_setting(name)
        hint = f"did you mean {guess}?" if guess else "typo?"
        print(
            f"ssehub: warning: {where}{name} is not a setting of ssehub ({hint}); ignored",
            file=sys.stderr,
        )
    return load_settings(**overrides)


def parser() -> argparse.ArgumentParser:
    from ssehub.cli import serve, tools

    p = argparse.ArgumentParser(prog="ssehub", description="Server-Sent Events hub on RabbitMQ")
    p.add_argument("--version", action="version", version=f"ssehub {ssehub.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    dev = _service(
        sub,
        "dev",
        "dispatcher + edge + demo page in one process",
        "Run a dispatcher, an edge and the demo page in one process, for development: "
        "open the address it prints in two browser tabs and chat. The local RabbitMQ "
        "and a SQLite file unless the settings below say otherwise.",
    )
    _listen(dev, "the demo page and the streams")
    dev.set_defaults(func=serve.dev)

    edge = _service(
        sub,
        "edge",
        "one edge node",
        "Run one edge node: the streams (GET /sse/connect), the browser helper "
        "(/ssehub.js), /healthz, /readyz and /metrics. SIGTERM closes its streams in "
        "staggered batches (their clients resume on another edge), then it exits.",
    )
    _listen(edge, "the streams")
    edge.set_defaults(func=serve.edge)

    disp = _service(
        sub,
        "dispatcher",
        "one dispatcher (several share the partitions)",
        "Run one dispatcher: it validates, numbers, stores and routes the published "
        "events. Start two or more: they share the SSEHUB_PARTITIONS partitions "
        "(each worked on by one process at a time), and take over from one that stops.",
    )
    # This machine only by default: what the port serves (readiness naming the
    # store, metrics) is for probes and Prometheus; a pod's probes need
    # `--host 0.0.0.0` (k8s/base/dispatcher.yaml passes it).
    disp.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the HTTP port (default 127.0.0.1: this machine only; 0.0.0.0: every one)",
    )
    disp.add_argument(
        "--port",
        type=int,
        default=None,
        help="serve /healthz, /readyz, /metrics on this port (default: no HTTP port)",
    )
    disp.add_argument(
        "--partitions",
        metavar="LIST",
        default=None,
        help="work on these partitions only, e.g. 0-3,7 (default: a fair share of all "
        "SSEHUB_PARTITIONS, moving as processes come and go)",
    )
    disp.set_defaults(func=serve.dispatcher)

    tok = sub.add_parser("token", help="print a signed development JWT for USER")
    tok.add_argument("user", help="the user id (the token's subject)")
    tok.add_argument(
        "--ttl",
        type=float,
        default=24 * 3600,
        help="seconds the token is valid (default 1 day; at most SSEHUB_MAX_TOKEN_LIFETIME)",
    )
    tok.set_defaults(func=tools.token)

    pub = sub.add_parser("publish", help="publish an event or membership op")
    kinds = pub.add_subparsers(dest="kind", required=True)
    u = kinds.add_parser("user", help="an event to one user")
    u.add_argument("target")
    _event_args(u)
    c = kinds.add_parser("conversation", help="an event to every member")
    c.add_argument("target")
    _event_args(c)
    c.add_argument("--exclude", default="", help="comma-separated user ids")
    m = kinds.add_parser("members", help="set/add/remove conversation members")
    m.add_argument("target")
    m.add_argument("op", choices=["set", "add", "remove"])
    m.add_argument("users", nargs="*")
    k = kinds.add_parser("control", help="disconnect a user's streams, or revoke their tokens")
    k.add_argument("target", metavar="user")
    k.add_argument("op", choices=["disconnect", "revoke"])
    k.add_argument("--reason", help="disconnect: the reason the streams are told")
    k.add_argument("--before", type=float, help="revoke: tokens issued before (unix s; now)")
    pub.set_defaults(func=tools.publish)

    rol = sub.add_parser(
        "roles",
        help="print the rabbitmqctl lines that make the three broker users",
        description="Print the rabbitmqctl lines that create ssehub's three RabbitMQ "
        "users (dispatcher, edge, publisher) with the least permissions each needs "
        "(ssehub.roles); run them as a RabbitMQ administrator. Passwords are "
        "placeholders the shell fills from SSEHUB_<ROLE>_PASSWORD, or --generate them.",
    )
    rol.add_argument("--vhost", help="the vhost (default: SSEHUB_RABBITMQ_URL's)")
    rol.add_argument(
        "--delivery",
        choices=["nodes", "bindings", "both"],
        help="the delivery design (default: SSEHUB_DELIVERY's); the edge's role depends on it",
    )
    rol.add_argument(
        "--generate",
        action="store_true",
        help="random passwords in the lines, and each process's SSEHUB_RABBITMQ_URL",
    )
    rol.add_argument(
        "--tsv",
        action="store_true",
        help="one tab-separated line per role instead: vhost, role, user, configure, write, read",
    )
    rol.set_defaults(func=roles)
    return p


def roles(args: argparse.Namespace) -> None:
    """``ssehub roles``: lines to print, nothing done (ssehub.roles is data)."""
    import secrets

    from ssehub import roles as broker_roles
    from yarl import URL

    config = settings()
    url = URL(config.rabbitmq_url)
    vhost = args.vhost or (url.path[1:] if len(url.path) > 1 else "/")
    delivery = args.delivery or config.delivery
    if args.tsv:
        print("\n".join(broker_roles.table(vhost, delivery)))
        return
    passwords = {}
    if args.generate:
        # hex: a password never starts with "-" (rabbitmqctl would take it for an option)
        passwords = {r.name: secrets.token_hex(16) for r in broker_roles.roles(delivery)}
    print("\n".join(broker_roles.commands(vhost, delivery, passwords)))
    for role in broker_roles.roles(delivery) if passwords else ():
        path = "/" if vhost == "/" else "/" + vhost
        their = url.with_user(role.user).with_password(passwords[role.name]).with_path(path)
        print(f"# the {role.name}'s SSEHUB_RABBITMQ_URL={their}")


def _service(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, text: str
) -> argparse.ArgumentParser:
    """A command that runs a service: what it does, then its options, then the
    settings it reads (ssehub.cli.helptext)."""
    return sub.add_parser(
        name,
        help=summary,
        description=description(text),
        epilog=settings_epilog(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _listen(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: every one)",
    )
    p.add_argument("--port", type=int, default=8000, help=f"port to serve {what} on (default 8000)")


def _event_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("event")
    p.add_argument("data", help="JSON value")
    p.add_argument("--key", help="idempotency key")
    p.add_argument("--ephemeral", action="store_true")
