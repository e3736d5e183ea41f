"""The edge's read side of the store: cursors and replay pages."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple, cast

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from ssehub.coalesce import Coalescer
from ssehub.storage.db import chunks, store_errors
from ssehub.storage.models import EventRow, UserCursor

POSITIONS_PER_QUERY = 500
PAGES_PER_QUERY = 50
Page = tuple[str, int, int]  # user, after, limit


class StoredEvent(NamedTuple):
    """One replayable event: its number, its SSE bytes, whether it asked for a
    receipt, and its idempotency key (the receipt's ``id``)."""

    seq: int
    sse: bytes
    receipt: bool
    key: str | None


EVENT = EventRow.__table__  # type: ignore[attr-defined]
CURSOR = UserCursor.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a user's log stands: events ``floor_seq+1 .. last_seq`` are retained."""

    last_seq: int
    floor_seq: int
    revoked_before: float | None = None  # tokens issued before it are refused

    def can_resume(self, cursor: int) -> bool:
        return self.floor_seq <= cursor <= self.last_seq


NOWHERE = Position(0, 0)  # a user with no events yet


class EventStore:
    def __init__(self, engine: AsyncEngine, timeout: float = 10.0, concurrency: int = 10) -> None:
        self.engine = engine
        self._timeout = timeout
        # A reconnect storm must queue here, not inside the connection pool where
        # the timeout would run out and send every waiting client away at once.
        self._slots = asyncio.Semaphore(concurrency)
        # Concurrent reads are answered together (shared/coalesce.py).
        self._positions = Coalescer(self._read_positions, NOWHERE)
        self._pages: Coalescer[Page, list[StoredEvent]] = Coalescer(self._read_pages, [])
        self._peers: Coalescer[tuple[str, int], list[str]] = Coalescer(self._read_peers, [])

    async def position(self, user_id: str) -> Position:
        """The user's position, read after the call (callers rely on that order)."""
        return await self._positions.get(user_id)

    async def online_peers(self, user_id: str, cap: int) -> list[str]:
        """Users online now who share a conversation of at most ``cap`` members
        with ``user_id`` (the ``presence:snapshot`` of a new stream), sorted."""
        return await self._peers.get((user_id, cap))

    async def events_after(self, user_id: str, after: int, limit: int) -> list[StoredEvent]:
        """Stored events (their SSE bytes) with ``after < seq``, oldest first, at most ``limit``."""
        return await self._pages.get((user_id, after, limit))

    async def _read_positions(self, users: list[str]) -> dict[str, Position]:
        found: dict[str, Position] = {}

        async def read(some: list[str]) -> None:
            stmt = select(
                CURSOR.c.user_id, CURSOR.c.last_seq, CURSOR.c.floor_seq, CURSOR.c.revoked_before
            ).where(CURSOR.c.user_id.in_(some))
            async with self._connect() as db:
                for user, last_seq, floor_seq, revoked in (await db.execute(stmt)).all():
                    found[user] = Position(last_seq, floor_seq, revoked)

        await asyncio.gather(*(read(some) for some in chunks(users, POSITIONS_PER_QUERY)))
        return found

    async def _read_pages(self, pages: list[Page]) -> dict[Page, list[StoredEvent]]:
        found: dict[Page, list[StoredEvent]] = {}

        async def read(some: list[Page]) -> None:
            params: list[object] = []
            for page in some:
                params += page
            async with self._connect() as db:
                sql = _pages_sql(len(some), db.dialect.name == "postgresql")
                rows = await db.exec_driver_sql(sql, tuple(params))
                typed = cast(list[tuple[int, int, str, bool, str | None]], rows.all())
                for i, seq, sse, receipt, key in typed:
                    found.setdefault(some[i], []).append(
                        StoredEvent(seq, sse.encode(), bool(receipt), key)
                    )

        # Chunks in parallel, as many as the store's concurrency allows.
        await asyncio.gather(*(read(some) for some in chunks(pages, PAGES_PER_QUERY)))
        return found

    async def _read_peers(self, asks: list[tuple[str, int]]) -> dict[tuple[str, int], list[str]]:
        found: dict[tuple[str, int], list[str]] = {}
        for cap in {c for _, c in asks}:
            users = [u for u, c in asks if c == cap]
            for some in chunks(users, POSITIONS_PER_QUERY):
                async with self._connect() as db:
                    rows = await db.execute(ONLINE_PEERS, {"users": some, "cap": cap})
                    for user, peer in rows.all():
                        found.setdefault((user, cap), []).append(peer)
        return {ask: sorted(set(peers)) for ask, peers in found.items()}

    async def ping(self) -> None:
        async with self._connect() as db:
            await db.execute(text("SELECT 1"))

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose failures (and slowness) surface as StoreUnavailable."""
        with store_errors():
            async with self._slots, asyncio.timeout(self._timeout), self.engine.connect() as db:
                yield db


# Announced online and not gone past the grace (user:offline not sent yet), in a
# conversation small enough to carry presence (SSEHUB_PRESENCE_MAX_MEMBERS).
ONLINE_PEERS = text(
    "SELECT DISTINCT m1.user_id, m2.user_id FROM ssehub_member m1"
    " JOIN ssehub_member m2 ON m2.conversation_id = m1.conversation_id"
    " JOIN ssehub_online o ON o.user_id = m2.user_id"
    " WHERE m1.user_id IN :users AND m2.user_id <> m1.user_id"
    " AND (SELECT COUNT(*) FROM ssehub_member m3"
    "      WHERE m3.conversation_id = m1.conversation_id) <= :cap"
).bindparams(bindparam("users", expanding=True))


@functools.lru_cache(maxsize=16)
def _pages_sql(n: int, pg: bool) -> str:
    """One replay page for each of ``n`` (user, after, limit) triples, each
    an index range scan of its own, tagged with its position in the list."""
    parts = []
    for i in range(n):
        u, a, lim = (f"${3 * i + 1}", f"${3 * i + 2}", f"${3 * i + 3}") if pg else ("?", "?", "?")
        parts.append(
            f"SELECT * FROM (SELECT {i} AS i, seq, sse, receipt, key FROM ssehub_event"
            f" WHERE user_id = {u} AND seq > {a} ORDER BY seq LIMIT {lim}) AS p{i}"
        )
    return " UNION ALL ".join(parts)
