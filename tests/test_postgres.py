"""The whole pipeline on PostgreSQL, including retention as a client sees it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from ssehub.dispatcher.retention import Retention, prune
from ssehub.storage.db import create_engine

from tests.conftest import make_stack
from tests.sse import open_stream
from tests.support import Stack, rabbitmq_vhost, uid

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
async def pg_stack(broker_url: str, pg_url: str) -> AsyncIterator[Stack]:
    # its own vhost: the session's SQLite dispatcher must not be the active consumer here
    with rabbitmq_vhost(broker_url) as amqp:
        async with make_stack(amqp, pg_url, edges=2) as stack:
            yield stack


async def test_delivery_replay_and_retention_on_postgres(pg_stack: Stack) -> None:
    stack = pg_stack
    conv, a, b = uid("conv"), uid("a"), uid("b")
    await stack.publisher.set_members(conv, [a, b])
    async with open_stream(stack.edges[1], stack.token(a)) as (_, client):
        await client.next()
        for i in range(10):
            await stack.publisher.broadcast_to_conversation(conv, "m", i, exclude=[b])
        got = await client.take(10)
        assert [e.seq for e in got] == list(range(1, 11))

    engine = create_engine(stack.settings.database_url)
    try:
        await prune(engine, Retention(max_age=3600, max_events=4, dedupe_window=3600), time.time())
    finally:
        await engine.dispose()

    # behind the retained history: recovered false, cursor = latest, no replay
    async with open_stream(stack.edges[0], stack.token(a), last_event_id="2") as (_, client):
        hello = await client.next()
        assert hello.json["recovered"] is False and hello.id == "10"
        await stack.publisher.send_event_to_user(a, "live", None)
        assert [(e.event, e.seq) for e in await client.take(1)] == [("live", 11)]
    # within it: exact replay
    async with open_stream(stack.edges[0], stack.token(a), last_event_id="7") as (_, client):
        hello = await client.next()
        assert hello.json["recovered"] is True and hello.id == "7"
        assert [e.seq for e in await client.take(4)] == [8, 9, 10, 11]
