"""ssehub.storage.db.store_errors: every way a database fails is one StoreUnavailable,
whichever layer raised it (the dispatcher's SQLite hot path talks to sqlite3's
own cursor, below SQLAlchemy)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError
from ssehub.errors import StoreUnavailable
from ssehub.storage.db import store_errors


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
