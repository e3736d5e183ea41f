"""Partitioned dispatch (SSEHUB_PARTITIONS > 1) on the real broker and PostgreSQL:
what clients see is what one dispatcher gave them, with the work split.

Each test has a vhost and a database of its own: the deployment's partition
count is fixed per vhost, and the dispatchers here must be the only ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from ssehub.config import Settings
from ssehub.dispatcher.main import running_dispatcher
from ssehub.edge.app import create_app
from ssehub.edge.auth import mint_token
from ssehub.errors import ConfigError
from ssehub.partition import partition_of

from tests.sse import SSEClient, open_stream
from tests.support import (
    make_settings,
    postgres_database,
    publisher_of,
    rabbitmq_vhost,
    running_edge,
    serve,
    uid,
)

pytestmark = pytest.mark.postgres
N = 4


@pytest.fixture
async def settings(broker_url: str, pg_server_url: str) -> AsyncIterator[Settings]:
    with rabbitmq_vhost(broker_url) as amqp:
        async with postgres_database(pg_server_url) as db:
            yield make_settings(amqp, db, partitions=N)


def spread(count: int, partitions: int = N) -> list[str]:
    """``count`` user ids, covering every partition."""
    users: list[str] = []
    while len({partition_of(u, partitions) for u in users}) < partitions or len(users) < count:
        users.append(uid("p"))
    return users


async def streams_of(
    edge: str, settings: Settings, users: list[str], stack: contextlib.AsyncExitStack
) -> dict[str, SSEClient]:
    clients = {}
    for user in users:
        _, client = await stack.enter_async_context(open_stream(edge, mint_token(settings, user)))
        assert (await client.next()).event == "connected"
        clients[user] = client
    return clients


async def until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)  # wait-ok: the share is read from the processes


async def test_conversation_events_reach_members_across_partitions_in_order(
    settings: Settings,
) -> None:
    users = spread(12)
    conv = uid("conv")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_dispatcher(settings))
        edge, _ = await stack.enter_async_context(running_edge(settings))
        publisher = await stack.enter_async_context(publisher_of(settings))
        clients = await streams_of(edge, settings, users, stack)
        await publisher.set_members(conv, users[:8])
        for i in range(3):
            await publisher.broadcast_to_conversation(conv, "said", {"i": i}, key=f"{conv}-{i}")
        await publisher.remove_members(conv, [users[0]])
        await publisher.add_members(conv, users[8:])
        # concurrent calls: one batch message, split by the front, in order
        await asyncio.gather(
            *(publisher.send_event_to_user(u, "direct", {"u": u}) for u in users),
            publisher.broadcast_to_conversation(conv, "said", {"i": 3}, key=f"{conv}-3"),
        )
        for i, user in enumerate(users):
            want = [("said", n) for n in range(3)] if i < 8 else []
            want += [("direct", None)]
            if i != 0:
                want += [("said", 3)]
            got = await clients[user].take(len(want))
            assert [e.seq for e in got] == list(range(1, len(want) + 1)), user
            seen = [(e.event, e.json.get("i")) for e in got]
            assert sorted(seen, key=str) == sorted(want, key=str), user
            said = [e.json["i"] for e in got if e.event == "said"]
            assert said == sorted(said)  # a conversation's events in publish order
        # a retry of a conversation event is deduped by every partition it reached
        await publisher.broadcast_to_conversation(conv, "said", {"i": 3}, key=f"{conv}-3")
        await publisher.send_event_to_user(users[1], "after", None)
        nxt = await clients[users[1]].next()
        assert (nxt.event, nxt.seq) == ("after", 6)


async def test_two_processes_share_the_partitions_and_every_event_arrives(
    settings: Settings,
) -> None:
    users = spread(16)
    async with contextlib.AsyncExitStack() as stack:
        edge, _ = await stack.enter_async_context(running_edge(settings))
        publisher = await stack.enter_async_context(publisher_of(settings))
        clients = await streams_of(edge, settings, users, stack)
        async with running_dispatcher(settings, "first") as first:
            await until(lambda: first.partitions == list(range(N)))
            second = await stack.enter_async_context(running_dispatcher(settings, "second"))
            await until(lambda: len(first.partitions) == 2 and len(second.partitions) == 2)
            assert sorted(first.partitions + second.partitions) == list(range(N))
            for n in range(1, 4):
                await asyncio.gather(*(publisher.send_event_to_user(u, "e", n) for u in users))
            for user in users:
                got = await clients[user].take(3)
                assert [(e.seq, e.json) for e in got] == [(1, 1), (2, 2), (3, 3)], user
            assert second.batches > 0  # the second really worked on its share
            moved = set(first.partitions)
        # the first left: its partitions moved to the second, and their users'
        # edges joined again there (a resync of those partitions only)
        await until(lambda: second.partitions == list(range(N)))
        await asyncio.gather(*(publisher.send_event_to_user(u, "e", 4) for u in users))
        for user in users:
            got = await clients[user].next()
            assert (got.seq, got.json) == (4, 4), (user, partition_of(user, N) in moved)


async def test_a_process_with_another_partition_count_refuses_to_start(
    settings: Settings,
) -> None:
    async with running_dispatcher(settings) as first:
        async with asyncio.timeout(15):  # the deployment's count is the first one's
            await first.supervisor.ready.wait()
        other = settings.model_copy(update={"partitions": 2})
        with pytest.raises(ConfigError) as refused:
            async with running_dispatcher(other, "wrong"):
                await asyncio.sleep(30)  # wait-ok: it must end by itself, well before
        message = str(refused.value)
        assert "SSEHUB_PARTITIONS=2" in message and "has 4 partitions" in message
        assert "\n" not in message
        # an edge too: its background work ends, and the server that runs it stops
        app = create_app(other)
        failures: list[BaseException] = []
        app.state.fatal = failures.append
        async with serve(app):
            await until(lambda: failures)
        assert isinstance(failures[0], ConfigError)
        assert "SSEHUB_PARTITIONS=2" in str(failures[0])
