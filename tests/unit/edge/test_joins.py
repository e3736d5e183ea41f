"""edge/joins.py: joins and leaves go to the dispatcher in rounds, one message
per round, and each returns once the dispatcher has answered its round."""

from __future__ import annotations

import asyncio
import itertools

import orjson
import pytest
from ssehub import topology
from ssehub.edge.joins import Joiner
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.marshal import Publish


def answer(ref: int, shared: list[str]) -> bytes:
    return orjson.dumps({"ref": ref, "shared": shared})


async def test_requests_made_while_a_round_waits_share_the_next_round() -> None:
    sent: list[Publish] = []
    joiner = Joiner("n1", sent.append)
    first = asyncio.ensure_future(joiner.apply("a", True))
    await asyncio.sleep(0)  # the first round goes out alone
    rest = [asyncio.ensure_future(joiner.apply(u, j)) for u, j in [("b", True), ("c", False)]]
    await asyncio.sleep(0)
    assert len(sent) == 1
    assert sent[0].routing_key == topology.DISPATCH.name
    assert (sent[0].properties.headers or {})[topology.ROUTE_HEADER] == 1
    assert orjson.loads(sent[0].body) == {"node": "n1", "ref": 1, "ops": [["a", 1]]}
    assert joiner.waited(float("inf")) > 0

    joiner.answered(answer(99, []))  # not ours (an earlier link's round): ignored
    joiner.answered(b"garbage")
    await asyncio.sleep(0)
    assert not first.done()
    joiner.answered(answer(1, []))
    assert await first is False
    async with asyncio.timeout(1):
        while len(sent) < 2:
            await asyncio.sleep(0)
    assert orjson.loads(sent[1].body) == {"node": "n1", "ref": 2, "ops": [["b", 1], ["c", 0]]}
    joiner.answered(answer(2, ["b"]))  # another edge holds b too
    assert await asyncio.gather(*rest) == [True, False]
    assert joiner.waited(float("inf")) == 0


async def test_a_lost_link_fails_the_round_in_flight_and_every_later_one() -> None:
    joiner = Joiner("n1", lambda _: None)
    pending = asyncio.ensure_future(joiner.apply("a", True))
    async with asyncio.timeout(1):
        while not joiner.waited(float("inf")):
            await asyncio.sleep(0)
    later = asyncio.ensure_future(joiner.apply("b", True))  # waits for the next round
    await asyncio.sleep(0)
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
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    old.fail(BrokerUnavailable("lost the connection to RabbitMQ"))
    with pytest.raises(BrokerUnavailable):
        await lost
    sent: list[Publish] = []
    new = Joiner("n1", sent.append, refs)
    pending = asyncio.ensure_future(new.apply("b", True))
    async with asyncio.timeout(1):
        while not sent:
            await asyncio.sleep(0)
    assert orjson.loads(sent[0].body)["ref"] == 2
    new.answered(answer(1, []))  # the old link's round, answered late
    await asyncio.sleep(0)
    assert not pending.done()
    new.answered(answer(2, []))
    assert await pending is False
