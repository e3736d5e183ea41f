"""The store, the same tests on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.config import normalize_database_url
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.retention import Retention, prune
from ssehub.dispatcher.sequence import Delivery
from ssehub.schema import EventMessage, MembershipMessage, Message
from ssehub.storage.db import create_engine, create_schema
from ssehub.storage.store import EventStore, Position

from tests.support import uid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(normalize_database_url(db_url), writer=True)
    await create_schema(eng)
    await create_schema(eng)  # idempotent on an existing database
    yield eng
    await eng.dispose()


def ev(
    target: str,
    n: object,
    *,
    key: str | None = None,
    kind: str = "user",
    exclude: frozenset[str] = frozenset(),
    ephemeral: bool = False,
) -> EventMessage:
    return EventMessage(kind, target, "e", str(n).encode(), key, exclude, ephemeral)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def commit(store: DispatchStore, messages: list[Message]) -> list[Delivery]:
    return (await store.commit_batch(messages)).deliveries


async def test_sequences_are_per_user_and_gap_free(engine: AsyncEngine) -> None:
    store = DispatchStore(engine, 3600)
    a, b = uid("a"), uid("b")
    d1 = await commit(store, [ev(a, 1), ev(b, 1), ev(a, 2)])
    d2 = await commit(store, [ev(a, 3), ev(a, "t", ephemeral=True)])
    assert [(d.user_id, d.seq) for d in d1 + d2] == [(a, 1), (b, 1), (a, 2), (a, 3), (a, None)]
    assert d1[0].body == b"id: 1\nevent: e\ndata: 1\n\n"
    assert d2[-1].body == b"event: e\ndata: t\n\n"
    reader = EventStore(engine)
    assert await reader.position(a) == Position(3, 0)
    assert await reader.position(uid()) == Position(0, 0)
    assert await reader.events_after(a, 1, 10) == [
        (2, b"id: 2\nevent: e\ndata: 2\n\n", False, None),
        (3, b"id: 3\nevent: e\ndata: 3\n\n", False, None),
    ]
    assert [e.seq for e in await reader.events_after(a, 0, 2)] == [1, 2]


async def test_membership_and_fanout(engine: AsyncEngine) -> None:
    store = DispatchStore(engine, 3600)
    conv, a, b, c = uid("conv"), uid("a"), uid("b"), uid("c")
    out = await commit(
        store,
        [
            MembershipMessage(conv, "set", (a, b), None),
            ev(conv, 1, kind="conversation", exclude=frozenset({a})),
            MembershipMessage(conv, "add", (c,), None),
        ],
    )
    assert [(d.user_id, d.seq) for d in out] == [(b, 1)]
    out = await commit(store, [ev(conv, 2, kind="conversation")])
    assert sorted((d.user_id, d.seq) for d in out) == sorted([(a, 1), (b, 2), (c, 1)])
    out = await commit(
        store, [MembershipMessage(conv, "remove", (a, b), None), ev(conv, 3, kind="conversation")]
    )
    assert [(d.user_id, d.seq) for d in out] == [(c, 2)]
    out = await commit(
        store, [MembershipMessage(conv, "set", (), None), ev(conv, 4, kind="conversation")]
    )
    assert out == []


async def test_dedupe_republishes_and_expires(engine: AsyncEngine) -> None:
    clock = Clock()
    store = DispatchStore(engine, 100, clock)
    a, key = uid("a"), uid("key")
    first = await commit(store, [ev(a, 1, key=key), ev(a, 1, key=key)])
    assert [d.seq for d in first] == [1]
    # a redelivery: no new event, but the stored event goes out again
    again = await commit(store, [ev(a, 1, key=key)])
    assert [(d.seq, d.body) for d in again] == [(1, first[0].body)]
    assert (await EventStore(engine).position(a)).last_seq == 1
    clock.now += 101  # past the window: the key is forgotten
    later = await commit(store, [ev(a, 1, key=key)])
    assert [d.seq for d in later] == [2]


async def test_retention_by_count_and_age(engine: AsyncEngine) -> None:
    clock = Clock()
    store = DispatchStore(engine, 50, clock)
    a, b = uid("a"), uid("b")
    await commit(store, [ev(a, i, key=f"{a}-{i}") for i in range(10)])
    clock.now += 1000
    await commit(store, [ev(b, 1), ev(b, 2)])
    rule = Retention(max_age=500, max_events=4, dedupe_window=50)
    deleted = await prune(engine, rule, clock.now)
    assert deleted >= 10  # a: all ten too old; b: young and few (others: earlier tests)
    reader = EventStore(engine)
    pos_a = await reader.position(a)
    assert pos_a == Position(10, 10)
    assert not pos_a.can_resume(3) and pos_a.can_resume(10)
    await commit(store, [ev(b, i) for i in range(3, 8)])
    await prune(engine, rule, clock.now)
    assert await reader.position(b) == Position(7, 3)
    assert [e.seq for e in await reader.events_after(b, 0, 100)] == [4, 5, 6, 7]
    # pruned dedupe keys: the same key makes a new event again
    again = await commit(store, [ev(a, 0, key=f"{a}-0")])
    assert [d.seq for d in again] == [11]


async def test_a_crowd_of_position_reads_is_answered_correctly(engine: AsyncEngine) -> None:
    """Concurrent reads are answered together (in chunks of 500 users): every
    caller still gets its own user's position, and one read after a commit
    sees that commit."""
    writer = DispatchStore(engine, 3600)
    users = [uid(f"p{i}") for i in range(1200)]
    await commit(writer, [ev(u, n) for i, u in enumerate(users[:600]) for n in range(i % 3)])
    store = EventStore(engine)
    asked = users + users[:10]  # the same user twice in one crowd, too
    positions = await asyncio.gather(*(store.position(u) for u in asked))
    for i, (user, position) in enumerate(zip(asked, positions, strict=True)):
        expected = (i % 1200) % 3 if (i % 1200) < 600 else 0
        assert position == Position(expected, 0), user
    await commit(writer, [ev(users[-1], "late")])
    assert await store.position(users[-1]) == Position(1, 0)


async def test_a_crowd_of_replay_reads_gets_each_its_own_page(engine: AsyncEngine) -> None:
    writer = DispatchStore(engine, 3600)
    users = [uid(f"r{i}") for i in range(120)]
    await commit(writer, [ev(u, n) for u in users for n in range(5)])
    store = EventStore(engine)
    asks = [(u, i % 5, 1 + i % 3) for i, u in enumerate(users)] + [(users[0], 0, 10)]
    pages = await asyncio.gather(*(store.events_after(*ask) for ask in asks))
    for (user, after, limit), page in zip(asks, pages, strict=True):
        want = list(range(after + 1, 6))[:limit]
        assert [e.seq for e in page] == want, (user, after, limit)
        assert all(e.sse.startswith(b"id: %d\n" % e.seq) for e in page)
