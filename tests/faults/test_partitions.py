"""Partitioned dispatch under faults: the ledger stays exact (every event once,
gap-free, in publish order per user and per conversation) with four
partitions worked on by several processes, while one is killed between
commit and ack, while partitions move by the fair share, and while RabbitMQ
restarts; the failover time is measured.

On PostgreSQL (the store partitions share); the users and conversations of
the workload span every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from ssehub.partition import partition_of
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster, Proc
from tests.faults.scenario import CLEAN, Workload, workload
from tests.faults.services import PrivateBroker
from tests.support import postgres_database, rabbitmq_vhost, uid

pytestmark = pytest.mark.timeout(300)
N = "4"


@pytest.fixture
async def fault_db(pg_server_url: str) -> AsyncIterator[str]:
    async with postgres_database(pg_server_url) as url:
        yield url


async def partitions_of(cluster: Cluster, proc: Proc, timeout: float = 20.0) -> list[int]:
    """What ``proc`` works on, once it works on something."""
    async with asyncio.timeout(timeout):
        while True:
            held = (await cluster.readyz(proc)).get("partitions")
            if held:
                assert isinstance(held, list)
                return [int(p) for p in held]
            await asyncio.sleep(0.1)  # wait-ok: a process learns its share from probes


async def held_by(cluster: Cluster, proc: Proc) -> list[int]:
    held = (await cluster.readyz(proc)).get("partitions") or []
    assert isinstance(held, list)
    return [int(p) for p in held]


async def delivered_to(w: Workload, user: str, timeout: float = 30.0) -> float:
    """Publish one event to ``user``; seconds until every browser of theirs has it."""
    t0 = time.monotonic()
    await w.ledger.publisher.send_event_to_user(user, "probe", None, key=uid("k"))
    w.ledger.sent[user] += 1
    mine = [b for b in w.browsers if b.user == user]
    async with asyncio.timeout(timeout):
        for b in mine:
            while len(set(b.seqs)) < w.ledger.sent[user]:
                b.got.clear()
                await b.got.wait()
    return time.monotonic() - t0


async def test_a_process_killed_between_commit_and_ack_loses_and_doubles_nothing(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    victim = await cluster.dispatcher(
        "dispatcher-a", http=True, SSEHUB_PARTITIONS=N, SSEHUB_FAILPOINT="after_commit:30"
    )
    await cluster.dispatcher("dispatcher-b", http=True, SSEHUB_PARTITIONS=N)
    await cluster.dispatcher("dispatcher-spare", http=True, SSEHUB_PARTITIONS=N)
    edges = [(await cluster.edge("edge-1", SSEHUB_PARTITIONS=N)).url]
    edges.append((await cluster.edge("edge-2", SSEHUB_PARTITIONS=N)).url)
    held: list[int] = []  # what the victim works on, as last seen: it may die any time

    async def watch() -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                held[:] = await held_by(cluster, victim) or held
            await asyncio.sleep(0.1)  # wait-ok: a process learns its share from probes

    watcher = asyncio.create_task(watch())
    try:
        async with workload(publisher, edges, users=16, conversations=3) as w:
            await w.wait_some(2)
            assert await victim.wait_exit(90) == -signal.SIGKILL
            died = time.monotonic()
            assert held, "the victim was never seen working on a partition"
            assert "failpoint after_commit:30 reached" in victim.text()
            # a user of a partition the victim worked on: served again by another
            orphan = next(u for u in w.ledger.users if partition_of(u, int(N)) in held)
            await delivered_to(w, orphan)
            back = time.monotonic() - died
            measure["partitions: first event after a SIGKILL of its process"] = back
            await w.wait_some(6, timeout=60)
            assert await w.finish() == CLEAN
    finally:
        watcher.cancel()


async def test_partitions_moving_by_the_fair_share_lose_and_double_nothing(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    first = await cluster.dispatcher("dispatcher-a", http=True, SSEHUB_PARTITIONS=N)
    edges = [(await cluster.edge("edge-1", SSEHUB_PARTITIONS=N)).url]
    async with workload(publisher, edges, users=16, conversations=3) as w:
        await w.wait_some(2)
        assert sorted(await partitions_of(cluster, first)) == [0, 1, 2, 3]
        procs = [first]
        for name in ("dispatcher-b", "dispatcher-c"):  # 1 → 2 → 3 processes, under load
            t0 = time.monotonic()
            procs.append(await cluster.dispatcher(name, http=True, SSEHUB_PARTITIONS=N))
            ceiling = -(-int(N) // len(procs))
            async with asyncio.timeout(30):
                while True:
                    shares = [len(await held_by(cluster, p)) for p in procs]
                    if sum(shares) == int(N) and max(shares) <= ceiling:
                        break
                    await asyncio.sleep(0.1)  # wait-ok: the share settles on its own
            measure[f"partitions: settled at {len(procs)} processes (s)"] = time.monotonic() - t0
            await w.wait_some(len(w.browsers[0].seqs) + 2, timeout=60)
        assert await w.finish() == CLEAN
    assert all("Traceback" not in p.text() for p in procs)


@pytest.fixture
def fault_vhost(request: pytest.FixtureRequest) -> str:
    """The machine's broker, except for the restart test (its private one)."""
    name = "private_vhost" if "restart" in request.node.name else "broker_vhost"
    return str(request.getfixturevalue(name))


@pytest.fixture
def broker_vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


async def test_partitions_through_a_rabbitmq_restart_lose_and_double_nothing(
    cluster: Cluster, publisher: Publisher, private_broker: PrivateBroker
) -> None:
    for name in ("dispatcher-a", "dispatcher-b"):
        await cluster.dispatcher(name, SSEHUB_PARTITIONS=N)
    edges = [await cluster.edge("edge-1", SSEHUB_PARTITIONS=N)]
    async with workload(publisher, [e.url for e in edges], users=16, conversations=3) as w:
        await w.wait_some(3)
        await private_broker.kill9_and_start()
        for edge in edges:
            await edge.wait_ready(timeout=60)
        await w.wait_some(len(w.browsers[0].seqs) + 3, timeout=90)
        assert await w.finish(timeout=90) == CLEAN


async def test_a_process_with_another_partition_count_is_refused_in_one_line(
    cluster: Cluster,
) -> None:
    await cluster.dispatcher("dispatcher-a", SSEHUB_PARTITIONS=N)
    wrong = cluster._proc("dispatcher-b", ["dispatcher"], SSEHUB_PARTITIONS="2")
    assert await wrong.wait_exit(30) == 2
    lines = [line for line in wrong.text().splitlines() if "SSEHUB_PARTITIONS" in line]
    assert len(lines) == 1 and "Traceback" not in wrong.text()
    assert "SSEHUB_PARTITIONS=2" in lines[0] and "has 4 partitions" in lines[0]
