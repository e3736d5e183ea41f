"""The edge's read side of the store: cursors and replay pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import chunks
from shared.errors import StoreUnavailable
from shared.models import EventRow, UserCursor

POSITIONS_PER_QUERY = 500
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
        # Position reads asked for while one is running wait for the next, which
        # answers all of them in one query: a crowd connecting at once costs a
        # few queries, not one (and a thread hop, for SQLite) each.
        self._wanted: dict[str, list[asyncio.Future[Position]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def position(self, user_id: str) -> Position:
        """The user's position, read after the call (callers rely on that order)."""
        wanted: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(user_id, []).append(wanted)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_positions())
        return await wanted

    async def _read_positions(self) -> None:
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                try:
                    found = await self._positions(list(wanted))
                except StoreUnavailable as exc:
                    _answer(wanted, {}, exc)
                else:
                    _answer(wanted, found, None)
        finally:
            self._reader = None

    async def _positions(self, users: list[str]) -> dict[str, Position]:
        found: dict[str, Position] = {}
        for some in chunks(users, POSITIONS_PER_QUERY):
            stmt = select(CURSOR.c.user_id, CURSOR.c.last_seq, CURSOR.c.floor_seq).where(
                CURSOR.c.user_id.in_(some)
            )
            async with self._connect() as conn:
                for user, last_seq, floor_seq in (await conn.execute(stmt)).all():
                    found[user] = Position(last_seq, floor_seq)
        return found

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


def _answer(
    wanted: dict[str, list[asyncio.Future[Position]]],
    found: dict[str, Position],
    error: StoreUnavailable | None,
) -> None:
    for user, futures in wanted.items():
        for future in futures:
            if future.done():  # its stream went away meanwhile
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(found.get(user, NOWHERE))
