"""Fault 5: RabbitMQ restarted (gracefully and kill -9), or one edge cut off from it.

Every test here runs on the session's private RabbitMQ node (``private_vhost``,
tests/faults/services.py): the machine's broker is never restarted or administered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster
from tests.faults.scenario import CLEAN, workload
from tests.faults.services import PrivateBroker

# the first test boots the private node, the kill -9 test boots it again
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def fault_vhost(private_vhost: str) -> str:
    return private_vhost


@pytest.mark.parametrize(
    ("how", "restart"),
    [("graceful", PrivateBroker.restart_graceful), ("kill -9", PrivateBroker.kill9_and_start)],
)
async def test_rabbitmq_restart(
    cluster: Cluster,
    publisher: Publisher,
    private_broker: PrivateBroker,
    measure: dict[str, float],
    how: str,
    restart: Callable[[PrivateBroker], Awaitable[None]],
) -> None:
    await cluster.dispatcher("dispatcher")
    edges = [await cluster.edge("edge-1"), await cluster.edge("edge-2")]
    async with workload(publisher, [e.url for e in edges]) as w:
        await w.wait_some(3)
        down = asyncio.create_task(restart(private_broker))
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


async def test_edge_cut_off_catches_up_from_the_store_on_reconnect(
    cluster: Cluster, publisher: Publisher, private_broker: PrivateBroker, measure: dict[str, float]
) -> None:
    """Events committed while an edge cannot reach RabbitMQ reach its open
    streams right after it reconnects, without waiting for a later event."""
    url = cluster.env["SSEHUB_RABBITMQ_URL"]
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:])
    user = f"edge-{uuid.uuid4().hex[:8]}"
    ctl = private_broker.ctl
    ctl("add_user", user, "pw")
    try:
        ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
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
            ctl("clear_permissions", "-p", vhost, user)
            ctl("close_connection", *_connections_of(private_broker, user), "test: cut off")
            await edge.wait_ready(timeout=10, want=503)
            for b in w.browsers:  # events committed while it is away
                await publisher.send_event_to_user(b.user, "while-away", None, key=uuid.uuid4().hex)
                w.ledger.sent[b.user] += 1
            ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            t0 = time.monotonic()
            await w.ledger.settle(w.browsers, timeout=30)  # no further event is published
            measure["open streams caught up after an edge reconnect"] = time.monotonic() - t0
            assert w.ledger.report(w.browsers) == CLEAN
    finally:
        with contextlib.suppress(RuntimeError):
            ctl("delete_user", user)


def _connections_of(broker: PrivateBroker, user: str) -> list[str]:
    out = broker.ctl("list_connections", "user", "pid", "--no-table-headers")
    pids = [line.split()[1] for line in out.splitlines() if line.split()[:1] == [user]]
    assert pids, out
    return pids[:1]
