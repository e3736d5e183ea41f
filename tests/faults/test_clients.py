"""Fault 7: slow and frozen clients are cut loose; memory stays bounded; others unaffected."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess

import httpx
import psutil
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster, Proc
from tests.faults.scenario import token, workload
from tests.support import uid


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def metrics_of(edge: Proc) -> str:
    async with httpx.AsyncClient(base_url=edge.url) as http:
        return (await http.get("/metrics")).text


async def slow_reader(url: str, user: str, stop: asyncio.Event) -> int:
    """A client with a tiny receive window reading 1 KB/s; returns bytes read before EOF."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /sse/connect?token={token(user)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    total = 0
    try:
        while not stop.is_set():
            chunk = await reader.read(1024)
            if not chunk:
                return total
            total += len(chunk)
            await asyncio.sleep(1.0)  # wait-ok: this client reads 1 KB/s on purpose
        return -1
    finally:
        writer.close()


async def test_slow_and_frozen_clients_are_closed(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    await cluster.dispatcher("dispatcher")
    edge = await cluster.edge("edge", SSEHUB_CLIENT_BUFFER_BYTES="65536", SSEHUB_WRITE_TIMEOUT="3")
    assert edge.popen is not None
    rss = psutil.Process(edge.popen.pid)
    slow_user, frozen_user = uid("slow"), uid("frozen")
    stop = asyncio.Event()
    slow = asyncio.create_task(slow_reader(edge.url, slow_user, stop))
    frozen = subprocess.Popen(
        ["curl", "-sN", f"{edge.url}/sse/connect?token={token(frozen_user)}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with workload(publisher, [edge.url], users=4, pause=0.02) as w:
            await w.wait_some(2)
            os.kill(frozen.pid, signal.SIGSTOP)
            before = rss.memory_info().rss
            port = int(edge.url.rsplit(":", 1)[1])

            def established() -> int:
                conns = rss.net_connections("tcp")
                return sum(1 for c in conns if c.laddr.port == port and c.status == "ESTABLISHED")

            with_stuck = established()
            baseline = [await w.probe_latency() for _ in range(5)]
            blob = "x" * 16_000
            for i in range(400):  # ~6.4 MB to each of the two stuck clients
                await publisher.send_event_to_user(slow_user, "big", {"i": i, "b": blob})
                await publisher.send_event_to_user(frozen_user, "big", {"i": i, "b": blob})
            during = [await w.probe_latency() for _ in range(5)]
            want_open = len(w.browsers) + 1  # the stuck two are gone, the rest stay
            async with asyncio.timeout(30):
                while (
                    metric(text := await metrics_of(edge), "ssehub_slow_client_closes_total") < 2
                    or metric(text, "ssehub_connections_open") != want_open
                ):
                    await asyncio.sleep(0.2)  # wait-ok: polling the edge's metrics
            closed = asyncio.get_running_loop().time()
            # closed for real: the edge drops their sockets at once (an RST), not
            # a close that waits for clients that do not read to take the rest
            async with asyncio.timeout(2):
                while established() > with_stuck - 2:
                    await asyncio.sleep(0.05)  # wait-ok: polling the edge's sockets
            gone = asyncio.get_running_loop().time() - closed
            measure["stuck clients: their sockets gone after the close (s)"] = gone
            grown = (rss.memory_info().rss - before) / 2**20
            measure["edge RSS growth with 2 stuck clients fed 6 MB each (MiB)"] = grown
            measure["probe latency before stuck clients (max s)"] = max(baseline)
            measure["probe latency with stuck clients (max s)"] = max(during)
            assert grown < 40, f"edge grew {grown:.1f} MiB"
            assert max(during) < 1.0, during  # the other streams kept flowing
            assert metric(text, "ssehub_users_routed") == 4 + 1  # stuck users no longer routed here
    finally:
        stop.set()
        frozen.kill()
        frozen.wait()
        slow.cancel()
