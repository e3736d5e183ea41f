"""ssehub.coalesce: a crowd of the same request answered by one fetch per round."""

from __future__ import annotations

import asyncio

import pytest
from ssehub.coalesce import Coalescer
from ssehub.errors import StoreUnavailable

WAIT = 10  # seconds: generous, the machine is shared


class Source:
    """A fetch that records each round's keys; ``gate`` holds a round open."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.rounds: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_next = False

    async def fetch(self, keys: list[str]) -> dict[str, int]:
        self.rounds.append(sorted(keys))
        found = {k: self.values[k] for k in keys if k in self.values}  # read at the start
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("store down")
        return found


async def test_a_crowd_is_answered_by_one_fetch() -> None:
    source = Source({f"k{i}": i for i in range(10)})
    co: Coalescer[str, int] = Coalescer(source.fetch, -1)
    keys = [f"k{i % 10}" for i in range(200)]
    got = await asyncio.wait_for(asyncio.gather(*(co.get(k) for k in keys)), WAIT)
    assert got == [i % 10 for i in range(200)]
    assert source.rounds == [[f"k{i}" for i in range(10)]]


async def test_requests_during_a_round_wait_for_the_next() -> None:
    source = Source({"a": 1, "b": 2, "c": 3})
    source.gate = gate = asyncio.Event()
    co: Coalescer[str, int] = Coalescer(source.fetch, -1)
    first = asyncio.ensure_future(co.get("a"))
    await asyncio.wait_for(source.entered.wait(), WAIT)
    later = [asyncio.ensure_future(co.get(k)) for k in ("a", "b", "c")]
    source.values["a"] = 10  # changed after the first round read it
    gate.set()
    assert await asyncio.wait_for(first, WAIT) == 1
    assert list(await asyncio.wait_for(asyncio.gather(*later), WAIT)) == [10, 2, 3]
    assert source.rounds == [["a"], ["a", "b", "c"]]


async def test_missing_keys_get_the_default() -> None:
    source = Source({"a": 1})
    co: Coalescer[str, int] = Coalescer(source.fetch, -1)
    got = list(
        await asyncio.wait_for(asyncio.gather(co.get("a"), co.get("nope"), co.get("nope")), WAIT)
    )
    assert got == [1, -1, -1]


async def test_a_failing_fetch_fails_only_that_rounds_callers() -> None:
    source = Source({"a": 1, "b": 2})
    source.gate = gate = asyncio.Event()
    source.fail_next = True
    co: Coalescer[str, int] = Coalescer(source.fetch, -1)
    failed = [asyncio.ensure_future(co.get(k)) for k in ("a", "b")]
    await asyncio.wait_for(source.entered.wait(), WAIT)
    next_round = asyncio.ensure_future(co.get("b"))
    gate.set()
    for f in failed:
        with pytest.raises(StoreUnavailable, match="store down"):
            await asyncio.wait_for(f, WAIT)
    assert await asyncio.wait_for(next_round, WAIT) == 2
    assert source.rounds == [["a", "b"], ["b"]]
    assert await asyncio.wait_for(co.get("a"), WAIT) == 1  # and the coalescer still works


async def test_a_cancelled_caller_does_not_break_the_round() -> None:
    source = Source({"a": 1, "b": 2})
    source.gate = gate = asyncio.Event()
    co: Coalescer[str, int] = Coalescer(source.fetch, -1)
    gone = asyncio.ensure_future(co.get("a"))
    same_key = asyncio.ensure_future(co.get("a"))
    other = asyncio.ensure_future(co.get("b"))
    await asyncio.wait_for(source.entered.wait(), WAIT)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(same_key, other), WAIT)) == [1, 2]
    assert source.rounds == [["a", "b"]]
    assert await asyncio.wait_for(co.get("a"), WAIT) == 1
    assert source.rounds == [["a", "b"], ["a"]]


async def test_a_cancelled_round_wakes_its_waiters_and_the_next_rounds_with_an_error() -> None:
    from ssehub.coalesce import RoundCancelled

    source = Source({"a": 1, "b": 2})
    source.gate = asyncio.Event()  # the first round never finishes by itself
    coalescer: Coalescer[str, int] = Coalescer(source.fetch, 0)
    first = asyncio.ensure_future(coalescer.get("a"))
    async with asyncio.timeout(WAIT):
        await source.entered.wait()
    second = asyncio.ensure_future(coalescer.get("b"))  # waits for the next round
    await asyncio.sleep(0)  # wait-ok: one turn, so that "b" is queued
    assert coalescer._round is not None
    coalescer._round.cancel()
    for waiter in (first, second):
        with pytest.raises(RoundCancelled):
            async with asyncio.timeout(WAIT):
                await waiter
    assert await coalescer.get("b") == 2  # a later request starts a new round
