"""Faults 3 and 4: an edge killed with clients on it, and an edge drained by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from urllib.parse import unquote, urlsplit

import httpx
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster, Proc
from tests.faults.scenario import CLEAN, token, workload


def edge_queues(vhost_url: str) -> list[str]:
    vhost = unquote(urlsplit(vhost_url).path[1:]) or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [q for q in out.split() if q.startswith("ssehub.edge.")]


def queue_of(proc: Proc, queues: list[str]) -> list[str]:
    assert proc.popen is not None
    return [q for q in queues if f".{proc.popen.pid}." in q]


async def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.1)  # wait-ok: polling broker state through rabbitmqctl


async def test_edge_killed_clients_resume_on_the_other_edge(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    await cluster.dispatcher("dispatcher")
    victim, survivor = await cluster.edge("edge-1"), await cluster.edge("edge-2")
    vhost = cluster.env["SSEHUB_RABBITMQ_URL"]
    assert len(queue_of(victim, edge_queues(vhost))) == 1
    async with workload(publisher, [victim.url, survivor.url], users=16) as w:
        await w.wait_some(3)
        on_victim = [b for b in w.browsers if b.current == victim.url]
        assert on_victim
        for b in on_victim:
            b.reconnected.clear()
        t0 = time.monotonic()
        victim.signal(signal.SIGKILL)
        async with asyncio.timeout(30):
            for b in on_victim:
                await b.reconnected.wait()
        measure["all clients back after an edge SIGKILL"] = time.monotonic() - t0
        await _until(lambda: not queue_of(victim, edge_queues(vhost)))
        await w.wait_some(10)
        assert await w.finish() == CLEAN
    assert sum(b.not_recovered for b in w.browsers) == 0


async def test_edge_sigterm_drains_then_exits(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    await cluster.dispatcher("dispatcher")
    leaving = await cluster.edge("edge-1", SSEHUB_DRAIN_SECONDS="2")
    staying = await cluster.edge("edge-2")
    vhost = cluster.env["SSEHUB_RABBITMQ_URL"]
    async with workload(publisher, [leaving.url, staying.url], users=16) as w:
        await w.wait_some(3)
        t0 = time.monotonic()
        leaving.signal(signal.SIGTERM)
        # readiness turns 503 first, and new streams are sent away with 200 + retry:
        await leaving.wait_ready(timeout=2, want=503)
        async with httpx.AsyncClient(base_url=leaving.url) as http:
            resp = await http.get("/sse/connect", params={"token": token("late")})
        assert resp.status_code == 200
        assert resp.text.startswith("retry: ")
        # uvicorn re-raises the signal once shut down, so "clean" reads as -SIGTERM
        assert await leaving.wait_exit(10) in (0, -signal.SIGTERM)
        measure["edge exit after SIGTERM (2 s drain)"] = time.monotonic() - t0
        assert not queue_of(leaving, edge_queues(vhost))
        await w.wait_some(10)
        assert await w.finish() == CLEAN
    assert sum(b.not_recovered for b in w.browsers) == 0
    assert "Traceback" not in leaving.text()
