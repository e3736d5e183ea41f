"""Fault 5: RabbitMQ restarted (gracefully and kill -9), or one edge cut off from it."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster, rabbitmq_kill9_and_start, rabbitmq_restart_graceful
from tests.faults.scenario import CLEAN, workload


@pytest.mark.parametrize(
    ("how", "restart"),
    [("graceful", rabbitmq_restart_graceful), ("kill -9", rabbitmq_kill9_and_start)],
)
async def test_rabbitmq_restart(
    cluster: Cluster,
    publisher: Publisher,
    measure: dict[str, float],
    how: str,
    restart: Callable[[], Awaitable[None]],
) -> None:
    await cluster.dispatcher("dispatcher")
    edges = [await cluster.edge("edge-1"), await cluster.edge("edge-2")]
    async with workload(publisher, [e.url for e in edges]) as w:
        await w.wait_some(3)
        down = asyncio.create_task(restart())
        for edge in edges:  # readiness is false while the broker is away
            await edge.wait_ready(timeout=60, want=503)
        await down
        t0 = time.monotonic()
        for edge in edges:
            await edge.wait_ready(timeout=60)
        measure[f"edges ready after RabbitMQ restart ({how})"] = time.monotonic() - t0
        measure[f"first event after RabbitMQ restart ({how})"] = await w.probe_latency()
        await w.wait_some(10, timeout=60)
        assert await w.finish(timeout=60) == CLEAN


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=30)


async def test_edge_cut_off_catches_up_from_the_store_on_reconnect(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    """Events committed while an edge cannot reach RabbitMQ reach its open
    streams right after it reconnects, without waiting for a later event."""
    url = cluster.env["SSEHUB_RABBITMQ_URL"]
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:])
    user = f"edge-{uuid.uuid4().hex[:8]}"
    _ctl("add_user", user, "pw")
    try:
        _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        edge_url = urlunsplit(
            parts._replace(netloc=f"{quote(user)}:pw@{parts.hostname}:{parts.port or 5672}")
        )
        await cluster.dispatcher("dispatcher")
        edge = await cluster.edge("edge-1", SSEHUB_RABBITMQ_URL=edge_url)
        async with workload(publisher, [edge.url], users=6) as w:
            await w.wait_some(3)
            w.stop_publishing.set()
            await w.publisher
            # cut the edge off: no permissions, connection closed; it keeps retrying
            _ctl("clear_permissions", "-p", vhost, user)
            _ctl("close_connection", *_connections_of(user), "test: cut off")
            await edge.wait_ready(timeout=10, want=503)
            for b in w.browsers:  # events committed while it is away
                await publisher.send_event_to_user(b.user, "while-away", None, key=uuid.uuid4().hex)
                w.ledger.sent[b.user] += 1
            _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            t0 = time.monotonic()
            await w.ledger.settle(w.browsers, timeout=30)  # no further event is published
            measure["open streams caught up after an edge reconnect"] = time.monotonic() - t0
            assert w.ledger.report(w.browsers) == CLEAN
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)


def _connections_of(user: str) -> list[str]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "user", "pid", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    pids = [line.split()[1] for line in out.splitlines() if line.split()[:1] == [user]]
    assert pids, out
    return pids[:1]
