"""The dispatcher's write side: one transaction per consumed batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import delete, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.dispatcher.expand import conversations_of, keys_of, plan_batch
from ssehub.dispatcher.presence import PresenceOp, apply_presence, sweep_presence
from ssehub.dispatcher.sequence import Delivery, assign, stored_rows
from ssehub.schema import Message
from ssehub.storage.db import chunks, insert_rows, select_in, store_errors, sync_sqlite_engine
from ssehub.storage.models import DedupeKey, EventRow, Member, UserCursor
from ssehub.topology import Notice

EVENT: Any = EventRow.__table__  # type: ignore[attr-defined]
CURSOR: Any = UserCursor.__table__  # type: ignore[attr-defined]
MEMBER: Any = Member.__table__  # type: ignore[attr-defined]
DEDUPE: Any = DedupeKey.__table__  # type: ignore[attr-defined]
T = TypeVar("T")


class DispatchStore:
    def __init__(
        self,
        engine: AsyncEngine,
        dedupe_window: float,
        clock: Callable[[], float] = time.time,
        presence_cap: int = 100,
    ) -> None:
        self.engine = engine
        self._sync = sync_sqlite_engine(engine) if engine.dialect.name == "sqlite" else None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ssehub-store")
        self._db: Connection | None = None  # SQLite: the store thread's (_in_thread)
        self._window = dedupe_window
        self._clock = clock
        self._presence_cap = presence_cap

    async def commit_batch(
        self, messages: Sequence[Message], presence: Sequence[PresenceOp] = ()
    ) -> list[Delivery]:
        """Apply, number and store a batch atomically; return what to publish.

        Raises StoreUnavailable; the caller retries the whole batch, which is
        safe because nothing of it was committed."""

        def commit(db: Connection) -> list[Delivery]:
            deliveries = self._commit(db, messages)
            if presence:
                deliveries += apply_presence(db, list(presence), self._clock(), self._presence_cap)
            return deliveries

        return await self._transaction(commit)

    async def sweep_presence(self, grace: float, node_ttl: float) -> list[Delivery]:
        """Expire silent edge nodes; return the ``user:offline`` deliveries due."""
        now = self._clock()
        return await self._transaction(
            lambda db: sweep_presence(db, now, grace, node_ttl, self._presence_cap)
        )

    async def _transaction(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction, as plain (sync) SQLAlchemy code. SQLite:
        on the store's own thread, in one hop, with the sync driver (through
        aiosqlite every statement was a thread hop of its own, which waits for
        the GIL while the event loop is busy). PostgreSQL: in the async
        connection's greenlet (SQLAlchemy's ``run_sync``)."""
        with store_errors():
            if self._sync is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._thread, self._in_thread, work)
            async with self.engine.begin() as db:
                return await db.run_sync(work)

    def _in_thread(self, work: Callable[[Connection], T]) -> T:
        # One connection for as long as it works: a pool checkout and a new
        # Connection per batch cost ~60 µs, a fifth of a one-event batch. A
        # batch that fails drops it, and the next one connects afresh.
        assert self._sync is not None
        db = self._db
        if db is None:
            db = self._db = self._sync.connect()
        try:
            with db.begin():
                return work(db)
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):  # discarded either way
                db.close()

    def close(self) -> None:
        if self._sync is not None:
            self._thread.submit(self._drop)  # on its thread, after a batch in flight
            self._thread.shutdown(wait=False)
            self._sync.dispose()

    def _commit(self, db: Connection, messages: Sequence[Message]) -> list[Delivery]:
        now = self._clock()
        members = self._load_members(db, conversations_of(messages))
        seen = self._load_seen(db, keys_of(messages), now - self._window)
        plan = plan_batch(messages, members, seen)
        last_seq = self._load_last_seq(db, plan.recipients)
        before = dict(last_seq)
        deliveries = assign(plan.fanouts, last_seq)

        for conv, after in plan.members_after.items():
            self._write_members(db, conv, members.get(conv, frozenset()), after)
        insert_rows(
            db,
            EVENT,
            ("user_id", "seq", "sse", "key", "created_at", "receipt"),
            stored_rows(deliveries, now),
        )
        insert_rows(
            db,
            CURSOR,
            ("user_id", "last_seq", "floor_seq"),
            [(u, s, 0) for u, s in last_seq.items() if before.get(u) != s],
            key="user_id",
            update=("last_seq",),
        )
        insert_rows(
            db,
            DEDUPE,
            ("key", "created_at"),
            [(k, now) for k in plan.new_keys],
            key="key",
            update=("created_at",),
        )
        self._revoke(db, plan.revocations)
        repeated = self._stored_deliveries(db, plan.repeated_keys)
        return repeated + deliveries

    def _revoke(self, db: Connection, revocations: dict[str, float]) -> None:
        """Store each user's revocation cut-off; a later revoke never lowers it."""
        if not revocations:
            return
        pg = db.dialect.name == "postgresql"
        latest = "GREATEST" if pg else "MAX"
        db.execute(
            text(
                "INSERT INTO ssehub_user (user_id, last_seq, floor_seq, revoked_before)"
                " VALUES (:u, 0, 0, :b) ON CONFLICT (user_id) DO UPDATE SET revoked_before ="
                f" {latest}(COALESCE(ssehub_user.revoked_before, 0), excluded.revoked_before)"
            ),
            [{"u": u, "b": b} for u, b in sorted(revocations.items())],
        )

    def _load_members(self, db: Connection, conversations: set[str]) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        rows = select_in(
            db, MEMBER, ("conversation_id", "user_id"), "conversation_id", conversations
        )
        for conv, user in rows:
            found.setdefault(conv, set()).add(user)
        return {conv: frozenset(users) for conv, users in found.items()}

    def _load_seen(self, db: Connection, keys: set[str], since: float) -> set[str]:
        # The window is applied here, not in SQL: with it in the WHERE clause
        # PostgreSQL chose the created_at index and scanned every recent key
        # (0.3-1 s per batch once the table held a few 10k keys).
        rows = select_in(db, DEDUPE, ("key", "created_at"), "key", keys)
        return {k for k, created_at in rows if created_at >= since}

    def _load_last_seq(self, db: Connection, users: set[str]) -> dict[str, int]:
        return dict(select_in(db, CURSOR, ("user_id", "last_seq"), "user_id", users))

    def _write_members(
        self, db: Connection, conv: str, before: frozenset[str], after: frozenset[str]
    ) -> None:
        gone = before - after
        new = after - before
        for part in chunks(gone):
            db.execute(
                delete(MEMBER).where(MEMBER.c.conversation_id == conv, MEMBER.c.user_id.in_(part))
            )
        if new:
            db.execute(
                MEMBER.insert(), [{"conversation_id": conv, "user_id": u} for u in sorted(new)]
            )

    def _stored_deliveries(self, db: Connection, keys: list[str]) -> list[Delivery]:
        rows = select_in(db, EVENT, ("user_id", "seq", "sse", "key", "receipt"), "key", keys)
        rows.sort(key=lambda r: (r[0], r[1]))
        return [
            Delivery(u, s, sse.encode(), Notice.RECEIPT if receipt else None, key)
            for u, s, sse, key, receipt in rows
        ]
