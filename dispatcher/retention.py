"""Pruning: event history by age and count per user, dedupe keys by window.

A user's ``floor_seq`` records the highest pruned number, so an edge can tell
a resumable Last-Event-ID from one that fell behind the retained history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.db import store_errors


@dataclass(frozen=True, slots=True)
class Retention:
    max_age: float  # seconds
    max_events: int  # per user
    dedupe_window: float  # seconds
    revocation_ttl: float = 30 * 24 * 3600.0  # seconds a revoke is kept


RAISE_FLOOR_BY_COUNT = text(
    "UPDATE ssehub_user SET floor_seq = last_seq - :max_events "
    "WHERE last_seq - floor_seq > :max_events"
)
RAISE_FLOOR_BY_AGE = text(
    "UPDATE ssehub_user SET floor_seq = ("
    "  SELECT MAX(e.seq) FROM ssehub_event e"
    "  WHERE e.user_id = ssehub_user.user_id AND e.created_at < :cutoff) "
    "WHERE EXISTS (SELECT 1 FROM ssehub_event e"
    "  WHERE e.user_id = ssehub_user.user_id AND e.created_at < :cutoff"
    "  AND e.seq > ssehub_user.floor_seq)"
)
DELETE_BELOW_FLOOR = text(
    "DELETE FROM ssehub_event WHERE seq <= ("
    "  SELECT u.floor_seq FROM ssehub_user u WHERE u.user_id = ssehub_event.user_id)"
)
DELETE_OLD_KEYS = text("DELETE FROM ssehub_dedupe WHERE created_at < :cutoff")
# A revoke covers tokens issued before its cut-off; once SSEHUB_REVOCATION_TTL has
# passed since then, no token it covers may still be valid (tokens must not live
# longer than that), so it is forgotten.
FORGET_REVOCATIONS = text(
    "UPDATE ssehub_user SET revoked_before = NULL WHERE revoked_before < :cutoff"
)


async def prune(engine: AsyncEngine, rule: Retention, now: float) -> int:
    """One pruning pass in one transaction; returns the number of events deleted."""
    with store_errors():
        async with engine.begin() as db:
            await db.execute(RAISE_FLOOR_BY_COUNT, {"max_events": rule.max_events})
            await db.execute(RAISE_FLOOR_BY_AGE, {"cutoff": now - rule.max_age})
            deleted = await db.execute(DELETE_BELOW_FLOOR)
            await db.execute(DELETE_OLD_KEYS, {"cutoff": now - rule.dedupe_window})
            await db.execute(FORGET_REVOCATIONS, {"cutoff": now - rule.revocation_ttl})
            return int(deleted.rowcount or 0)
