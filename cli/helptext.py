"""What ``--help`` says of the services: what each command does, and the
settings it reads (the main ones; all of them are in the contract)."""

from __future__ import annotations

import textwrap

from ssehub.config import ENV_FILE

# A setting's meaning and default, as a service's --help shows it. The names
# are checked against ssehub.config.Settings (tests/test_cli.py).
MEANINGS = {
    "SSEHUB_RABBITMQ_URL": "the broker (default amqp://guest:guest@localhost:5672/)",
    "SSEHUB_DATABASE_URL": (
        "the store: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB "
        "(default sqlite:///./ssehub.db)"
    ),
    "SSEHUB_JWT_SECRET": "the HMAC secret tokens are signed with (required with HS256)",
    "SSEHUB_JWT_ALGORITHM": "HS256 (default), HS384, HS512, RS256 or ES256",
    "SSEHUB_JWT_PUBLIC_KEY": "RS256/ES256: the PEM public key, or the path of a file holding it",
    "SSEHUB_CORS_ORIGINS": (
        "origins allowed to open streams, comma-separated (default none); * for any, "
        "without credentials (refused with SSEHUB_JWT_COOKIE)"
    ),
    "SSEHUB_JWT_COOKIE": (
        "a cookie that carries the token, honoured from the edge's own origin and "
        "SSEHUB_CORS_ORIGINS only (default none)"
    ),
    "SSEHUB_MAX_TOKEN_LIFETIME": (
        "seconds: a token without exp, or whose exp is further from its iat, is refused "
        "(default 2592000: 30 days)"
    ),
    "SSEHUB_REPLAY_RATE": (
        "replayed events a second per user on an edge, in bursts of SSEHUB_REPLAY_BURST "
        "(default 1000, bursts of 20000); a resume over it is told to retry later"
    ),
    "SSEHUB_OPS_PORT": (
        "serve /metrics, /readyz, /healthz, /openapi.json and /docs on this port, and not "
        "on the public one but /healthz (default: the public port serves them)"
    ),
    "SSEHUB_OPS_HOST": "address of SSEHUB_OPS_PORT (default: the edge's --host)",
    "SSEHUB_PING_INTERVAL": "seconds between ': ping' comments on idle streams (default 15)",
    "SSEHUB_BATCH_SIZE": "messages per store transaction at most (default 500)",
    "SSEHUB_QUEUE_TYPE": "classic (default) or quorum: ssehub's durable queues",
    "SSEHUB_PARTITIONS": (
        "how many partitions the work is split into, the same in every process of "
        "a deployment (default 1)"
    ),
    "SSEHUB_MAX_MEMBERS": (
        "members of one conversation; a change beyond it is dead-lettered (default 10000)"
    ),
    "SSEHUB_MAX_DELIVERIES": (
        "a message delivered this often without being handled is dead-lettered (default 10)"
    ),
    "SSEHUB_DEAD_LETTER_MAX": "messages sse.dead keeps, the oldest dropped first (default 100000)",
    "SSEHUB_LOG_LEVEL": "DEBUG, INFO (default), WARNING or ERROR",
    "SSEHUB_LOG_FORMAT": "json (default: one object per line) or text",
}
# What `ssehub dev` does differently when a setting is not set (cli/serve.py)
DEV_DEFAULTS = {
    "SSEHUB_JWT_SECRET": "the HMAC secret tokens are signed with (default: a built-in "
    "development secret, the one `ssehub token` signs with)",
    "SSEHUB_CORS_ORIGINS": (
        "origins allowed to open streams, comma-separated (default: any, without "
        "credentials; with a token cookie, the page's own)"
    ),
    "SSEHUB_LOG_FORMAT": "text (default) or json",
}
COMMANDS = {
    "dev": [
        "SSEHUB_RABBITMQ_URL",
        "SSEHUB_DATABASE_URL",
        "SSEHUB_JWT_SECRET",
        "SSEHUB_CORS_ORIGINS",
        "SSEHUB_LOG_LEVEL",
        "SSEHUB_LOG_FORMAT",
    ],
    "edge": [
        "SSEHUB_RABBITMQ_URL",
        "SSEHUB_DATABASE_URL",
        "SSEHUB_JWT_SECRET",
        "SSEHUB_JWT_ALGORITHM",
        "SSEHUB_JWT_PUBLIC_KEY",
        "SSEHUB_MAX_TOKEN_LIFETIME",
        "SSEHUB_JWT_COOKIE",
        "SSEHUB_CORS_ORIGINS",
        "SSEHUB_PING_INTERVAL",
        "SSEHUB_REPLAY_RATE",
        "SSEHUB_OPS_PORT",
        "SSEHUB_OPS_HOST",
        "SSEHUB_LOG_LEVEL",
        "SSEHUB_LOG_FORMAT",
    ],
    "dispatcher": [
        "SSEHUB_RABBITMQ_URL",
        "SSEHUB_DATABASE_URL",
        "SSEHUB_BATCH_SIZE",
        "SSEHUB_PARTITIONS",
        "SSEHUB_QUEUE_TYPE",
        "SSEHUB_MAX_MEMBERS",
        "SSEHUB_MAX_DELIVERIES",
        "SSEHUB_DEAD_LETTER_MAX",
        "SSEHUB_LOG_LEVEL",
        "SSEHUB_LOG_FORMAT",
    ],
}
WIDTH = max(len(name) for name in MEANINGS)
LINE = 79


def description(text: str) -> str:
    """A command's description, wrapped (RawDescriptionHelpFormatter does not)."""
    return textwrap.fill(text, LINE)


def settings_epilog(command: str) -> str:
    """The settings a service reads, one per line, for argparse's epilog
    (with RawDescriptionHelpFormatter)."""
    meanings = MEANINGS | DEV_DEFAULTS if command == "dev" else MEANINGS
    lines = [f"settings (from the environment, or a {ENV_FILE} file in the working directory):"]
    for name in COMMANDS[command]:
        lines.append(
            textwrap.fill(
                meanings[name],
                LINE,
                initial_indent=f"  {name:<{WIDTH}}  ",
                subsequent_indent=" " * (WIDTH + 4),
                break_on_hyphens=False,
            )
        )
    lines.append("")
    lines.append(
        textwrap.fill(
            'Every setting is in docs/contract.md, "Settings" (in the ssehub repository); '
            "a SSEHUB_ name that is no setting is warned about.",
            LINE,
        )
    )
    return "\n".join(lines)
