"""Packed deliveries end to end, in both delivery designs: a conversation
event's deliveries travel as one message per edge queue (per-node delivery:
one message per edge, routed by the dispatcher; bindings: one sse.deliver
message with BCC), and every member gets its event once, in order, on
whichever edge holds it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from ssehub import pack, topology

from tests.conftest import make_stack
from tests.sse import open_stream
from tests.support import Stack, rabbitmq_vhost, uid

Records = list[tuple[str, bytes]]


@pytest.fixture(scope="module")
async def bindings_stack(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    # its own vhost: the session's dispatcher must not be the active consumer here
    db: Path = tmp_path_factory.mktemp("bindings") / "ssehub.db"
    with rabbitmq_vhost(broker_url) as amqp:
        async with make_stack(amqp, f"sqlite:///{db}", delivery="bindings") as stack:
            yield stack


@pytest.fixture(params=["nodes", "bindings"])
def designs(request: pytest.FixtureRequest) -> Stack:
    """The session's stack (per-node delivery, the default), or one on bindings."""
    name = "stack" if request.param == "nodes" else "bindings_stack"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def node_ids(stack: Stack) -> list[str]:
    return [app.state.edge.node.node_id for app in stack.apps]


@contextlib.asynccontextmanager
async def deliver_tap(stack: Stack, users: list[str]) -> AsyncIterator[asyncio.Queue[Records]]:
    """A queue that gets what the edges' queues get: bound on ssehub.nodes by
    their node ids (per-node delivery), or on sse.deliver for ``users`` as an
    edge's is. The records of each message that reaches it (a plain delivery
    is one record)."""
    got: asyncio.Queue[Records] = asyncio.Queue()
    conn = await aio_pika.connect(stack.settings.rabbitmq_url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(exclusive=True)
        if stack.settings.delivery == "nodes":
            for node in node_ids(stack):
                await q.bind(topology.NODES.name, node)
        else:
            for user in users:
                await q.bind(topology.DELIVER.name, user)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            headers = message.headers or {}
            assert "BCC" not in headers  # the broker strips it
            if pack.PACK_HEADER in headers:
                await got.put(list(pack.decode(message.body)))
            else:
                await got.put([(message.routing_key or "", message.body)])

        await q.consume(on_message, no_ack=True)
        yield got
    finally:
        await conn.close()


async def test_a_conversation_event_is_one_message_per_edge_queue(designs: Stack) -> None:
    stack = designs
    by_node = stack.settings.delivery == "nodes"
    conv = uid("conv")
    members = [uid("m") for _ in range(40)]
    await stack.publisher.set_members(conv, members)
    async with contextlib.AsyncExitStack() as es:
        tap = await es.enter_async_context(deliver_tap(stack, members))
        clients = []
        for i, user in enumerate(members[:6]):  # some members online, on both edges
            edge = stack.edges[i % 2]
            client = (await es.enter_async_context(open_stream(edge, stack.token(user))))[1]
            assert (await client.next()).event == "connected"
            clients.append(client)
        await stack.publisher.broadcast_to_conversation(conv, "message:new", {"n": 1})
        await stack.publisher.send_event_to_user(members[0], "after", None)
        messages: list[Records] = []
        async with asyncio.timeout(10):  # (presence events for the co-members come too)
            while not any(b"event: after" in sse for m in messages for _, sse in m):
                messages.append(await tap.get())
        with_event = [m for m in messages if any(b"message:new" in sse for _, sse in m)]
        if by_node:  # one message per edge, each with the members that edge holds
            assert len(with_event) == 2, "not one message per edge"
            assert sorted(u for m in with_event for u, _ in m) == sorted(members[:6])
        else:  # one message for every edge bound for any member; all members in it
            assert len(with_event) == 1, "the 40 deliveries did not travel as one message"
            assert sorted(u for u, _ in with_event[0]) == sorted(members)
        expected = [("message:new", "1"), ("after", "2")]
        for i, client in enumerate(clients):  # once each, on both edges
            got = await client.take(2 if i == 0 else 1)
            assert [(e.event, e.id) for e in got] == expected[: len(got)]


async def test_receipts_and_plain_events_keep_each_users_order(designs: Stack) -> None:
    stack = designs
    # A receipt-bearing event travels alone (it carries headers): the pack before
    # it is sent first, so the user's events still arrive 1, 2, 3.
    alice, bob = uid("alice"), uid("bob")
    async with contextlib.AsyncExitStack() as es:
        a = (await es.enter_async_context(open_stream(stack.edges[0], stack.token(alice))))[1]
        b = (await es.enter_async_context(open_stream(stack.edges[1], stack.token(bob))))[1]
        for c in (a, b):
            assert (await c.next()).event == "connected"
        await asyncio.gather(  # concurrent calls: the Publisher coalesces them into one batch
            stack.publisher.send_event_to_user(alice, "one", 1),
            stack.publisher.send_event_to_user(bob, "one", 1),
            stack.publisher.send_event_to_user(alice, "two", 2, receipt=True),
            stack.publisher.send_event_to_user(alice, "three", 3),
            stack.publisher.send_event_to_user(bob, "two", 2),
        )
        assert [(e.event, e.id) for e in await a.take(3)] == [
            ("one", "1"),
            ("two", "2"),
            ("three", "3"),
        ]
        assert [(e.event, e.id) for e in await b.take(2)] == [("one", "1"), ("two", "2")]
