"""A revoke is kept as long as a token it covers can live: retention never
forgets one before max(SSEHUB_REVOCATION_TTL, SSEHUB_MAX_TOKEN_LIFETIME +
SSEHUB_JWT_LEEWAY) after its cut-off, so a revoked token never becomes valid
again, whatever the TTL says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.config import load_settings, normalize_database_url
from ssehub.dispatcher.retention import Retention, prune
from ssehub.storage.db import create_engine, create_schema
from ssehub.storage.store import EventStore

DAY = 86400.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'r.db'}"), writer=True)
    await create_schema(eng)
    yield eng
    await eng.dispose()


async def revoke(engine: AsyncEngine, user: str, before: float) -> None:
    async with engine.begin() as db:
        await db.execute(
            text(
                "INSERT INTO ssehub_user (user_id, last_seq, floor_seq, revoked_before)"
                " VALUES (:u, 0, 0, :b)"
            ),
            {"u": user, "b": before},
        )


async def kept(engine: AsyncEngine, user: str) -> bool:
    return (await EventStore(engine).position(user)).revoked_before is not None


async def test_a_revoke_outlives_a_shorter_ttl_until_no_token_it_covers_can_live(
    engine: AsyncEngine,
) -> None:
    settings = load_settings(
        _env_file=None, revocation_ttl=1 * DAY, max_token_lifetime=30 * DAY, jwt_leeway=60
    )
    rule = Retention.of(settings)
    assert rule.revocations_kept == 30 * DAY + 60
    await revoke(engine, "u1", before=0.0)
    for now in (2 * DAY, 30 * DAY, 30 * DAY + 59):  # past the TTL, within a token's life
        await prune(engine, rule, now)
        assert await kept(engine, "u1"), now
    await prune(engine, rule, 30 * DAY + 61)
    assert not await kept(engine, "u1")


async def test_a_longer_ttl_is_kept_as_set(engine: AsyncEngine) -> None:
    settings = load_settings(_env_file=None, revocation_ttl=90 * DAY, max_token_lifetime=DAY)
    rule = Retention.of(settings)
    await revoke(engine, "u2", before=0.0)
    await prune(engine, rule, 60 * DAY)
    assert await kept(engine, "u2")
    await prune(engine, rule, 90 * DAY + 1)
    assert not await kept(engine, "u2")


def test_the_defaults_keep_a_revoke_for_the_default_lifetime() -> None:
    rule = Retention(max_age=1, max_events=1, dedupe_window=1)
    assert rule.revocations_kept == 30 * DAY
