"""ssehub.storage.db.select_in on both stores: one parameter however many values, and
values that JSON or SQL would mangle come back intact."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Connection
from ssehub.config import normalize_database_url
from ssehub.storage.db import create_engine, create_schema, insert_rows, select_in
from ssehub.storage.models import DedupeKey

from tests.support import uid

DEDUPE = DedupeKey.__table__  # type: ignore[attr-defined]
AWKWARD = ['quote"d', "back\\slash", "brack]et", "ünï", "comma,ok", "it's", "%s", "$1", "?"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    return str(request.getfixturevalue("pg_url"))


async def test_rows_for_the_values_that_exist_each_once(db_url: str) -> None:
    engine = create_engine(normalize_database_url(db_url))
    try:
        await create_schema(engine)
        run = uid("k")
        stored = [f"{run}-{v}" for v in AWKWARD] + [f"{run}-{n}" for n in range(3000)]

        def work(db: Connection) -> tuple[list[object], list[object], list[object]]:
            insert_rows(db, DEDUPE, ("key", "created_at"), [(k, 1.0) for k in stored])
            asked = [*stored, *stored[:5], f"{run}-missing"]  # repeats, and one absent
            return (
                sorted(r[0] for r in select_in(db, DEDUPE, ("key",), "key", asked)),
                select_in(db, DEDUPE, ("key", "created_at"), "key", []),
                select_in(db, DEDUPE, ("key",), "key", [f"{run}-missing"]),
            )

        async with engine.begin() as db:
            found, none, missing = await db.run_sync(work)
        assert found == sorted(stored)
        assert none == [] and missing == []
    finally:
        await engine.dispose()
