"""ssehub.storage.reach: why the store cannot be used, in one line naming the
host, port and database (never the password); the wait that retries."""

from __future__ import annotations

import logging
import socket
import sqlite3
from pathlib import Path

import pytest
from asyncpg.exceptions import InvalidCatalogNameError, InvalidPasswordError
from sqlalchemy.exc import DBAPIError, OperationalError
from ssehub.errors import ConfigError, StoreUnavailable
from ssehub.storage.db import create_engine, store_errors
from ssehub.storage.reach import describe, open_store, where

PASSWORD = "pa55-w0rd"
PG = f"postgresql+asyncpg://app:{PASSWORD}@db.example:6543/events"


def failure(cause: BaseException) -> StoreUnavailable:
    """What the store raises: the driver's error wrapped as store_errors does."""
    with pytest.raises(StoreUnavailable) as caught, store_errors():
        raise cause
    return caught.value


def words(exc: BaseException, url: str = PG) -> str:
    text = describe(exc, url)
    assert PASSWORD not in text
    assert "\n" not in text
    return text


def wrapped(driver_error: Exception) -> DBAPIError:
    """SQLAlchemy's wrapping of an asyncpg error (its adapter keeps the original as cause)."""
    adapter = Exception(str(driver_error))
    adapter.__cause__ = driver_error
    error = DBAPIError("SELECT 1", {}, adapter)
    error.__cause__ = adapter
    return error


def test_where() -> None:
    assert where(PG) == "PostgreSQL at db.example:6543, database 'events'"
    assert where("postgresql+asyncpg://u@/x") == "PostgreSQL at localhost:5432, database 'x'"
    assert where("sqlite+aiosqlite:///./ssehub.db") == "the SQLite database './ssehub.db'"


def test_refused() -> None:
    exc = failure(ConnectionRefusedError(111, "Connect call failed ('10.0.0.1', 6543)"))
    assert words(exc) == (
        "cannot reach PostgreSQL at db.example:6543 (database 'events'): Connection refused"
    )


def test_unknown_host() -> None:
    exc = failure(socket.gaierror(-2, "Name or service not known"))
    assert words(exc).endswith("(database 'events'): Name or service not known")


def test_no_answer() -> None:
    assert words(TimeoutError()) == (
        "cannot reach PostgreSQL at db.example:6543 (database 'events'): no answer within 15 s"
    )


def test_no_such_database() -> None:
    exc = failure(wrapped(InvalidCatalogNameError('database "events" does not exist')))
    assert words(exc) == (
        "PostgreSQL at db.example:6543 has no database 'events' "
        "(create it, or correct SSEHUB_DATABASE_URL)"
    )


def test_login_refused() -> None:
    exc = failure(wrapped(InvalidPasswordError('password authentication failed for user "app"')))
    assert words(exc) == (
        "PostgreSQL at db.example:6543 refused the login of user 'app' to database 'events' "
        '(password authentication failed for user "app")'
    )


def test_a_password_in_a_drivers_message_is_hidden() -> None:
    exc = failure(OperationalError("SELECT 1", {}, Exception(f"bad option {PASSWORD}\nmore")))
    assert words(exc) == "PostgreSQL at db.example:6543, database 'events': bad option ***"


def test_sqlite() -> None:
    exc = failure(sqlite3.OperationalError("unable to open database file"))
    url = "sqlite+aiosqlite:////no/such/dir/ssehub.db"
    assert words(exc, url) == (
        "cannot open the SQLite database '/no/such/dir/ssehub.db' (unable to open database file)"
    )


async def test_the_wait_logs_one_line_per_attempt_until_the_store_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory that appears after the second attempt: then the schema is made."""
    later = tmp_path / "later"
    engine = create_engine(f"sqlite+aiosqlite:///{later / 'ssehub.db'}")

    class Appear(logging.Handler):
        """Makes the directory when the second failed attempt is logged."""

        retries = 0

        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                self.retries += 1
                if self.retries == 2:
                    later.mkdir()

    handler = Appear()
    logging.getLogger("ssehub.store").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="ssehub.store"):
            await open_store(engine, name="test", max_delay=0.05)
    finally:
        logging.getLogger("ssehub.store").removeHandler(handler)
        await engine.dispose()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith(f"test: cannot open the SQLite database '{later / 'ssehub.db'}'")
    assert lines[-1] == f"test: the SQLite database '{later / 'ssehub.db'}' answers"
    assert (later / "ssehub.db").exists()


async def test_a_database_of_another_schema_is_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE ssehub_event (seq INTEGER)")  # a layout of schema 1
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(ConfigError, match=r"^SSEHUB_DATABASE_URL: the database holds"):
            await open_store(engine, name="test", max_delay=0.05)
    finally:
        await engine.dispose()
