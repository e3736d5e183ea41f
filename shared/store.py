"""The edge's read side of the store: cursors and replay pages."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from ssehub.coalesce import Coalescer
from ssehub.db import chunks, store_errors
from ssehub.models import EventRow, UserCursor

POSITIONS_PER_QUERY = 500
PAGES_PER_QUERY = 50
Page = tuple[str, int, int]  # user, after, limit
EVENT = EventRow.__table__  # type: ignore[attr-defined]
CURSOR = UserCursor.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a user's log stands: events ``floor_seq+1 .. last_seq`` are retained."""

    last_seq: int
    floor_seq: int

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
        self._pages: Coalescer[Page, list[tuple[int, bytes]]] = Coalescer(self._read_pages, [])

    async def position(self, user_id: str) -> Position:
        """The user's position, read after the call (callers rely on that order)."""
        return await self._positions.get(user_id)

    async def events_after(self, user_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Stored events (their SSE bytes) with ``after < seq``, oldest first, at most ``limit``."""
        return await self._pages.get((user_id, after, limit))

    async def _read_positions(self, users: list[str]) -> dict[str, Position]:
        found: dict[str, Position] = {}

        async def read(some: list[str]) -> None:
            stmt = select(CURSOR.c.user_id, CURSOR.c.last_seq, CURSOR.c.floor_seq).where(
                CURSOR.c.user_id.in_(some)
            )
            async with self._connect() as db:
                for user, last_seq, floor_seq in (await db.execute(stmt)).all():
                    found[user] = Position(last_seq, floor_seq)

        await asyncio.gather(*(read(some) for some in chunks(users, POSITIONS_PER_QUERY)))
        return found

    async def _read_pages(self, pages: list[Page]) -> dict[Page, list[tuple[int, bytes]]]:
        found: dict[Page, list[tuple[int, bytes]]] = {}

        async def read(some: list[Page]) -> None:
            params: list[object] = []
            for page in some:
                params += page
            async with self._connect() as db:
                sql = _pages_sql(len(some), db.dialect.name == "postgresql")
                rows = await db.exec_driver_sql(sql, tuple(params))
                for i, seq, sse in cast(list[tuple[int, int, str]], rows.all()):
                    found.setdefault(some[i], []).append((seq, sse.encode()))

        # Chunks in parallel, as many as the store's concurrency allows.
        await asyncio.gather(*(read(some) for some in chunks(pages, PAGES_PER_QUERY)))
        return found

    async def ping(self) -> None:
        async with self._connect() as db:
            await db.execute(text("SELECT 1"))

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose failures (and slowness) surface as StoreUnavailable."""
        with store_errors():
            async with self._slots, asyncio.timeout(self._timeout), self.engine.connect() as db:
                yield db


@functools.lru_cache(maxsize=16)
def _pages_sql(n: int, pg: bool) -> str:
    """One replay page for each of ``n`` (user, after, limit) triples, each
    an index range scan of its own, tagged with its position in the list."""
    parts = []
    for i in range(n):
        u, a, lim = (f"${3 * i + 1}", f"${3 * i + 2}", f"${3 * i + 3}") if pg else ("?", "?", "?")
        parts.append(
            f"SELECT * FROM (SELECT {i} AS i, seq, sse FROM ssehub_event"
            f" WHERE user_id = {u} AND seq > {a} ORDER BY seq LIMIT {lim}) AS p{i}"
        )
    return " UNION ALL ".join(parts)
