"""The dispatcher's write side: one transaction per consumed batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import delete, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only
from ssehub.dispatcher.expand import Plan, conversations_of, keys_of, plan_batch
from ssehub.dispatcher.presence import PresenceOp, apply_presence, sweep_presence
from ssehub.dispatcher.scope import Scope
from ssehub.dispatcher.sequence import Delivery, assign, stored_rows
from ssehub.schema import EventMessage, Message
from ssehub.sse import render_event
from ssehub.storage.db import chunks, insert_rows, select_in, store_errors, sync_sqlite_engine
from ssehub.storage.models import DedupeKey, EventRow, Member, RedeliveryRow, UserCursor
from ssehub.topology import Notice

EVENT: Any = EventRow.__table__  # type: ignore[attr-defined]
CURSOR: Any = UserCursor.__table__  # type: ignore[attr-defined]
MEMBER: Any = Member.__table__  # type: ignore[attr-defined]
DEDUPE: Any = DedupeKey.__table__  # type: ignore[attr-defined]
REDELIVERY: Any = RedeliveryRow.__table__  # type: ignore[attr-defined]
REDELIVERY_MEMORY = 24 * 3600.0  # a redelivery count is forgotten a day after its last
T = TypeVar("T")
# Inside a store transaction: wait for a coroutine of the event loop (the
# forward's broker confirm), from the store's thread or SQLAlchemy's greenlet.
Wait = Callable[[Coroutine[Any, Any, None]], None]


# Stage C hands the events of members owned by other partitions on to them
# before its commit (dispatcher/forward.py); it waits for the broker's confirm.
Forward = Callable[[dict[int, list[Message]]], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Committed:
    """What a committed batch publishes, and the messages its plan refused."""

    deliveries: list[Delivery]
    refused: list[tuple[Message, str]] = field(default_factory=list)


class DispatchStore:
    def __init__(
        self,
        engine: AsyncEngine,
        dedupe_window: float,
        clock: Callable[[], float] = time.time,
        presence_cap: int = 100,
        partitions: int = 1,
        max_members: int | None = None,
    ) -> None:
        self.engine = engine
        self._max_members = max_members
        self._partitions = partitions
        self._sync = sync_sqlite_engine(engine) if engine.dialect.name == "sqlite" else None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ssehub-store")
        self._db: Connection | None = None  # SQLite: the store thread's (_in_thread)
        self._window = dedupe_window
        self._clock = clock
        self._presence_cap = presence_cap

    async def commit_batch(
        self,
        messages: Sequence[Message],
        presence: Sequence[PresenceOp] = (),
        *,
        partition: int = 0,
        forward: Forward | None = None,
    ) -> Committed:
        """Apply, number and store a batch of ``partition`` atomically; return
        what to publish, and what the plan refused (SSEHUB_MAX_MEMBERS).
        Events for members of other partitions are handed to ``forward``
        inside the transaction, before the commit: a batch that is redelivered
        after a crash either was not committed (it is planned again on the same
        members and forwarded again, deduped there) or was, after its forward
        had been confirmed.

        Raises StoreUnavailable (or the forward's broker error); the caller
        retries or redelivers the whole batch, which is safe because nothing
        of it was committed."""

        def commit(db: Connection, wait: Wait) -> Committed:
            scope = Scope(partition, self._partitions)
            plan, remote = self._plan(db, messages, scope)
            if remote:
                assert forward is not None, "events for other partitions need a forward"
                wait(forward(remote))
            deliveries = self._commit(db, plan, scope)
            if presence:
                now = self._clock()
                said = apply_presence(db, list(presence), now, self._presence_cap, scope)
                deliveries += self._announce(said, scope, forward, wait)
            return Committed(deliveries, plan.refused)

        return await self._transaction(commit)

    async def count_redeliveries(self, fingerprints: Sequence[str]) -> dict[str, int]:
        """One more redelivery of each fingerprinted message, committed before
        the batch is handled (so a crash it causes is counted); returns each
        one's count so far (dispatcher/backstop.py)."""
        now = self._clock()

        def count(db: Connection, _wait: Wait) -> dict[str, int]:
            db.execute(delete(REDELIVERY).where(REDELIVERY.c.last_at < now - REDELIVERY_MEMORY))
            db.execute(
                text(
                    "INSERT INTO ssehub_redelivery (fingerprint, deliveries, last_at)"
                    " VALUES (:f, 1, :t) ON CONFLICT (fingerprint) DO UPDATE SET"
                    " deliveries = ssehub_redelivery.deliveries + 1, last_at = excluded.last_at"
                ),
                [{"f": f, "t": now} for f in sorted(set(fingerprints))],
            )
            columns = ("fingerprint", "deliveries")
            rows = select_in(db, REDELIVERY, columns, "fingerprint", fingerprints)
            return {f: int(n) for f, n in rows}

        return await self._transaction(count)

    async def sweep_presence(
        self,
        grace: float,
        node_ttl: float,
        *,
        partition: int = 0,
        forward: Forward | None = None,
    ) -> list[Delivery]:
        """Expire silent edge nodes; return the ``user:offline`` deliveries due."""
        now = self._clock()
        scope = Scope(partition, self._partitions)

        def sweep(db: Connection, wait: Wait) -> list[Delivery]:
            said = sweep_presence(db, now, grace, node_ttl, self._presence_cap, scope)
            return self._announce(said, scope, forward, wait)

        return await self._transaction(sweep)

    def _announce(
        self, said: list[EventMessage], scope: Scope, forward: Forward | None, wait: Wait
    ) -> list[Delivery]:
        """Presence announcements: this partition's peers as deliveries, the
        others' handed on (ephemeral: best effort)."""
        local, remote = scope.split(said)
        if remote and forward is not None:
            wait(forward(remote))
        return [
            Delivery(user, None, render_event(None, m.event, m.data))
            for m in local
            for user in m.targets
        ]

    async def _transaction(self, work: Callable[[Connection, Wait], T]) -> T:
        """``work`` in one transaction, as plain (sync) SQLAlchemy code. SQLite:
        on the store's own thread, in one hop, with the sync driver (through
        aiosqlite every statement was a thread hop of its own, which waits for
        the GIL while the event loop is busy). PostgreSQL: in the async
        connection's greenlet (SQLAlchemy's ``run_sync``). ``work`` may wait
        for a coroutine of the event loop with the ``Wait`` it is given."""
        with store_errors():
            if self._sync is not None:
                loop = asyncio.get_running_loop()

                def in_thread(db: Connection) -> T:
                    return work(db, lambda aw: _from_thread(aw, loop))

                return await loop.run_in_executor(self._thread, self._in_thread, in_thread)
            async with self.engine.begin() as db:
                return await db.run_sync(lambda c: work(c, await_only))

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

    def _plan(
        self, db: Connection, messages: Sequence[Message], scope: Scope
    ) -> tuple[Plan, dict[int, list[Message]]]:
        """The batch planned on the store's state; with partitions, its events
        for other partitions' users taken out of it, to hand on."""
        members = self._load_members(db, conversations_of(messages))
        seen = self._load_seen(db, keys_of(messages), self._clock() - self._window, scope)
        plan = plan_batch(messages, members, seen, self._max_members)
        plan.members_before = members
        return scope.take_remote(plan)

    def _commit(self, db: Connection, plan: Plan, scope: Scope) -> list[Delivery]:
        now = self._clock()
        members = plan.members_before
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
            [(scope.key(k), now) for k in plan.new_keys],
            key="key",
            update=("created_at",),
        )
        self._revoke(db, plan.revocations)
        repeated = self._stored_deliveries(db, plan.repeated_keys, scope)
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

    def _load_seen(self, db: Connection, keys: set[str], since: float, scope: Scope) -> set[str]:
        # The window is applied here, not in SQL: with it in the WHERE clause
        # PostgreSQL chose the created_at index and scanned every recent key
        # (0.3-1 s per batch once the table held a few 10k keys).
        scoped = {scope.key(k): k for k in keys}
        rows = select_in(db, DEDUPE, ("key", "created_at"), "key", scoped)
        return {scoped[k] for k, created_at in rows if created_at >= since}

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

    def _stored_deliveries(self, db: Connection, keys: list[str], scope: Scope) -> list[Delivery]:
        """The stored events of keys seen before, to publish again; with
        partitions, those of this partition's users (a key's events for other
        partitions' users are theirs to publish)."""
        rows = select_in(db, EVENT, ("user_id", "seq", "sse", "key", "receipt"), "key", keys)
        rows.sort(key=lambda r: (r[0], r[1]))
        return [
            Delivery(u, s, sse.encode(), Notice.RECEIPT if receipt else None, key)
            for u, s, sse, key, receipt in rows
            if scope.owns(u)
        ]


def _from_thread(work: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop) -> None:
    """On the store's thread: run ``work`` on the loop and wait for it."""
    asyncio.run_coroutine_threadsafe(work, loop).result()
