"""What one client can make an edge do by resuming: a replay is written as the
client takes it (within SSEHUB_CLIENT_BUFFER_BYTES, like live output), and each
user's replays on an edge are limited (SSEHUB_REPLAY_RATE, SSEHUB_REPLAY_BURST),
over the limit answered with a short retry: (200), never a 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI

from tests.sse import open_stream
from tests.support import Stack, make_settings, running_edge, signed, uid


@contextlib.asynccontextmanager
async def edge_with(stack: Stack, **overrides: object) -> AsyncIterator[tuple[str, FastAPI]]:
    settings = make_settings(stack.settings.rabbitmq_url, stack.settings.database_url, **overrides)
    async with running_edge(settings) as served:
        yield served


async def stored(stack: Stack, url: str, user: str, count: int, size: int = 0) -> None:
    """``count`` events for ``user``, once they are stored (a live stream saw them)."""
    async with open_stream(url, signed({"sub": user})) as (_, client):
        assert (await client.next()).event == "connected"
        pad = "x" * size
        send = stack.publisher.send_event_to_user
        for start in range(0, count, 40):  # within the live bound of 1 MiB at a time
            chunk = range(start, min(count, start + 40))
            await asyncio.gather(*(send(user, "e", {"n": n, "pad": pad}) for n in chunk))
            await client.take(len(chunk), timeout=30)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_a_client_not_reading_a_long_replay_is_dropped_and_memory_stays_bounded(
    stack: Stack,
) -> None:
    user = uid("stall")
    bound = 64 * 1024
    async with edge_with(stack, client_buffer_bytes=bound, write_timeout=1.0) as (url, app):
        # 6.4 MB: more than the kernel's socket buffers take (4 MiB send, 4 KiB receive);
        # stored through another edge (live, they would pass this one's bound at once)
        await stored(stack, stack.edge, user, 400, size=16_000)
        ctx = app.state.edge
        before = metric(
            (await httpx.AsyncClient(base_url=url).get("/metrics")).text,
            "ssehub_slow_client_closes_total",
        )
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((parts.hostname, parts.port))
        token = signed({"sub": user})
        head = f"GET /sse/connect?token={token} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n"
        sock.sendall(head.encode() + b"\r\n")
        try:
            held, seen = 0, False
            async with asyncio.timeout(15):
                while not seen or ctx.registry.streams_of(user):
                    for s in ctx.registry.streams_of(user):
                        seen = True
                        # what waits unwritten in the edge: the stream's output (the
                        # bound's own counters) and the socket's buffer in the process
                        buffered = sum(
                            c.transport.get_write_buffer_size()
                            for c in app.state.uvicorn.server_state.connections
                            if c.transport is not None
                        )
                        held = max(held, s._out_bytes + s._held_bytes + buffered)
                    await asyncio.sleep(0.02)  # wait-ok: sampling the stream until it is dropped
            assert 0 < held <= 2 * bound  # the bound, and the transport's high water
        finally:
            sock.close()
        async with httpx.AsyncClient(base_url=url) as http:
            text = (await http.get("/metrics")).text
        assert metric(text, "ssehub_slow_client_closes_total") == before + 1
        assert 'reason="write-timeout"' in text
        # a client that reads gets the whole replay, in order, from the same edge
        async with open_stream(url, token, last_event_id="0") as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).json["recovered"] is True
            got = await client.take(400, timeout=30)
        assert [e.seq for e in got] == list(range(1, 401))


async def test_a_user_resuming_in_a_loop_gets_a_retry_not_a_replay(stack: Stack) -> None:
    user, other = uid("loop"), uid("other")
    async with edge_with(stack, replay_rate=1.0, replay_burst=50) as (url, _):
        await stored(stack, url, user, 60)
        await stored(stack, url, other, 5)
        token = signed({"sub": user})
        # a full bucket pays for a replay larger than it (and is in debt after)
        async with open_stream(url, token, last_event_id="0") as (resp, client):
            assert (await client.next()).json["recovered"] is True
            assert [e.seq for e in await client.take(60)] == list(range(1, 61))
        async with httpx.AsyncClient(base_url=url) as http:
            before = (await http.get("/metrics")).text
            # the whole history again, or one event: in debt (10 events at 1 a second),
            # so sent away before any work is done, for about 11 s
            for last in ("0", "59"):
                t0 = time.monotonic()
                resp = await http.get(
                    "/sse/connect", params={"token": token}, headers={"Last-Event-ID": last}
                )
                assert time.monotonic() - t0 < 5  # answered and closed at once
                assert resp.status_code == 200  # never a 4xx: EventSource would give up
                assert resp.headers["content-type"] == "text/event-stream"
                assert resp.text.startswith("retry: ") and resp.text.endswith("\n\n")
                assert "connected" not in resp.text
                # about the time the bucket needs, jittered
                assert 5_000 <= int(resp.text.split()[1]) <= 17_000
            after = (await http.get("/metrics")).text
        assert (
            metric(after, "ssehub_retry_later_total")
            == metric(before, "ssehub_retry_later_total") + 2
        )
        # a new stream (no Last-Event-ID: nothing to replay) is served, and so is
        # another user's replay
        async with open_stream(url, token) as (resp, client):
            assert (await client.next()).json["recovered"] is False
        async with open_stream(url, signed({"sub": other}), last_event_id="0") as (_, client):
            assert (await client.next()).json["recovered"] is True
            assert len(await client.take(5)) == 5
