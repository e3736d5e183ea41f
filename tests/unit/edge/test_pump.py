"""ssehub.edge.pump: running a coroutine inline until it first suspends."""

from __future__ import annotations

import asyncio

import pytest
from ssehub.edge.pump import start


async def test_start_runs_a_coroutine_until_it_suspends() -> None:
    log: list[str] = []

    async def quick() -> None:
        log.append("quick")

    gate = asyncio.Event()

    async def blocked() -> None:
        log.append("before")
        await gate.wait()
        log.append("after")

    assert start(quick()) is None
    rest = start(blocked())
    assert rest is not None and log == ["quick", "before"]
    task = asyncio.ensure_future(rest)
    gate.set()
    await asyncio.wait_for(task, 5)
    assert log == ["quick", "before", "after"]

    # a cancelled remainder cancels the coroutine, which can clean up
    gate.clear()
    rest = start(blocked())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    # one loop turn, so the task starts and the throw reaches the coroutine
    await asyncio.sleep(0)  # wait-ok: one loop turn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-1] == "before"
