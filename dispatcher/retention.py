"""Pruning: event history by age and count per user, dedupe keys by window.

A user's ``floor_seq`` records the highest pruned number, so an edge can tell
a resumable Last-Event-ID from one that fell behind the retained history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.config import Settings
from ssehub.storage.db import store_errors


@dataclass(frozen=True, slots=True)
class Retention:
    max_age: float  # seconds
    max_events: int  # per user
    dedupe_window: float  # seconds
    revocation_ttl: float = 30 * 24 * 3600.0  # seconds a revoke is kept, at least
    # the longest a token may be valid (SSEHUB_MAX_TOKEN_LIFETIME + SSEHUB_JWT_LEEWAY)
    token_lifetime: float = 30 * 24 * 3600.0

    @classmethod
    def of(cls, settings: Settings) -> Retention:
        return cls(
            settings.retention_max_age,
            settings.retention_max_events,
            settings.dedupe_window,
            settings.revocation_ttl,
            settings.max_token_lifetime + settings.jwt_leeway,
        )

    @property
    def revocations_kept(self) -> float:
        """Seconds a revoke is kept after its cut-off: never less than a token it
        covers can live (one issued at the cut-off is valid for the lifetime),
        so a revoked token never becomes valid again, whatever the TTL says."""
        return max(self.revocation_ttl, self.token_lifetime)


# Each pass costs what there is to prune, not the size of the log: it runs
# between batches, so a pass that scanned every event (200 ms at 100,000
# events on SQLite) held up every event behind it.
FLOORS_BY_COUNT = text(
    "SELECT user_id, last_seq - :max_events FROM ssehub_user"
    " WHERE last_seq - floor_seq > :max_events"
)
# Through ix_ssehub_event_created: only events past the age are visited, and
# pruned ones are gone. Numbers grow with time per user, so every event up to
# a user's newest aged one is aged too.
# (SQLite would walk the primary key for the GROUP BY, i.e. every event: told.)
FLOORS_BY_AGE = (
    "SELECT user_id, MAX(seq) FROM ssehub_event{} WHERE created_at < :cutoff GROUP BY user_id"
)
BY_CREATED = {"sqlite": " INDEXED BY ix_ssehub_event_created"}
RAISE_FLOOR = text(
    "UPDATE ssehub_user SET floor_seq = :floor WHERE user_id = :user AND floor_seq < :floor"
)
DELETE_BELOW_FLOOR = text("DELETE FROM ssehub_event WHERE user_id = :user AND seq <= :floor")
# PostgreSQL: one statement for every user (asyncpg's executemany has no row count)
PG_DELETE_BELOW_FLOOR = text(
    "DELETE FROM ssehub_event e USING (SELECT unnest(CAST(:users AS text[])) AS u,"
    " unnest(CAST(:floors AS bigint[])) AS f) AS p WHERE e.user_id = p.u AND e.seq <= p.f"
)
DELETE_OLD_KEYS = text("DELETE FROM ssehub_dedupe WHERE created_at < :cutoff")
# A revoke covers tokens issued before its cut-off; once the longest a token may
# live has passed since then (edges refuse a token whose exp is further than
# SSEHUB_MAX_TOKEN_LIFETIME from its iat), no token it covers is still valid,
# so it is forgotten (Retention.revocations_kept).
FORGET_REVOCATIONS = text(
    "UPDATE ssehub_user SET revoked_before = NULL WHERE revoked_before < :cutoff"
)


async def prune(engine: AsyncEngine, rule: Retention, now: float) -> int:
    """One pruning pass in one transaction; returns the number of events deleted."""
    with store_errors():
        async with engine.begin() as db:
            floors: dict[str, int] = {}
            by_count = await db.execute(FLOORS_BY_COUNT, {"max_events": rule.max_events})
            by_age_sql = FLOORS_BY_AGE.format(BY_CREATED.get(db.dialect.name, ""))
            by_age = await db.execute(text(by_age_sql), {"cutoff": now - rule.max_age})
            for user, floor in [*by_count.all(), *by_age.all()]:
                floors[user] = max(floors.get(user, 0), int(floor))
            deleted = 0
            if floors:
                rows = [{"user": u, "floor": f} for u, f in sorted(floors.items())]
                await db.execute(RAISE_FLOOR, rows)
                if db.dialect.name == "postgresql":
                    users, cuts = zip(*sorted(floors.items()), strict=True)
                    params = {"users": list(users), "floors": list(cuts)}
                    result = await db.execute(PG_DELETE_BELOW_FLOOR, params)
                else:
                    result = await db.execute(DELETE_BELOW_FLOOR, rows)
                deleted = int(result.rowcount or 0)
            await db.execute(DELETE_OLD_KEYS, {"cutoff": now - rule.dedupe_window})
            await db.execute(FORGET_REVOCATIONS, {"cutoff": now - rule.revocations_kept})
            return deleted
