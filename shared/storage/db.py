"""Async engine and schema: SQLite (aiosqlite) by default, PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel
from ssehub.backoff import Backoff
from ssehub.errors import ConfigError, StoreRejected, StoreUnavailable
from ssehub.storage import models
from ssehub.storage.tls import asyncpg_tls

TABLES = [
    models.SchemaRow.__table__,  # type: ignore[attr-defined]
    models.DeploymentRow.__table__,  # type: ignore[attr-defined]
    models.EventRow.__table__,  # type: ignore[attr-defined]
    models.UserCursor.__table__,  # type: ignore[attr-defined]
    models.Member.__table__,  # type: ignore[attr-defined]
    models.DedupeKey.__table__,  # type: ignore[attr-defined]
    models.PresenceRow.__table__,  # type: ignore[attr-defined]
    models.NodeRow.__table__,  # type: ignore[attr-defined]
    models.OnlineRow.__table__,  # type: ignore[attr-defined]
    models.RedeliveryRow.__table__,  # type: ignore[attr-defined]
]


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Database failures (and timeouts) of the block surface as StoreUnavailable."""
    try:
        yield
    except (DataError, sqlite3.DataError) as exc:  # the values, not the store
        raise StoreRejected(f"store: {_in_words(exc)}") from exc
    except (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"store: {_in_words(exc)}") from exc


def _in_words(exc: BaseException) -> str:
    """One line: the driver's error (SQLAlchemy's wrapper adds the statement and
    a link on lines of their own), never the statement's parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
        if exc.__cause__ is not None:  # the driver's own, under an adaption (asyncpg)
            exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def create_engine(url: str, *, writer: bool = False, pooled: bool = True) -> AsyncEngine:
    """``writer``: the dispatcher's engine, which takes SQLite's write lock up front
    so that its read-then-write batches are serialised against any other writer.
    ``pooled`` False: a fresh connection each time (readiness probes)."""
    options: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
        _tune_sqlite(engine.sync_engine, writer)
        return engine
    if pooled:
        options = {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
    return postgres_engine(url, **options)


def postgres_engine(url: str, **options: Any) -> AsyncEngine:
    """A PostgreSQL engine; libpq's TLS parameters on the URL taken as asyncpg's."""
    bare, connect_args = asyncpg_tls(url)
    return create_async_engine(bare, connect_args=connect_args, **options)


def sync_sqlite_engine(engine: AsyncEngine) -> Engine:
    """The same SQLite database through the sync driver, as a writer: for work
    done on a thread of its own in one go (dispatcher/persist.py)."""
    url = engine.url.set(drivername="sqlite")
    sync = sa_create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    _tune_sqlite(sync, writer=True)
    return sync


def _tune_sqlite(engine: Engine, writer: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL: edges read while the dispatcher writes, from other processes.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(db: Any) -> None:
        immediate = writer or db.get_execution_options().get(WRITE_LOCK_FIRST, False)
        db.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# Execution option: on SQLite, this connection's transactions take the write lock
# when they begin. A transaction that reads and then writes would otherwise fail
# at once with "database is locked" (SQLITE_BUSY_SNAPSHOT, which no busy timeout
# waits out) whenever another process wrote in between.
WRITE_LOCK_FIRST = "ssehub_write_lock_first"
# PostgreSQL: the advisory lock held by a transaction that creates the schema
# ("ssehub" in ASCII). Creating a table concurrently with another session fails
# there (a duplicate key in pg_type) instead of waiting.
SCHEMA_LOCK = 0x737365687562
SCHEMA_DEADLINE = 60.0  # seconds: how long start-up waits for its turn at the schema
LOCK_WAIT = 30.0  # seconds one attempt waits for the lock (SQLite: the busy timeout)


async def create_schema(engine: AsyncEngine, deadline: float = SCHEMA_DEADLINE) -> None:
    """A fresh database just works: tables are created when missing. A database
    of another schema version is refused with a ConfigError saying so.

    Processes that start together on a new database take turns: one creates the
    tables while the others wait for its lock (PostgreSQL: an advisory lock;
    SQLite: the write lock, taken first), then check what it made. A failure
    that is only the race (a lock, a busy file, a catalog row made meanwhile) is
    tried again until ``deadline``; then, or for any other failure, this raises
    StoreUnavailable with one line saying why."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    backoff = Backoff(0.05, 1.0)
    while True:
        try:
            with store_errors():
                async with engine.connect() as db:
                    await db.execution_options(**{WRITE_LOCK_FIRST: True})
                    async with db.begin():
                        await db.run_sync(_create_or_check, min(LOCK_WAIT, deadline))
            return
        except StoreUnavailable as exc:
            wait = backoff.next()
            if not _lost_a_race(exc.__cause__):
                raise StoreUnavailable(f"{exc} (creating the schema)") from exc.__cause__
            if loop.time() + wait > give_up:
                raise StoreUnavailable(
                    f"{exc} (creating the schema: other processes held it for {deadline:.0f} s)"
                ) from exc.__cause__
            await asyncio.sleep(wait)


def _lost_a_race(exc: BaseException | None) -> bool:
    """A failure that another process creating the schema at the same moment explains."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    # PostgreSQL (asyncpg, through SQLAlchemy's adaption, which keeps the SQLSTATE):
    # unique_violation (of a catalog), duplicate_table, duplicate_object,
    # lock_not_available (lock_timeout: the creator holds the schema lock)
    return getattr(exc, "sqlstate", None) in ("23505", "42P07", "42710", "55P03")


def _create_or_check(db: Connection, lock_wait: float) -> None:
    if db.dialect.name == "postgresql":
        # as long as SQLite's busy timeout, so a stuck creator is reported, not waited on forever
        db.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(lock_wait * 1000))}")
        db.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
    names = set(inspect(db).get_table_names())
    found: int | None = models.SCHEMA_VERSION
    if "ssehub_event" in names:  # an existing database: which layout?
        found = None
        if "ssehub_schema" in names:
            found = db.execute(text("SELECT MAX(version) FROM ssehub_schema")).scalar()
    if found != models.SCHEMA_VERSION:
        raise ConfigError(
            f"SSEHUB_DATABASE_URL: the database holds ssehub schema {found or 1}, this "
            f"ssehub needs schema {models.SCHEMA_VERSION}; point it at a new database "
            "(a development SQLite file can simply be deleted)"
        )
    SQLModel.metadata.create_all(db, tables=TABLES)
    if "ssehub_schema" not in names:
        db.execute(insert_ignore(db, models.SchemaRow.__table__), [{"version": found}])  # type: ignore[attr-defined]


def _insert(db: Connection | AsyncConnection, table: Any) -> Any:
    """The dialect's own INSERT, which knows ``ON CONFLICT``."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = postgresql.insert if db.dialect.name == "postgresql" else sqlite.insert
    return insert(table)


def insert_ignore(db: Connection | AsyncConnection, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING``."""
    return _insert(db, table).on_conflict_do_nothing()


def upsert(db: Connection | AsyncConnection, table: Any, key: str, update: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` for whichever dialect is in use."""
    stmt = _insert(db, table)
    return stmt.on_conflict_do_update(
        index_elements=[key], set_={col: stmt.excluded[col] for col in update}
    )


def insert_rows(
    db: Connection,
    table: Any,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    key: str | None = None,
    update: Sequence[str] = (),
) -> None:
    """Insert many rows through the driver, skipping SQLAlchemy's per-row
    parameter processing (most of a batch's commit time when done per row).
    PostgreSQL: one ``INSERT ... SELECT FROM unnest(<one array per column>)``;
    SQLite: one ``executemany``. With ``key``: ``ON CONFLICT (key)`` updates
    ``update`` (or does nothing). Rows must not repeat a key."""
    if not rows:
        return
    pg = db.dialect.name == "postgresql"
    sql = _insert_sql(table, tuple(columns), key, tuple(update), pg)
    if pg:
        db.exec_driver_sql(sql, tuple(list(col) for col in zip(*rows, strict=True)))
    else:
        _cursor(db).executemany(sql, rows)


_PG_TYPES = {
    "VARCHAR": "text",
    "TEXT": "text",
    "BIGINT": "bigint",
    "FLOAT": "float8",
    "BOOLEAN": "boolean",
}


@functools.lru_cache(maxsize=64)
def _insert_sql(
    table: Any, columns: tuple[str, ...], key: str | None, update: tuple[str, ...], pg: bool
) -> str:
    names = ", ".join(columns)
    if pg:
        arrays = ", ".join(
            f"${i}::{_PG_TYPES[str(table.c[c].type.compile()).split('(')[0]]}[]"
            for i, c in enumerate(columns, 1)
        )
        sql = f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays})"
    else:
        sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})"
    if key is not None:
        sets = ", ".join(f"{c} = excluded.{c}" for c in update)
        sql += f" ON CONFLICT ({key}) " + (f"DO UPDATE SET {sets}" if update else "DO NOTHING")
    return sql


def select_in(
    db: Connection, table: Any, columns: Sequence[str], key: str, values: Iterable[str]
) -> list[Any]:
    """``SELECT columns FROM table WHERE key IN values``, with the values as ONE
    parameter: PostgreSQL a join with ``unnest($1::text[])``, SQLite ``json_each(?)``.

    An expanded ``IN ($1, ..., $500)`` made a new statement per list length and,
    on PostgreSQL, a plan that compared every scanned row with each parameter in
    turn: 0.1-0.7 s per lookup once a fresh table held 100k keys (its statistics
    still those of an empty table). ``= ANY($1)`` did the same once PostgreSQL
    switched the prepared statement to a generic plan. A join with ``unnest``
    plans as an index probe per value."""
    values = list(dict.fromkeys(values))  # each row once, as IN would
    if not values:
        return []
    pg = db.dialect.name == "postgresql"
    sql = _select_in_sql(table.name, tuple(columns), key, pg)
    if pg:
        return list(db.exec_driver_sql(sql, (values,)).fetchall())
    cursor = _cursor(db)
    cursor.execute(sql, (orjson.dumps(values).decode(),))
    rows: list[Any] = cursor.fetchall()
    return rows


def _cursor(db: Connection) -> Any:
    """SQLite: the driver's own cursor, in the same transaction. Above it,
    ``exec_driver_sql`` cost 30 µs more per statement (its execution context and
    result object): at 2,000 one-event batches a second, most of a batch's
    commit. Its errors are sqlite3's own; ``store_errors`` names those too."""
    return db.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


@functools.lru_cache(maxsize=64)
def _select_in_sql(table: str, columns: tuple[str, ...], key: str, pg: bool) -> str:
    names = ", ".join(f"t.{c}" for c in columns)
    if pg:  # a join, not "= ANY($1)": a generic plan of that scanned (see select_in)
        return f"SELECT {names} FROM unnest($1::text[]) AS v(k) JOIN {table} t ON t.{key} = v.k"
    return f"SELECT {names} FROM {table} t WHERE t.{key} IN (SELECT value FROM json_each(?))"


CHUNK = 500  # bound the number of bound parameters in one IN (...)


def chunks(items: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for item in items:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf
