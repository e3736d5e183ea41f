"""Presence: user:online / user:offline to conversation peers, ephemeral, with a grace period."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.conftest import make_stack
from tests.sse import open_stream
from tests.support import Stack, rabbitmq_vhost, uid


@pytest.fixture(scope="module")
async def presence_stack(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    db = f"sqlite:///{tmp_path_factory.mktemp('presence') / 'p.db'}"
    with rabbitmq_vhost(broker_url) as amqp:
        async with make_stack(
            amqp, db, edges=2, presence=True, presence_grace=0.5, presence_heartbeat=0.5
        ) as stack:
            yield stack


async def test_online_then_offline_after_grace(presence_stack: Stack) -> None:
    stack = presence_stack
    conv, alice, bob, stranger = uid("conv"), uid("alice"), uid("bob"), uid("x")
    await stack.publisher.set_members(conv, [alice, bob])
    async with contextlib.AsyncExitStack() as es:
        b = (await es.enter_async_context(open_stream(stack.edges[0], stack.token(bob))))[1]
        s = (await es.enter_async_context(open_stream(stack.edges[0], stack.token(stranger))))[1]
        await b.next()
        await s.next()
        # nobody else online yet: empty snapshots, right after connected
        assert (await b.next()).json == {"online": []}
        assert (await s.next()).json == {"online": []}
        async with open_stream(stack.edges[1], stack.token(alice)) as (_, a):
            await a.next()
            # alice, who signs in second, learns that bob is already there
            snapshot = await a.next()
            assert (snapshot.event, snapshot.json, snapshot.id) == (
                "presence:snapshot",
                {"online": [bob]},
                None,
            )
            ev = await b.until(lambda e: e.event == "user:online" and e.json["userId"] == alice)
            assert ev[-1].id is None  # ephemeral
            # a second stream of alice, on the other edge, announces nothing new
            async with open_stream(stack.edges[0], stack.token(alice)) as (_, a2):
                await a2.next()
                assert (await a2.next()).json == {"online": [bob]}
        ev = await b.until(lambda e: e.event == "user:offline", timeout=10)
        assert ev[-1].json == {"userId": alice} and ev[-1].id is None
        assert [e for e in ev if e.event == "user:online"] == []
        # no shared conversation: the stranger heard nothing about alice
        await stack.publisher.send_event_to_user(stranger, "end", None)
        assert [e.event for e in await s.until(lambda e: e.event == "end")] == ["end"]


async def test_quick_reconnect_within_grace_is_not_announced(presence_stack: Stack) -> None:
    stack = presence_stack
    conv, alice, bob = uid("conv"), uid("alice"), uid("bob")
    await stack.publisher.set_members(conv, [alice, bob])
    async with open_stream(stack.edges[0], stack.token(bob)) as (_, b):
        await b.next()
        async with open_stream(stack.edges[0], stack.token(alice)) as (_, a):
            await a.next()
            await b.until(lambda e: e.event == "user:online")
        async with open_stream(stack.edges[1], stack.token(alice)) as (_, a):  # back at once
            await a.next()
            await stack.publisher.send_event_to_user(bob, "mark", None)
            got = await b.until(lambda e: e.event == "mark")
            assert [e.event for e in got] == ["mark"]
        got = await b.until(lambda e: e.event == "user:offline", timeout=10)
        assert [e.event for e in got] == ["user:offline"]
