"""Fault 1 and 2: the dispatcher killed at each point of a batch, and stopped."""

from __future__ import annotations

import signal
import time

import pytest
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster
from tests.faults.scenario import CLEAN, workload


@pytest.mark.parametrize("point", ["before_commit", "after_commit", "after_publish"])
async def test_dispatcher_killed_mid_batch_standby_takes_over(
    cluster: Cluster, publisher: Publisher, point: str, measure: dict[str, float]
) -> None:
    active = await cluster.dispatcher("dispatcher-a", SSEHUB_FAILPOINT=f"{point}:40")
    standby = await cluster.dispatcher("dispatcher-b")
    edges = [(await cluster.edge("edge-1")).url, (await cluster.edge("edge-2")).url]
    async with workload(publisher, edges) as w:
        await w.wait_some(1)
        assert await active.wait_exit(60) == -signal.SIGKILL
        died = time.monotonic()
        assert f"failpoint {point}:40 reached" in active.text()
        await w.probe_latency()  # published after the death: only the standby can route it
        measure[f"dispatcher takeover after SIGKILL ({point})"] = time.monotonic() - died
        await w.wait_some(8)
        assert await w.finish() == CLEAN
    assert standby.popen is not None and standby.popen.poll() is None


async def test_dispatcher_sigterm_finishes_its_batch_and_exits(
    cluster: Cluster, publisher: Publisher, measure: dict[str, float]
) -> None:
    active = await cluster.dispatcher("dispatcher-a")
    await cluster.dispatcher("dispatcher-b")
    edges = [(await cluster.edge("edge-1")).url]
    async with workload(publisher, edges) as w:
        await w.wait_some(3)
        t0 = time.monotonic()
        active.signal(signal.SIGTERM)
        assert await active.wait_exit(15) == 0
        measure["dispatcher exit after SIGTERM"] = time.monotonic() - t0
        measure["dispatcher handover after SIGTERM"] = await w.probe_latency()
        await w.wait_some(8)
        assert await w.finish() == CLEAN
    assert "Traceback" not in active.text()
