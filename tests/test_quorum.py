"""SSEHUB_QUEUE_TYPE=quorum: the dispatch queue and sse.dead as quorum queues, in
a vhost of their own (a queue's type cannot change, so none is shared with the
classic tests): delivery, dead letters, and single-active-consumer failover."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
from ssehub import topology
from ssehub.config import Settings, load_settings
from ssehub.dispatcher.main import running_dispatcher
from ssehub.dispatcher.service import Dispatcher
from ssehub.edge.auth import mint_token
from ssehub.errors import ConfigError
from ssehub.publisher import Publisher

from tests.conftest import make_stack
from tests.sse import SSEClient, open_stream
from tests.support import (
    Stack,
    dead_letter_queue,
    list_queues,
    make_settings,
    rabbitmq_vhost,
    running_edge,
    uid,
)


@pytest.fixture(scope="module")
def quorum_vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


@pytest.fixture(scope="module")
def quorum_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('quorum') / 'ssehub.db'}"


@pytest.fixture(scope="module")
async def quorum_stack(quorum_vhost: str, quorum_db: str) -> AsyncIterator[Stack]:
    async with make_stack(quorum_vhost, quorum_db, edges=1, queue_type="quorum") as s:
        yield s


def queue_types(amqp_url: str) -> dict[str, str]:
    """name -> type of the vhost's queues, as the broker reports them."""
    return {name: kind for name, kind in list_queues(amqp_url, "type")}


# -- the topology and the setting, without a broker ----------------------------------
def test_dispatcher_queues_carry_the_type() -> None:
    dispatch, dead = topology.dispatcher_queues("quorum")
    assert dispatch.name == "ssehub.dispatch" and dead.name == "sse.dead"
    assert dispatch.arguments == {"x-single-active-consumer": True, "x-queue-type": "quorum"}
    bound = {"x-max-length": topology.DEAD_LETTER_MAX, "x-overflow": "drop-head"}
    assert dead.arguments == {**bound, "x-queue-type": "quorum"}
    assert dispatch.durable and dead.durable and not dispatch.exclusive
    assert dispatch.bindings == topology.DISPATCH.bindings
    # classic: declared exactly as before the setting existed
    assert topology.dispatcher_queues("classic") == (topology.DISPATCH, topology.dead_queue())
    assert "x-queue-type" not in topology.DISPATCH.arguments


def test_edge_queues_stay_exclusive_classic() -> None:
    spec = topology.edge_queue("n1")
    assert spec.exclusive and not spec.durable
    assert spec.arguments["x-queue-type"] == "classic"


def test_queue_type_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSEHUB_QUEUE_TYPE", raising=False)
    assert load_settings(_env_file=None).queue_type == "classic"
    monkeypatch.setenv("SSEHUB_QUEUE_TYPE", "Quorum")
    assert load_settings(_env_file=None).queue_type == "quorum"
    monkeypatch.setenv("SSEHUB_QUEUE_TYPE", "stream")
    with pytest.raises(ConfigError, match="SSEHUB_QUEUE_TYPE"):
        load_settings(_env_file=None)


# -- on RabbitMQ ---------------------------------------------------------------------
async def test_queues_are_quorum_and_events_are_delivered(quorum_stack: Stack) -> None:
    types = queue_types(quorum_stack.settings.rabbitmq_url)
    assert types["ssehub.dispatch"] == "quorum"
    assert types["sse.dead"] == "quorum"
    assert all(t == "classic" for n, t in types.items() if n.startswith("ssehub.edge."))
    user, other = uid(), uid()
    conv = uid("c")
    async with (
        open_stream(quorum_stack.edge, quorum_stack.token(user)) as (_, client),
        open_stream(quorum_stack.edge, quorum_stack.token(other)) as (_, other_client),
    ):
        await client.next()
        await other_client.next()
        await quorum_stack.publisher.set_members(conv, [user, other])
        for i in range(5):
            await quorum_stack.publisher.send_event_to_user(user, "n", i)
        await quorum_stack.publisher.broadcast_to_conversation(conv, "c", "hi", exclude=[user])
        got = await client.take(5)
        assert [(e.seq, e.json) for e in got] == [(i + 1, i) for i in range(5)]
        assert [(e.event, e.json) for e in await other_client.take(1)] == [("c", "hi")]


async def test_bad_message_is_dead_lettered_into_the_quorum_queue(quorum_stack: Stack) -> None:
    url = quorum_stack.settings.rabbitmq_url
    user = uid()
    async with dead_letter_queue(url) as dead:
        conn = await aio_pika.connect(url)
        try:
            ch = await conn.channel(publisher_confirms=True)
            events = await ch.get_exchange("sse.events")
            await events.publish(
                aio_pika.Message(b"{nope", message_id=f"dl-{user}"), f"user.{user}"
            )
        finally:
            await conn.close()
        async with asyncio.timeout(30):
            while (msg := await dead.get()).message_id != f"dl-{user}":
                pass
    assert msg.body == b"{nope"
    assert "body: not valid" in str((msg.headers or {})["x-ssehub-error"])
    assert msg.headers["x-ssehub-routing-key"] == f"user.{user}"


async def test_a_publisher_needs_no_queue_type(quorum_stack: Stack) -> None:
    # Publishers declare nothing: one left on the default type publishes to a
    # quorum deployment as to any other.
    user = uid()
    async with open_stream(quorum_stack.edge, quorum_stack.token(user)) as (_, client):
        await client.next()
        async with Publisher(quorum_stack.settings.rabbitmq_url, attempts=2) as plain:
            await plain.send_event_to_user(user, "n", 1)
        assert (await client.next()).json == 1


async def test_quorum_on_a_classic_queue_says_so(broker_url: str) -> None:
    with rabbitmq_vhost(broker_url) as url:
        conn = await aio_pika.connect(url)
        try:
            await topology.declare_core(await conn.channel())  # classic, like before
            with pytest.raises(
                ConfigError, match="is a classic queue but SSEHUB_QUEUE_TYPE=quorum"
            ):
                await topology.declare_core(await conn.channel(), "quorum")
        finally:
            await conn.close()


# -- single-active-consumer failover -------------------------------------------------
@contextlib.asynccontextmanager
async def dispatcher(settings: Settings, name: str) -> AsyncIterator[Dispatcher]:
    """A dispatcher whose consumer is registered when yielded, so the order of
    start-up decides which one is active."""
    async with running_dispatcher(settings, name) as d:
        async with asyncio.timeout(30):
            await d.supervisor.ready.wait()
        yield d


async def publish_range(publisher: Publisher, user: str, start: int, stop: int) -> None:
    for i in range(start, stop):
        await publisher.send_event_to_user(user, "n", i)


async def take_range(client: SSEClient, start: int, stop: int) -> None:
    got = await client.take(stop - start, timeout=60)
    assert [(e.seq, e.json) for e in got] == [(i + 1, i) for i in range(start, stop)]


async def test_failover_between_dispatchers_loses_nothing(broker_url: str, quorum_db: str) -> None:
    with rabbitmq_vhost(broker_url) as vhost:  # no other dispatcher in it
        await _failover(make_settings(vhost, quorum_db, queue_type="quorum"))


async def _failover(settings: Settings) -> None:
    user = uid()
    async with contextlib.AsyncExitStack() as stack:
        first_alive = contextlib.AsyncExitStack()
        stack.push_async_callback(first_alive.aclose)
        first = await first_alive.enter_async_context(dispatcher(settings, "first"))
        second = await stack.enter_async_context(dispatcher(settings, "second"))
        url, _ = await stack.enter_async_context(running_edge(settings))
        publisher = Publisher(settings.rabbitmq_url, queue_type="quorum")
        stack.push_async_callback(publisher.close)
        _, client = await stack.enter_async_context(open_stream(url, mint_token(settings, user)))
        await client.next()

        await publish_range(publisher, user, 0, 20)
        await take_range(client, 0, 20)
        assert first.batches > 0 and second.batches == 0  # the first consumer is the active one

        # Stop the active one with a burst in flight: the standby takes over.
        burst = asyncio.create_task(publish_range(publisher, user, 20, 220))
        await take_range(client, 20, 40)
        await first_alive.aclose()
        await burst
        await take_range(client, 40, 220)
        assert second.batches > 0

        # Now the active one loses its connection mid-burst: what it had not acked
        # goes to the new standby, and reaches the client once (dedupe by key).
        third = await stack.enter_async_context(dispatcher(settings, "third"))
        burst = asyncio.create_task(publish_range(publisher, user, 220, 420))
        await take_range(client, 220, 240)
        connection = second.supervisor.connection
        assert connection is not None
        await connection.close()
        await burst
        await take_range(client, 240, 420)
        assert third.batches > 0
        assert client.pending() == []
