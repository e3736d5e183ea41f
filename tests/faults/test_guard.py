"""Fault 9: clients that hold connections without being streams, and more
connections than an edge may hold, against a real ``ssehub edge`` process.

- 1,000 half-open sockets (nothing sent, part of a head, a header byte a
  second) are all closed at the head deadline, while a new client opens a
  stream and receives an event;
- over SSEHUB_MAX_CONNECTIONS, new connections are refused (a stream request
  with 200 and a short retry:, anything else 503) while the streams already
  open keep receiving their events; once some close, new streams open again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time

import httpx
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster, Proc
from tests.faults.scenario import token
from tests.faults.test_clients import metric, metrics_of
from tests.sse import open_stream
from tests.support import uid

HEAD_TIMEOUT = 3.0
SILENT, PARTIAL, LORIS = 450, 450, 100  # 1,000 half-open sockets
MARGIN = 1.0  # a shared 2-core machine: the edge, its dispatcher and 1,000 clients


def more_file_handles(at_least: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < at_least:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, at_least), hard))


async def connect(edge: Proc) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", edge.port)


async def closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, float]:
    """What the edge sent until it closed the connection (FIN or RST), and when."""
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


async def loris(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """A header byte a second, until the edge hangs up."""
    head = f"GET /sse/connect?token={token(uid())} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode()
    with contextlib.suppress(OSError):
        writer.write(head)
        while not stop.is_set():
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)  # wait-ok: a byte a second
            writer.write(b"a")


async def test_half_open_sockets_are_closed_at_the_head_deadline_while_others_are_served(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    more_file_handles(4 * (SILENT + PARTIAL + LORIS))
    await cluster.dispatcher("dispatcher")
    edge = await cluster.edge("edge", SSEHUB_REQUEST_HEAD_TIMEOUT=str(HEAD_TIMEOUT))
    partial_head = f"GET /sse/connect?token={token(uid())} HTTP/1.1\r\nHost: x\r\n".encode()
    # (kind, before connect(), after it, ...): the edge's accept, where its deadline
    # starts, is between the two; on a busy machine after may be well after it
    sockets: list[tuple[str, float, float, asyncio.StreamReader, asyncio.StreamWriter]] = []
    stop = asyncio.Event()
    slow: list[asyncio.Task[None]] = []
    try:
        for kind, n in (("silent", SILENT), ("partial", PARTIAL), ("loris", LORIS)):
            for _ in range(n):
                before = time.monotonic()
                reader, writer = await connect(edge)
                sockets.append((kind, before, time.monotonic(), reader, writer))
                if kind == "partial":
                    writer.write(partial_head)
                elif kind == "loris":
                    slow.append(asyncio.create_task(loris(writer, stop)))
        opened = time.monotonic()
        # a new client meanwhile: its stream opens and receives an event
        user = uid()
        async with open_stream(edge.url, token(user)) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).event == "connected"
            await publisher.send_event_to_user(user, "served", {"while": "held"})
            await client.until(lambda e: e.event == "served")  # presence may come first
        served = time.monotonic()
        ends = await asyncio.gather(
            *(closed(reader, HEAD_TIMEOUT + 2 * MARGIN + 10) for *_, reader, _ in sockets)
        )
    finally:
        stop.set()
        for task in slow:
            task.cancel()
        for *_, writer in sockets:
            writer.close()
    first_deadline = min(start for _, start, *_ in sockets) + HEAD_TIMEOUT
    assert served < first_deadline, "the new client was served only once the others had gone"
    late = []
    for (kind, before, after, _, _), (answer, end) in zip(sockets, ends, strict=True):
        held = end - after
        late.append(held - HEAD_TIMEOUT)
        # the deadline counts from the edge's accept, between our two stamps
        assert end - before >= HEAD_TIMEOUT - 0.1, (kind, end - before)
        assert held <= HEAD_TIMEOUT + MARGIN, (kind, held)
        if kind == "silent":
            assert answer == b"", answer[:100]
        else:
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (kind, answer[:100])
            assert b'"error":"request_timeout"' in answer
    text = await metrics_of(edge)
    assert metric(text, 'ssehub_connection_deadlines_total{deadline="head"}') == len(sockets)
    measure["1,000 half-open sockets: opening them (s)"] = opened - sockets[0][1]
    measure["1,000 half-open sockets: latest close after the head deadline (s)"] = max(late)
    measure["1,000 half-open sockets: median close after the head deadline (s)"] = sorted(late)[
        len(late) // 2
    ]


async def raw_stream(edge: Proc, user: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await connect(edge)
    writer.write(f"GET /sse/connect?token={token(user)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return reader, writer


async def refused_stream(edge: Proc) -> int:
    """Ask for a stream over the bound: the answer's retry:, the connection closed."""
    reader, _writer = await raw_stream(edge, uid())
    answer, _ = await closed(reader, 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    assert b"content-type: text/event-stream" in head and b"connection: close" in head
    retry = re.fullmatch(rb"retry: (\d+)\n\n", body)
    assert retry, body
    return int(retry[1])


async def test_connections_over_the_bound_are_refused_while_streams_keep_their_events(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    bound = 100
    await cluster.dispatcher("dispatcher")
    edge = await cluster.edge("edge", SSEHUB_MAX_CONNECTIONS=str(bound))
    users = [uid("held") for _ in range(bound)]
    streams = [await raw_stream(edge, user) for user in users]
    try:
        for reader, _ in streams:
            await reader.readuntil(b"event: connected")
        # the excess is refused, again and again, while the streams get their events
        stop = asyncio.Event()
        retries: list[int] = []

        async def knock() -> None:
            while not stop.is_set():
                retries.append(await refused_stream(edge))

        knocking = [asyncio.create_task(knock()) for _ in range(4)]
        t0 = time.monotonic()
        await asyncio.gather(
            *(publisher.send_event_to_user(user, "news", {"for": user}) for user in users)
        )
        for (reader, _), user in zip(streams, users, strict=True):
            await reader.readuntil(b"event: news\ndata: " + f'{{"for":"{user}"}}'.encode())
        delivered = time.monotonic() - t0
        refused_meanwhile = len(retries)
        stop.set()
        await asyncio.gather(*knocking)
        assert len(retries) >= 4 and all(750 <= r <= 2250 for r in retries), retries
        async with httpx.AsyncClient(base_url=edge.url) as http:
            other = await http.get("/ssehub.js")
            assert other.status_code == 503 and other.json()["error"] == "over_capacity"
            assert 1 <= int(other.headers["retry-after"]) <= 5
        text = await metrics_of(edge)  # served over the bound, like the probes
        assert metric(text, 'ssehub_connections_refused_total{answer="retry"}') == len(retries)
        assert metric(text, 'ssehub_connections_refused_total{answer="unavailable"}') == 1
        assert metric(text, "ssehub_connections_open") == bound
        # once some streams close, new ones are served again
        for _, writer in streams[:10]:
            writer.close()
        del streams[:10]
        async with asyncio.timeout(10):
            while metric(await metrics_of(edge), "ssehub_sockets_open") > bound - 10 + 1:
                await asyncio.sleep(0.05)  # wait-ok: polling the edge's metrics
        for _ in range(10):
            streams.append(await raw_stream(edge, uid("new")))
            await streams[-1][0].readuntil(b"event: connected")
        assert (await refused_stream(edge)) > 0  # and the bound holds again
    finally:
        for _, writer in streams:
            writer.close()
    measure["100 streams at the bound: events delivered while the excess is refused (s)"] = (
        delivered
    )
    measure["100 streams at the bound: refusals answered meanwhile (count)"] = refused_meanwhile
