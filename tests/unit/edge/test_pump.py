"""ssehub.edge.pump: running a coroutine inline until it first suspends; the
write round that runs every pump with output in one callback."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from ssehub.edge.pump import Pump, WriteRound, start


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


class FakePump:
    """What a WriteRound needs of a pump: ``run``."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def run(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("a bug in one stream")


async def test_a_write_round_runs_every_pump_once_in_order_in_one_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    real_call_soon = loop.call_soon

    def counting_call_soon(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return real_call_soon(callback, *args, **kwargs)

    log: list[str] = []
    writes = WriteRound()
    loop.call_soon = counting_call_soon  # type: ignore[method-assign]
    try:
        for name in ("a", "b", "c"):
            writes.add(cast(Pump, FakePump(name, log, fail=name == "b")))
    finally:
        loop.call_soon = real_call_soon  # type: ignore[method-assign]
    assert log == [] and len(scheduled) == 1  # nothing written yet; one callback
    await asyncio.sleep(0)  # wait-ok: one loop turn runs the round
    assert log == ["a", "b", "c"]  # b's failure did not cost c its write
    assert "write round" in caplog.text
    writes.add(cast(Pump, FakePump("d", log)))  # the next iteration's round
    await asyncio.sleep(0)  # wait-ok: one loop turn
    assert log[-1] == "d"
