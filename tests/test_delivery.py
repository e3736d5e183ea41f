"""End to end: publisher → RabbitMQ → dispatcher → store → edges → SSE clients."""

from __future__ import annotations

import asyncio
import contextlib

from tests.sse import Event, SSEClient, open_stream
from tests.support import Stack, uid


async def connected(client: SSEClient) -> Event:
    ev = await client.next()
    assert ev.event == "connected", ev
    return ev


async def test_stream_preamble_and_headers(stack: Stack) -> None:
    user = uid()
    async with open_stream(stack.edge, stack.token(user)) as (resp, client):
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in resp.headers
        ev = await connected(client)
        assert client.retry is not None and 1500 <= client.retry <= 4500
        assert ev.id == "0"
        data = ev.json
        assert data["userId"] == user
        assert data["connectionId"].startswith("c-")
        assert data["recovered"] is False


async def test_user_event_reaches_every_connection_of_that_user_only(stack: Stack) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with contextlib.AsyncExitStack() as es:
        a1 = (await es.enter_async_context(open_stream(stack.edges[0], stack.token(alice))))[1]
        a2 = (await es.enter_async_context(open_stream(stack.edges[1], stack.token(alice))))[1]
        b1 = (await es.enter_async_context(open_stream(stack.edges[1], stack.token(bob))))[1]
        for c in (a1, a2, b1):
            await connected(c)
        await stack.publisher.send_event_to_user(alice, "message:new", {"text": "hi alice"})
        await stack.publisher.send_event_to_user(bob, "message:new", {"text": "hi bob"})
        for c in (a1, a2):
            ev = await c.next()
            assert (ev.event, ev.id, ev.json) == ("message:new", "1", {"text": "hi alice"})
        ev = await b1.next()
        assert (ev.id, ev.json) == ("1", {"text": "hi bob"})
        # and nothing else arrived for anyone
        await stack.publisher.send_event_to_user(alice, "marker", 1)
        await stack.publisher.send_event_to_user(bob, "marker", 1)
        for c in (a1, a2, b1):
            ev = await c.next()
            assert ev.event == "marker" and ev.id == "2"


async def test_conversation_broadcast_respects_exclude_across_edges(stack: Stack) -> None:
    conv = uid("conv")
    users = [uid("m") for _ in range(4)]
    outsider = uid("out")
    await stack.publisher.set_members(conv, users)
    async with contextlib.AsyncExitStack() as es:
        clients = {}
        for i, user in enumerate([*users, outsider]):
            edge = stack.edges[i % 2]
            clients[user] = (await es.enter_async_context(open_stream(edge, stack.token(user))))[1]
            await connected(clients[user])
        await stack.publisher.broadcast_to_conversation(
            conv, "message:new", {"text": "yo"}, exclude=[users[0]]
        )
        # a direct event to everyone afterwards proves what did (not) come before it
        for user in [*users, outsider]:
            await stack.publisher.send_event_to_user(user, "after", None)
        assert [e.event for e in await clients[users[0]].take(1)] == ["after"]
        assert [e.event for e in await clients[outsider].take(1)] == ["after"]
        for user in users[1:]:
            got = await clients[user].take(2)
            assert [(e.event, e.id) for e in got] == [("message:new", "1"), ("after", "2")]
            assert got[0].json == {"text": "yo"}


async def test_membership_ops_apply_in_publish_order(stack: Stack) -> None:
    conv = uid("conv")
    a, b, c = uid("a"), uid("b"), uid("c")
    async with contextlib.AsyncExitStack() as es:
        cl = {}
        for u in (a, b, c):
            cl[u] = (await es.enter_async_context(open_stream(stack.edge, stack.token(u))))[1]
            await connected(cl[u])
        await stack.publisher.set_members(conv, [a, b])
        await stack.publisher.broadcast_to_conversation(conv, "one", 1)
        await stack.publisher.add_members(conv, [c])
        await stack.publisher.remove_members(conv, [a])
        await stack.publisher.broadcast_to_conversation(conv, "two", 2)
        await stack.publisher.set_members(conv, [])
        await stack.publisher.broadcast_to_conversation(conv, "three", 3)
        for u in (a, b, c):
            await stack.publisher.send_event_to_user(u, "end", None)
        seen = {u: [e.event for e in await cl[u].until(lambda e: e.event == "end")] for u in cl}
        assert seen == {a: ["one", "end"], b: ["one", "two", "end"], c: ["two", "end"]}


async def test_ephemeral_events_have_no_id_and_are_not_replayed(stack: Stack) -> None:
    user = uid()
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await connected(client)
        await stack.publisher.send_event_to_user(user, "user:typing", {"t": 1}, ephemeral=True)
        await stack.publisher.send_event_to_user(user, "message:new", {"m": 1})
        got = await client.take(2)
        assert [(e.event, e.id) for e in got] == [("user:typing", None), ("message:new", "1")]
    async with open_stream(stack.edge, stack.token(user), last_event_id="0") as (_, client):
        ev = await connected(client)
        assert ev.json["recovered"] is True
        replay = await client.take(1)
        assert [(e.event, e.id) for e in replay] == [("message:new", "1")]


async def test_three_token_methods_all_stream(stack: Stack) -> None:
    user = uid()
    for how in ("query", "bearer", "x-auth-token"):
        async with open_stream(stack.edge, stack.token(user), how=how) as (resp, client):
            assert resp.status_code == 200
            assert (await connected(client)).json["userId"] == user


async def test_disconnect_releases_binding(stack: Stack) -> None:
    user = uid()
    node = stack.apps[0].state.edge.node
    registry = stack.apps[0].state.edge.registry
    async with open_stream(stack.edge, stack.token(user)) as (_, c1):
        await connected(c1)
        async with open_stream(stack.edge, stack.token(user)) as (_, c2):
            await connected(c2)
            assert user in node.seam.routed
        # one stream left: still bound
        await _eventually(lambda: len([c for c in registry.streams() if c.user_id == user]) == 1)
        assert user in node.seam.routed
    await _eventually(lambda: user not in node.seam.routed and not registry.has_user(user))


async def _eventually(cond, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)  # wait-ok: polling server-side state
