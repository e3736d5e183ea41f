"""Logging for ssehub's processes: one line per record, and never a token.

Clients may send their JWT as ``?token=``, which uvicorn's access log would
print with the rest of the URL; :class:`RedactTokens` rewrites such records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "REDACTED"

_QUERY = re.compile(r"(?i)(\b(?:token|access_token|jwt)=)[^&;#\s\"']*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+")
# A JWT anywhere (header segments start with '{"' -> "eyJ"), whatever carried it.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def _suspicious(text: str) -> bool:
    lowered = text.lower()
    return "token=" in lowered or "jwt=" in lowered or "bearer" in lowered or "eyJ" in text


def redact(text: str) -> str:
    """``text`` with token query values, Bearer credentials and JWTs replaced."""
    if not _suspicious(text):
        return text
    text = _QUERY.sub(rf"\g<1>{REDACTED}", text)
    text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrites records that may hold a token; never drops one, never raises.

    uvicorn's access records keep their argument tuple (its formatter unpacks
    it), with each string redacted. Other records with arguments are merged
    into their final message first, but only when some part looks suspicious:
    ``"Bearer %s"`` plus an opaque token is caught as a whole.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
            return True
        if not isinstance(record.msg, str):
            return True
        if not args:
            record.msg = redact(record.msg)
            return True
        values = args.values() if isinstance(args, Mapping) else args
        if _suspicious(record.msg) or any(isinstance(v, str) and _suspicious(v) for v in values):
            try:
                message = record.getMessage()
            except Exception:  # a broken call: logging reports it later, not us
                return True
            redacted = redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


def _install(target: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, RedactTokens) for f in target.filters):
        target.addFilter(RedactTokens())


class _Repeats(logging.Filter):
    """Drops aiormq's own line for a failed connect: the supervisor logs one line
    per attempt that says why in words (ssehub.amqp.describe)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


def configure_logging(level: str) -> None:
    """One-line records at ``level`` on stderr; token redaction on uvicorn.access and root."""
    level = level.upper()
    logging.basicConfig(level=level, format=LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        _install(handler)
    _install(logging.getLogger("uvicorn.access"))
    aiormq_log = logging.getLogger("aiormq.connection")
    if not any(isinstance(f, _Repeats) for f in aiormq_log.filters):
        aiormq_log.addFilter(_Repeats())


# For ``uvicorn.run(..., log_config=UVICORN_LOG_CONFIG)``: uvicorn then sets up
# logging itself, with the filter on every handler. uvicorn may write
# ``use_colors`` into both formatters, so both exist.
UVICORN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_tokens": {"()": RedactTokens}},
    "formatters": {
        "default": {"format": LOG_FORMAT},
        "access": {"format": LOG_FORMAT},
    },
    "handlers": {
        "default": {
            "class": "logging.StreamHandler",
            "formatter": "default",
            "filters": ["redact_tokens"],
            "stream": "ext://sys.stderr",
        },
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "filters": ["redact_tokens"],
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["default"], "level": "INFO"},
}
