"""Per-node delivery (the default): a stale route costs bytes, never an event.

The dispatcher routes from a table the edges fill by joining users
(dispatcher/routes.py, edge/joins.py). These tests take routes away, or
start with no dispatcher at all, and check what the client sees: every event
once, in order, and live again afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from ssehub.config import Settings
from ssehub.dispatcher.main import running_dispatcher
from ssehub.dispatcher.service import Dispatcher
from ssehub.edge.auth import mint_token

from tests.sse import open_stream
from tests.support import make_settings, publisher_of, rabbitmq_vhost, running_edge, uid


@pytest.fixture
def settings(broker_url: str, tmp_path: Path) -> AsyncIterator[Settings]:
    # its own vhost: this test's dispatcher must be the active one, or none at all
    with rabbitmq_vhost(broker_url) as amqp:
        yield make_settings(amqp, f"sqlite:///{tmp_path / 'ssehub.db'}")


async def until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)  # wait-ok: the dispatcher's table signals nothing


def node_of(app: FastAPI) -> str:
    return str(app.state.edge.node.node_id)


async def test_an_edge_dropped_from_the_table_rejoins_and_loses_nothing(
    settings: Settings,
) -> None:
    user, other = uid("u"), uid("v")
    async with (
        running_dispatcher(settings) as dispatcher,
        running_edge(settings) as (edge, app),
        publisher_of(settings) as publisher,
        open_stream(edge, mint_token(settings, user)) as (_, client),
        open_stream(edge, mint_token(settings, other)) as (_, bystander),
    ):
        for c in (client, bystander):
            assert (await c.next()).event == "connected"
        await publisher.send_event_to_user(user, "before", 1)
        assert (await client.next()).seq == 1
        node = node_of(app)
        assert routes_of(dispatcher, user) == [node]

        # The dispatcher takes the edge for dead (no heartbeat for 3 beats):
        # its users are no longer routed there, and it is told to join again.
        table = dispatcher.workers[0].outbound.table
        assert table is not None
        table.heard(node, -1e9)
        dispatcher.workers[0].expire_routes()
        assert routes_of(dispatcher, user) == []
        for i in range(2, 6):  # some routed nowhere, some after the rejoin
            await publisher.send_event_to_user(user, "during", i)
        got = await client.take(4)
        assert [(e.event, e.seq) for e in got] == [("during", s) for s in range(2, 6)]
        await until(lambda: routes_of(dispatcher, other) == [node])
        await until(lambda: routes_of(dispatcher, user) == [node])
        await publisher.send_event_to_user(user, "after", 6)
        await publisher.send_event_to_user(other, "after", 1)
        assert [(e.event, e.seq) for e in [await client.next()]] == [("after", 6)]
        assert [(e.event, e.seq) for e in [await bystander.next()]] == [("after", 1)]


async def test_streams_open_with_no_dispatcher_and_catch_up_once_one_runs(
    settings: Settings,
) -> None:
    user = uid("u")
    async with (
        running_edge(settings) as (edge, _),
        publisher_of(settings) as publisher,
        open_stream(edge, mint_token(settings, user)) as (resp, client),
    ):
        # the join waits in the dispatch queue; the stream does not wait for it
        assert resp.status_code == 200
        assert (await client.next()).event == "connected"
        await publisher.send_event_to_user(user, "queued", 1)
        async with running_dispatcher(settings):
            assert [(e.event, e.seq) for e in [await client.next()]] == [("queued", 1)]
            await publisher.send_event_to_user(user, "live", 2)
            assert [(e.event, e.seq) for e in [await client.next()]] == [("live", 2)]


def routes_of(dispatcher: Dispatcher, user: str) -> list[str]:
    table = dispatcher.workers[0].outbound.table
    assert table is not None
    return sorted(table.nodes_of(user))


async def test_a_fleet_moving_from_bindings_to_nodes_gets_every_event_once(
    settings: Settings,
) -> None:
    """SSEHUB_DELIVERY=both on the dispatcher: an edge still on bindings and one
    already joining both get every event once (k8s/README.md, the rollout)."""
    conv, old_user, new_user = uid("conv"), uid("old"), uid("new")
    both = settings.model_copy(update={"delivery": "both"})
    async with (
        running_dispatcher(both),
        running_edge(settings.model_copy(update={"delivery": "bindings"})) as (old, _),
        running_edge(both) as (new, _),
        publisher_of(settings) as publisher,
        open_stream(old, mint_token(settings, old_user)) as (_, on_old),
        open_stream(new, mint_token(settings, new_user)) as (_, on_new),
    ):
        for c in (on_old, on_new):
            assert (await c.next()).event == "connected"
        await publisher.set_members(conv, [old_user, new_user])
        for i in range(1, 4):
            await publisher.broadcast_to_conversation(conv, "m", i)
        await publisher.send_event_to_user(old_user, "end", None)
        await publisher.send_event_to_user(new_user, "end", None)
        for c in (on_old, on_new):
            got = await c.take(4)
            assert [(e.event, e.seq) for e in got] == [("m", 1), ("m", 2), ("m", 3), ("end", 4)]
