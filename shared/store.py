"""The edge's read side of the store: cursors and replay pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.errors import StoreUnavailable
from shared.models import EventRow, UserCursor

EVENT = EventRow.__table__  # type: ignore[attr-defined]
CURSOR = UserCursor.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a user's log stands: events ``floor_seq+1 .. last_seq`` are retained."""

    last_seq: int
    floor_seq: int

    def can_resume(self, cursor: int) -> bool:
        return self.floor_seq <= cursor <= self.last_seq


class EventStore:
    def __init__(self, engine: AsyncEngine, timeout: float = 10.0, concurrency: int = 10) -> None:
        self.engine = engine
        self._timeout = timeout
        # A reconnect storm must queue here, not inside the connection pool where
        # the timeout would run out and send every waiting client away at once.
        self._slots = asyncio.Semaphore(concurrency)

    async def position(self, user_id: str) -> Position:
        stmt = select(CURSOR.c.last_seq, CURSOR.c.floor_seq).where(CURSOR.c.user_id == user_id)
        async with self._connect() as conn:
            row = (await conn.execute(stmt)).first()
        return Position(row[0], row[1]) if row else Position(0, 0)

    async def frames_after(
        self, user_id: str, after: int, limit: int, upto: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Stored frames with ``after < seq [<= upto]``, oldest first, at most ``limit``."""
        stmt = (
            select(EVENT.c.seq, EVENT.c.frame)
            .where(EVENT.c.user_id == user_id, EVENT.c.seq > after)
            .order_by(EVENT.c.seq)
            .limit(limit)
        )
        if upto is not None:
            stmt = stmt.where(EVENT.c.seq <= upto)
        async with self._connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(seq, frame.encode()) for seq, frame in rows]

    async def ping(self) -> None:
        async with self._connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose failures (and slowness) surface as StoreUnavailable."""
        try:
            async with self._slots, asyncio.timeout(self._timeout), self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"store: {exc.__class__.__name__}: {exc}") from exc
