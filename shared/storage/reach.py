"""Reaching the store at start: where it is and what went wrong, in words, and
a wait that retries until it answers.

A store that cannot be reached is reported like the broker (``ssehub.amqp``):
one line per attempt naming the host, port and database of
``SSEHUB_DATABASE_URL`` (never its password), and retried with backoff; a
database of another schema (a ConfigError) stops the caller at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Iterator

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.backoff import Backoff
from ssehub.errors import StoreUnavailable
from ssehub.storage.db import create_schema

log = logging.getLogger("ssehub.store")

ATTEMPT_TIMEOUT = 15.0  # seconds: asyncpg waits 60 s for a host that drops packets
# PostgreSQL's SQLSTATEs for what a person can fix in the URL or the server
NO_SUCH_DATABASE = "3D000"
LOGIN_REFUSED = ("28000", "28P01")


def where(url: str | URL) -> str:
    """The store a URL names, in words, without its password."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"the SQLite database {u.database or ':memory:'!r}"
    return f"PostgreSQL at {u.host or 'localhost'}:{u.port or 5432}, database {u.database!r}"


def describe(exc: BaseException, url: str | URL) -> str:
    """Why the store at ``url`` could not be used, in one line (never the password)."""
    u = make_url(url)
    causes = list(_causes(exc))
    root = causes[-1]
    reason = _reason(root)
    if u.get_backend_name() == "sqlite":
        text = f"cannot open {where(u)} ({reason})"
    else:
        at = f"PostgreSQL at {u.host or 'localhost'}:{u.port or 5432}"
        state = next((s for e in causes if (s := getattr(e, "sqlstate", None))), None)
        if state == NO_SUCH_DATABASE:
            text = (
                f"{at} has no database {u.database!r} (create it, or correct SSEHUB_DATABASE_URL)"
            )
        elif state in LOGIN_REFUSED:
            text = (
                f"{at} refused the login of user {u.username!r} to database {u.database!r} "
                f"({reason})"
            )
        elif isinstance(root, OSError | TimeoutError):
            text = f"cannot reach {at} (database {u.database!r}): {reason}"
        else:
            text = f"{where(u)}: {reason}"
    if u.password:  # whatever a driver put in its message
        text = text.replace(u.password, "***")
    return text


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first (SQLAlchemy keeps the driver's
    error as ``orig``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = current.__cause__ or (orig if isinstance(orig, BaseException) else None)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {ATTEMPT_TIMEOUT:g} s"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno)  # "Connection refused", not asyncio's "Connect call failed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # e.g. an unknown host name
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


async def open_store(engine: AsyncEngine, *, name: str, max_delay: float) -> None:
    """Create or check the schema, retrying until the store answers; each failed
    attempt logs one line saying why. A database of another schema raises
    ConfigError at once: waiting cannot fix it."""
    backoff = Backoff(0.1, max_delay)
    failed = False
    while True:
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                await create_schema(engine)
        except (StoreUnavailable, TimeoutError) as exc:
            failed = True
            log.warning(
                "%s: %s; retrying in %.1fs", name, describe(exc, engine.url), backoff.nominal
            )
            await asyncio.sleep(backoff.next())
            continue
        if failed:
            log.info("%s: %s answers", name, where(engine.url))
        return
