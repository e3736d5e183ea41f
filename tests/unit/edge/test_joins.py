"""edge/joins.py: joins and leaves go to the dispatcher in rounds, one message
per round, and each returns once the dispatcher has answered its round."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import orjson
import pytest
from ssehub import topology
from ssehub.edge.joins import Joiner, parse_joined
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.marshal import Publish


def answer(ref: int, shared: list[str]) -> bytes:
    return orjson.dumps({"ref": ref, "shared": shared})


def answered(joiner: Joiner, body: bytes) -> None:
    """A ``joined`` notice reaching the joiner (edge/routing.py: ``answered``)."""
    parsed = parse_joined(body)
    if parsed is not None:
        joiner.resolve(*parsed)


async def until(cond: Callable[[], object]) -> None:
    """Let the joiner's round task run until ``cond`` holds (1 s at most)."""
    async with asyncio.timeout(1):
        while not cond():
            await asyncio.sleep(0)  # wait-ok: one loop turn, the condition is the signal


async def one_turn() -> None:
    """One loop turn, to show that something did NOT happen in it."""
    await asyncio.sleep(0)  # wait-ok: a negative check needs a turn to fail in


async def test_requests_made_while_a_round_waits_share_the_next_round() -> None:
    sent: list[Publish] = []
    joiner = Joiner("n1", sent.append)
    first = asyncio.ensure_future(joiner.apply("a", True))
    await until(lambda: sent)  # the first round goes out alone
    rest = [asyncio.ensure_future(joiner.apply(u, j)) for u, j in [("b", True), ("c", False)]]
    await one_turn()
    assert len(sent) == 1
    assert sent[0].routing_key == topology.DISPATCH.name
    assert (sent[0].properties.headers or {})[topology.ROUTE_HEADER] == 1
    assert orjson.loads(sent[0].body) == {"node": "n1", "ref": 1, "ops": [["a", 1]]}
    assert joiner.waited(float("inf")) > 0

    answered(joiner, answer(99, []))  # not ours (an earlier link's round): ignored
    answered(joiner, b"garbage")
    await one_turn()
    assert not first.done()
    answered(joiner, answer(1, []))
    assert await first is False
    await until(lambda: len(sent) >= 2)
    assert orjson.loads(sent[1].body) == {"node": "n1", "ref": 2, "ops": [["b", 1], ["c", 0]]}
    answered(joiner, answer(2, ["b"]))  # another edge holds b too
    assert await asyncio.gather(*rest) == [True, False]
    assert joiner.waited(float("inf")) == 0


async def test_a_lost_link_fails_the_round_in_flight_and_every_later_one() -> None:
    joiner = Joiner("n1", lambda _: None)
    pending = asyncio.ensure_future(joiner.apply("a", True))
    await until(lambda: joiner.waited(float("inf")))
    later = asyncio.ensure_future(joiner.apply("b", True))  # waits for the next round
    await one_turn()
    joiner.fail(BrokerUnavailable("lost the connection to RabbitMQ"))
    async with asyncio.timeout(1):
        for request in (pending, later):
            with pytest.raises(BrokerUnavailable):
                await request


async def test_a_late_answer_to_an_earlier_links_round_resolves_nothing() -> None:
    # an edge's queue keeps its name across links: round numbers must not repeat
    refs = itertools.count(1)
    old = Joiner("n1", lambda _: None, refs)
    lost = asyncio.ensure_future(old.apply("a", True))
    await until(lambda: old.waited(float("inf")))
    old.fail(BrokerUnavailable("lost the connection to RabbitMQ"))
    with pytest.raises(BrokerUnavailable):
        await lost
    sent: list[Publish] = []
    new = Joiner("n1", sent.append, refs)
    pending = asyncio.ensure_future(new.apply("b", True))
    await until(lambda: sent)
    assert orjson.loads(sent[0].body)["ref"] == 2
    answered(new, answer(1, []))  # the old link's round, answered late
    await one_turn()
    assert not pending.done()
    answered(new, answer(2, []))
    assert await pending is False
