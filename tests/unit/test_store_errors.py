"""ssehub.storage.db.store_errors: every way a database fails is one StoreUnavailable,
whichever layer raised it (the dispatcher's SQLite hot path talks to sqlite3's
own cursor, below SQLAlchemy)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from ssehub.errors import StoreUnavailable
from ssehub.storage.db import _lost_a_race, store_errors


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.DatabaseError("file is not a database"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_failing_store_is_named_once(error: Exception) -> None:
    with pytest.raises(StoreUnavailable, match="store: ") as caught, store_errors():
        raise error
    assert caught.value.__cause__ is error


def test_other_errors_are_left_alone() -> None:
    with pytest.raises(KeyError), store_errors():
        raise KeyError("a bug, not an outage")


def test_the_error_is_one_line_without_the_statement() -> None:
    wrapped = OperationalError(
        "CREATE TABLE ssehub_schema (\n\tversion INTEGER NOT NULL\n)",
        {},
        sqlite3.OperationalError("database is locked"),
    )
    with pytest.raises(StoreUnavailable) as caught, store_errors():
        raise wrapped
    assert str(caught.value) == "store: OperationalError: database is locked"


class _PgError(Exception):
    """What SQLAlchemy's asyncpg adaption keeps of a PostgreSQL error: its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database table is locked"), True),
        (sqlite3.OperationalError("no such table: ssehub_event"), False),
        (sqlite3.DatabaseError("file is not a database"), False),
        (IntegrityError("CREATE TABLE", {}, _PgError("23505")), True),  # pg_type's unique index
        (OperationalError("CREATE TABLE", {}, _PgError("42P07")), True),  # duplicate_table
        (OperationalError("CREATE INDEX", {}, _PgError("42710")), True),  # duplicate_object
        (OperationalError("SELECT 1", {}, _PgError("28P01")), False),  # a wrong password
        (ConnectionRefusedError(111, "Connection refused"), False),
    ],
    ids=repr,
)
def test_only_losing_the_schema_race_is_tried_again(error: Exception, lost: bool) -> None:
    assert _lost_a_race(error) is lost
