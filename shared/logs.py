"""Logging for ssehub's processes: one line per record, and never a token.

Two formats (``SSEHUB_LOG_FORMAT``): ``json``, one object per line for log
collectors (``time``, ``level``, ``logger``, ``message``, then the fields a call
site passes with ``extra=``, then ``exc_info``), and ``text`` for a terminal.

Clients may send their JWT as ``?token=``, which uvicorn's access log would
print with the rest of the URL; :class:`RedactTokens`, on every handler,
rewrites such records before any formatter sees them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from ssehub.config import LogFormat

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


_TRACEBACKS = logging.Formatter()


class RedactTokens(logging.Filter):
    """Rewrites records that may hold a token; never drops one, never raises.

    uvicorn's access records keep their argument tuple (its formatter unpacks
    it), with each string redacted. Other records with arguments are merged
    into their final message first, but only when some part looks suspicious:
    ``"Bearer %s"`` plus an opaque token is caught as a whole. A traceback is
    rendered here, redacted, into ``exc_text``, which formatters then reuse.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
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


# What every LogRecord has; anything else on a record came with ``extra=``.
# uvicorn passes ``color_message`` (its message with ANSI colours) that way.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_second: tuple[int, str] = (-1, "")  # the last second rendered, reused within it


def rfc3339(created: float, msecs: float) -> str:
    """``2026-12-01T20:07:06.123Z``: UTC, milliseconds."""
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in it are escaped)."""

    def __init__(self, use_colors: bool | None = None) -> None:
        # uvicorn may pass use_colors to every formatter of its log config
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        self.add_fields(record, line)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:  # no RedactTokens on this handler
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:  # e.g. an int beyond 64 bits: say it as text
            safe = {k: v if isinstance(v, str) else str(v) for k, v in line.items()}
            return orjson.dumps(safe).decode()

    def add_fields(self, record: logging.LogRecord, line: dict[str, Any]) -> None:
        """Fields a subclass derives from the record itself."""


class JsonAccessFormatter(JsonFormatter):
    """uvicorn's access records, with the request as fields too."""

    def add_fields(self, record: logging.LogRecord, line: dict[str, Any]) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            line |= {"client": client, "method": method, "path": path, "status": status}
            line["http_version"] = http_version


def _install(target: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, RedactTokens) for f in target.filters):
        target.addFilter(RedactTokens())


class _Repeats(logging.Filter):
    """Drops aiormq's own line for a failed connect: the supervisor logs one line
    per attempt that says why in words (ssehub.amqp.describe)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Records at ``level`` on stderr, one line each in ``log_format``; token
    redaction on every root handler and on uvicorn.access."""
    level = level.upper()
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
        logging.captureWarnings(True)  # a warning is a JSON line too, not raw text
    else:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(level)
    for h in root.handlers:
        _install(h)
    _install(logging.getLogger("uvicorn.access"))
    aiormq_log = logging.getLogger("aiormq.connection")
    if not any(isinstance(f, _Repeats) for f in aiormq_log.filters):
        aiormq_log.addFilter(_Repeats())


def uvicorn_log_config(log_format: LogFormat = "text", level: str = "INFO") -> dict[str, Any]:
    """For ``uvicorn.Config(log_config=...)``: uvicorn then sets up logging
    itself (root included, at ``level``), with the filter on every handler.
    A new dict each call: uvicorn may write ``use_colors`` into both formatters."""
    formatters: dict[str, dict[str, Any]] = (
        {"default": {"()": JsonFormatter}, "access": {"()": JsonAccessFormatter}}
        if log_format == "json"
        else {"default": {"format": LOG_FORMAT}, "access": {"format": LOG_FORMAT}}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_tokens": {"()": RedactTokens}},
        "formatters": formatters,
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
        "root": {"handlers": ["default"], "level": level.upper()},
    }
