"""Streams per user: at most ``SSEHUB_MAX_STREAMS_PER_USER`` open streams of one
user across all edges; 429 when one edge can tell, ``disconnected`` otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
import psutil
from fastapi import FastAPI

from tests.sse import Event, SSEClient, open_stream
from tests.support import Stack, make_settings, running_edge, uid


@contextlib.asynccontextmanager
async def edges_with(stack: Stack, n: int, **overrides: object) -> AsyncIterator[list[FastAPI]]:
    """``n`` more edges (the session's dispatcher serves them too); their URLs
    are in ``app.state.url``."""
    settings = make_settings(stack.settings.rabbitmq_url, stack.settings.database_url, **overrides)
    async with contextlib.AsyncExitStack() as es:
        apps = []
        for _ in range(n):
            url, app = await es.enter_async_context(running_edge(settings))
            app.state.url = url
            apps.append(app)
        yield apps


def open_here(app: FastAPI, user: str) -> int:
    streams = app.state.edge.registry.streams_of(user)
    return sum(1 for s in streams if s.closed is None)


async def test_one_token_cannot_hold_more_than_the_cap_nor_the_fds(stack: Stack) -> None:
    """5,000 attempts with one token against one edge: 10 streams, 4,990 429s,
    no fd growth, and the edge still serves others."""
    cap, attempts, parallel = 10, 5000, 25
    user, other = uid("greedy"), uid("other")
    token = stack.token(user)
    me = psutil.Process()
    async with contextlib.AsyncExitStack() as es:
        (app,) = await es.enter_async_context(edges_with(stack, 1, max_streams_per_user=cap))
        url = app.state.url
        held: list[SSEClient] = []
        for _ in range(cap):
            resp, client = await es.enter_async_context(open_stream(url, token))
            assert resp.status_code == 200
            assert (await client.next()).event == "connected"
            held.append(client)
        fds_before = me.num_fds()
        statuses: dict[int, int] = {}
        most_open, fds_most = 0, fds_before
        port = int(url.rsplit(":", 1)[1])
        request = (
            f"GET /sse/connect?token={token} HTTP/1.1\r\nHost: x\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()

        async def attempt() -> None:
            """A new TCP connection per attempt, like a client's reconnect loop
            (a raw one: httpx would cost the test more than the edge)."""
            nonlocal most_open
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = orjson.loads(await reader.readexactly(length))
            finally:
                writer.close()
                await writer.wait_closed()
            statuses[status] = statuses.get(status, 0) + 1
            assert body["error"] == "too_many_streams" and body["message"]
            most_open = max(most_open, open_here(app, user))

        async def worker(n: int) -> None:
            nonlocal fds_most
            for i in range(n):
                await attempt()
                if i % 20 == 0:
                    fds_most = max(fds_most, me.num_fds())

        share, rest = divmod(attempts - cap, parallel)
        await asyncio.gather(*(worker(share + (i < rest)) for i in range(parallel)))
        assert statuses == {429: attempts - cap}
        assert most_open == cap  # (a) never more than the cap open
        assert all(not c.ended.is_set() for c in held)  # the first ten were left alone
        # (b) the edge's fds do not grow with the attempts: at most the client's
        # connections in flight (both ends are in this process), none left over
        assert fds_most <= fds_before + 2 * parallel + 10, (fds_before, fds_most)
        async with asyncio.timeout(10):
            while me.num_fds() > fds_before + 2:
                await asyncio.sleep(0.01)  # wait-ok: the server closes its ends a turn later
        # (c) another user still connects and receives an event
        _, client = await es.enter_async_context(open_stream(url, stack.token(other)))
        assert (await client.next()).event == "connected"
        await stack.publisher.send_event_to_user(other, "message:new", {"n": 1})
        assert (await client.next()).event == "message:new"
        # and the greedy user gets a stream back once one of theirs closes
        await held.pop().close()
        async with asyncio.timeout(10):
            while open_here(app, user) == cap:
                await asyncio.sleep(0.01)  # wait-ok: the edge sees the disconnect on its own
        async with open_stream(url, token) as (resp, client):
            assert resp.status_code == 200


async def disconnected_within(client: SSEClient, seconds: float) -> Event:
    t0 = time.monotonic()
    ev = await client.next(timeout=10)
    assert ev.event == "disconnected", ev
    assert ev.id is None and ev.json == {"reason": "too_many_streams"}
    assert time.monotonic() - t0 <= seconds
    with contextlib.suppress(EOFError):
        extra = await client.next()
        raise AssertionError(f"stream still open: {extra}")
    return ev


async def test_across_edges_the_newest_over_the_cap_is_disconnected(stack: Stack) -> None:
    user = uid()
    token = stack.token(user)
    async with (
        edges_with(stack, 2, max_streams_per_user=2) as (a, b),
        contextlib.AsyncExitStack() as es,
    ):
        a1 = (await es.enter_async_context(open_stream(a.state.url, token)))[1]
        a2 = (await es.enter_async_context(open_stream(a.state.url, token)))[1]
        for c in (a1, a2):
            assert (await c.next()).event == "connected"
        # A alone holds the cap: refused at once
        async with open_stream(a.state.url, token) as (resp, _):
            assert resp.status_code == 429
            assert orjson.loads(await resp.aread())["error"] == "too_many_streams"
        # B cannot tell at once: its stream opens, then goes within a second
        resp, b1 = await es.enter_async_context(open_stream(b.state.url, token))
        assert resp.status_code == 200
        assert (await b1.next()).event == "connected"
        await disconnected_within(b1, 1.0)
        # the older two are untouched and still receive events
        await stack.publisher.send_event_to_user(user, "message:new", {"n": 1})
        for c in (a1, a2):
            assert (await c.next()).event == "message:new"
        async with asyncio.timeout(10):
            while open_here(b, user):
                await asyncio.sleep(0.01)  # wait-ok: B's closed stream leaves its books


async def test_across_edges_the_new_stream_goes_on_the_edge_that_knows(stack: Stack) -> None:
    """1 on A, 1 on B, then a second on A: A knows of B's, so A closes its newest."""
    user = uid()
    token = stack.token(user)
    async with (
        edges_with(stack, 2, max_streams_per_user=2) as (a, b),
        contextlib.AsyncExitStack() as es,
    ):
        a1 = (await es.enter_async_context(open_stream(a.state.url, token)))[1]
        assert (await a1.next()).event == "connected"
        b1 = (await es.enter_async_context(open_stream(b.state.url, token)))[1]
        assert (await b1.next()).event == "connected"
        await stack.publisher.send_event_to_user(user, "message:new", {"n": 1})
        for c in (a1, b1):
            assert (await c.next()).seq == 1
        # the new one replays first: its farewell comes after the replay
        a2 = (await es.enter_async_context(open_stream(a.state.url, token, last_event_id="0")))[1]
        assert [(e.event, e.id) for e in await a2.take(2)] == [
            ("connected", "0"),
            ("message:new", "1"),
        ]
        await disconnected_within(a2, 1.0)
        await stack.publisher.send_event_to_user(user, "message:new", {"n": 2})
        for c in (a1, b1):
            assert (await c.next()).seq == 2
        # once B's stream closes, A may hold two again
        await b1.close()
        async with asyncio.timeout(10):
            while open_here(b, user) or a.state.edge.caps._remote.get(user):
                await asyncio.sleep(0.01)  # wait-ok: B's close notice reaches A
        a3 = (await es.enter_async_context(open_stream(a.state.url, token)))[1]
        assert (await a3.next()).event == "connected"
        await stack.publisher.send_event_to_user(user, "message:new", {"n": 2})
        assert (await a3.next()).event == "message:new"
