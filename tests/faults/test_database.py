"""Fault 6: PostgreSQL stopped for a while, then started again.

The cluster stopped is the session's private one (``private_database``,
tests/faults/services.py), never the machine's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster
from tests.faults.scenario import CLEAN, token, workload
from tests.faults.services import PrivateDatabase


@pytest.fixture
def fault_db(private_pg_db: str) -> str:
    return private_pg_db


async def test_database_outage_loses_nothing(
    cluster: Cluster,
    publisher: Publisher,
    private_database: PrivateDatabase,
    measure: dict[str, float],
) -> None:
    dispatcher = await cluster.dispatcher("dispatcher")
    edges = [await cluster.edge("edge-1"), await cluster.edge("edge-2")]
    async with workload(publisher, [e.url for e in edges]) as w:
        await w.wait_some(3)
        await asyncio.to_thread(private_database.stop)
        try:
            for edge in edges:  # readiness reports the store
                await edge.wait_ready(timeout=20, want=503)
            async with httpx.AsyncClient(base_url=edges[0].url, timeout=15) as http:
                body = (await http.get("/readyz")).json()
                assert any("store" in p for p in body["problems"]), body
                # a resume now must not look like "nothing missed": 200 + retry, closed
                resp = await http.get(
                    "/sse/connect",
                    params={"token": token(w.browsers[0].user)},
                    headers={"Last-Event-ID": "1"},
                )
            assert resp.status_code == 200
            assert resp.text.startswith("retry: ") and "event:" not in resp.text
            await dispatcher.wait_log("store unavailable", timeout=20)
        finally:
            await asyncio.to_thread(private_database.start)
        t0 = time.monotonic()
        for edge in edges:
            await edge.wait_ready(timeout=30)
        measure["edges ready after PostgreSQL restart"] = time.monotonic() - t0
        await asyncio.wait_for(w.probe_latency(), 60)
        await w.wait_some(10, timeout=60)
        assert await w.finish(timeout=60) == CLEAN
