"""Deadlines and the connection bound on the edge's real server (EdgeServer, uvicorn
with httptools, ssehub.fastpath.guard) over real sockets, with short deadlines.

The same at scale (1,000 half-open sockets, a slowloris, the bound under streams)
against an ``ssehub edge`` process: tests/faults/test_guard.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from ssehub.edge.app import create_app
from ssehub.edge.lifecycle import close_all
from ssehub.edge.server import EdgeServer
from ssehub.fastpath.guard import REFUSING, Guard
from starlette.requests import ClientDisconnect

from tests.sse import open_stream
from tests.support import Stack, started, uid

MARGIN = 0.5  # a deadline is met within this (a shared 2-core machine)


@contextlib.asynccontextmanager
async def guarded_edge(stack: Stack, **settings: object) -> AsyncIterator[tuple[str, FastAPI]]:
    """An edge served by EdgeServer (its guard included) on the stack's broker and
    store, so the stack's dispatcher answers its joins; two test routes added."""
    config = stack.settings.model_copy(update=settings)
    app = create_app(config)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        try:
            return {"bytes": len(await request.body())}
        except ClientDisconnect:  # the guard hung up at the deadline
            return {}

    @app.get("/big")
    async def big() -> Response:
        return Response(b"x" * (8 << 20), media_type="application/octet-stream")

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server: uvicorn.Server = EdgeServer(app, config, "127.0.0.1", port)
    root.handlers[:] = handlers  # EdgeServer set up the process's logging: pytest's back
    root.setLevel(level)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await started(server, task)
        async with asyncio.timeout(15):
            await app.state.edge.node.link.supervisor.ready.wait()
        yield f"http://127.0.0.1:{port}", app
    finally:
        close_all(app.state.edge)
        server.should_exit = True
        await task
        sock.close()


async def opened(url: str, first: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    if first:
        writer.write(first)
    return reader, writer


async def until_closed(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything the edge sends until it closes the connection (FIN or RST)."""
    return (await closed_at(reader, timeout))[0]


async def closed_at(reader: asyncio.StreamReader, timeout: float = 10.0) -> tuple[bytes, float]:
    """What the edge sent, and when (monotonic) it closed the connection."""
    out = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return out, time.monotonic()
            out += chunk


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """A byte every ``every`` seconds, until the edge hangs up."""
    with contextlib.suppress(OSError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)  # wait-ok: this client sends slowly on purpose


def answer_408(raw: bytes) -> dict[str, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), raw[:200]
    assert b"connection: close" in head.lower()
    doc: dict[str, str] = orjson.loads(body)
    assert doc["error"] == "request_timeout" and doc["message"]
    return doc


async def sockets_open(guard: Guard, want: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while guard.open != want:
            await asyncio.sleep(0.02)  # wait-ok: polling the server's connection count


def metric(text: str, line: str) -> float:
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)
    assert found, line
    return float(found[1])


async def test_a_request_head_must_arrive_within_its_deadline(stack: Stack) -> None:
    async with guarded_edge(stack, request_head_timeout=0.5) as (url, _):
        starts = [time.monotonic()]
        silent = await opened(url)
        starts.append(time.monotonic())
        partial = await opened(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        starts.append(time.monotonic())
        loris = await opened(url)
        sending = asyncio.create_task(
            trickle(loris[1], b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200, 0.05)
        )
        # a keep-alive connection: after an answer, the next head has the same deadline
        kept = await opened(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await kept[0].readuntil(b'{"status":"ok"}')
        starts.append(time.monotonic())
        kept[1].write(b"GET /healthz HTTP/1.1\r\n")
        got = await asyncio.gather(*(closed_at(r) for r, _ in (silent, partial, loris, kept)))
        await sending
        assert got[0][0] == b""  # nothing sent: closed without an answer
        for raw, _ in got[1:]:
            assert "within 0.5 s" in answer_408(raw)["message"]
        for start, (_, closed) in zip(starts, got, strict=True):
            assert 0.5 - 0.05 <= closed - start <= 0.5 + MARGIN, closed - start
        async with httpx.AsyncClient(base_url=url) as http:  # others are served as ever
            assert (await http.get("/healthz")).status_code == 200
            text = (await http.get("/metrics")).text
        assert metric(text, 'ssehub_connection_deadlines_total{deadline="head"}') == 4
        for _, writer in (silent, partial, loris, kept):
            writer.close()


async def test_a_request_that_is_not_a_stream_must_be_done_within_its_deadline(
    stack: Stack,
) -> None:
    async with guarded_edge(stack, request_head_timeout=0.5, request_timeout=1.0) as (url, app):
        guard: Guard = app.state.guard
        # a body a byte at a time, to a route that reads it: 408 at the request deadline
        slow = await opened(url, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        sending = asyncio.create_task(trickle(slow[1], b"b" * 100, 0.05))
        doc = answer_408(await until_closed(slow[0]))
        waited = time.monotonic() - t0
        await sending
        assert "within 1 s" in doc["message"]
        assert 1.0 <= waited <= 1.0 + MARGIN, waited
        # 8 MiB answers that are never read, with keep-alive and with "Connection:
        # close": neither keeps its connection past a deadline
        unread = []
        for close in (b"", b"Connection: close\r\n"):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
            unread.append(sock)
        await sockets_open(guard, 2)
        t0 = time.monotonic()
        await sockets_open(guard, 0, timeout=1.0 + 2 * MARGIN)
        assert 0.5 - 0.1 <= time.monotonic() - t0 <= 1.0 + MARGIN
        for sock in unread:
            sock.close()
        async with httpx.AsyncClient(base_url=url) as http:
            upload = await http.post("/upload", content=b"z" * 1000)
            assert upload.json() == {"bytes": 1000}
            text = (await http.get("/metrics")).text
        # the body, and the answer before "connection: close"; the answer before a
        # keep-alive wait is still unread at the next head's deadline
        assert metric(text, 'ssehub_connection_deadlines_total{deadline="request"}') == 2
        assert metric(text, 'ssehub_connection_deadlines_total{deadline="head"}') == 1


async def test_a_stream_has_no_deadline_but_a_request_pipelined_behind_it_does(
    stack: Stack,
) -> None:
    settings = {"request_head_timeout": 0.5, "request_timeout": 1.0, "ping_interval": 0.4}
    async with guarded_edge(stack, **settings) as (url, app):
        user = uid()
        async with open_stream(url, stack.token(user)) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).event == "connected"
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2 * 1.0:  # twice the request deadline, in pings
                client.comment_seen.clear()
                await asyncio.wait_for(client.comment_seen.wait(), 5)
            await stack.publisher.send_event_to_user(user, "still:here", {"n": 1})
            assert (await client.next()).event == "still:here"
        # A request pipelined behind a stream could never be answered: the connection
        # closes at its deadline, and the stream with it (not left waiting for ever).
        reader, writer = await opened(url, f"GET /sse/connect?token={stack.token(user)} ".encode())
        writer.write(b"HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"event: connected")
        for _ in range(3):  # past the stream's own request deadline: it is a stream now
            await reader.readuntil(b": ping")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        await until_closed(reader)
        assert 1.0 <= time.monotonic() - t0 <= 1.0 + MARGIN
        async with asyncio.timeout(5):
            while len(app.state.edge.registry):
                await asyncio.sleep(0.02)  # wait-ok: polling the edge's stream registry
        writer.close()


async def test_connections_over_the_bound_are_refused_while_streams_go_on(stack: Stack) -> None:
    async with guarded_edge(stack, max_connections=4) as (url, app):
        guard: Guard = app.state.guard
        users = [uid() for _ in range(4)]
        async with contextlib.AsyncExitStack() as streams:
            clients = []
            for user in users:
                resp, client = await streams.enter_async_context(
                    open_stream(url, stack.token(user))
                )
                assert resp.status_code == 200
                assert (await client.next()).event == "connected"
                clients.append(client)
            assert guard.open == 4
            # a stream: the contract's "overloaded", 200 with a short retry:, closed
            async with httpx.AsyncClient(base_url=url) as http:
                resp = await http.get("/sse/connect", params={"token": stack.token(uid())})
                assert resp.status_code == 200
                assert resp.headers["content-type"] == "text/event-stream"
                assert resp.headers["connection"] == "close"
                retry = re.fullmatch(rb"retry: (\d+)\n\n", resp.content)
                assert retry and 750 <= int(retry[1]) <= 2250
            async with httpx.AsyncClient(base_url=url) as http:
                refused = await http.get("/ssehub.js")
                assert refused.status_code == 503
                assert 1 <= int(refused.headers["retry-after"]) <= 5
                assert refused.json()["error"] == "over_capacity"
            async with httpx.AsyncClient(base_url=url) as http:  # probes and metrics served
                assert (await http.get("/healthz")).status_code == 200
            # one answer, then closed
            reader, writer = await opened(url, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await until_closed(reader, 5)).startswith(b"HTTP/1.1 503 ")
            writer.close()
            # the streams go on meanwhile
            for user in users:
                await stack.publisher.send_event_to_user(user, "news", {"for": user})
            for user, client in zip(users, clients, strict=True):
                event = await client.next()
                assert (event.event, event.json) == ("news", {"for": user})
            # REFUSING connections being refused at once; one more is closed unanswered
            idle = [await opened(url) for _ in range(REFUSING)]
            await sockets_open(guard, 4 + REFUSING)
            reader, writer = await opened(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await until_closed(reader, 2) == b""
            writer.close()
            for _, w in idle:
                w.close()
            await sockets_open(guard, 4)
            async with httpx.AsyncClient(base_url=url) as http:
                text = (await http.get("/metrics")).text
            assert metric(text, 'ssehub_connections_refused_total{answer="retry"}') == 1
            assert metric(text, 'ssehub_connections_refused_total{answer="unavailable"}') == 2
            assert metric(text, 'ssehub_connections_refused_total{answer="reset"}') == 1
            assert metric(text, "ssehub_max_connections") == 4
            await clients[0].close()
            await clients[1].close()
            await sockets_open(guard, 2)
            # once some have closed, new streams are served again
            async with open_stream(url, stack.token(uid())) as (resp, client):
                assert resp.status_code == 200
                assert (await client.next()).event == "connected"
