"""Last-Event-ID: replay exactly what was missed, then live, with an exact seam."""

from __future__ import annotations

import asyncio

import pytest

from tests.sse import open_stream
from tests.support import Stack, uid


async def publish_n(stack: Stack, user: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        await stack.publisher.send_event_to_user(user, "n", i)


async def test_replay_after_disconnect_then_live(stack: Stack) -> None:
    user = uid()
    async with open_stream(stack.edges[0], stack.token(user)) as (_, client):
        await client.take(1)
        await publish_n(stack, user, 1, 3)
        assert [e.seq for e in await client.take(3)] == [1, 2, 3]
    await publish_n(stack, user, 4, 5)  # while disconnected
    async with open_stream(stack.edges[1], stack.token(user), last_event_id="3") as (_, client):
        hello = await client.next()
        assert hello.event == "connected" and hello.id == "3"
        assert hello.json["recovered"] is True
        replay = await client.take(5)
        assert [(e.seq, e.json) for e in replay] == [(i, i) for i in range(4, 9)]
        await publish_n(stack, user, 9, 2)
        assert [e.seq for e in await client.take(2)] == [9, 10]


async def test_last_event_id_as_query_parameter(stack: Stack) -> None:
    user = uid()
    await publish_n(stack, user, 1, 4)
    await _wait_seq(stack, user, 4)
    async with open_stream(
        stack.edge, stack.token(user), last_event_id="2", last_id_query=True
    ) as (_, client):
        assert (await client.next()).id == "2"
        assert [e.seq for e in await client.take(2)] == [3, 4]


async def test_reconnect_with_connected_id_after_receiving_nothing(stack: Stack) -> None:
    user = uid()
    await publish_n(stack, user, 1, 2)
    await _wait_seq(stack, user, 2)
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        hello = await client.next()
        assert hello.id == "2" and hello.json["recovered"] is False
    await publish_n(stack, user, 3, 3)  # while away, having received nothing else
    async with open_stream(stack.edge, stack.token(user), last_event_id=hello.id) as (_, client):
        assert (await client.next()).json["recovered"] is True
        assert [e.seq for e in await client.take(3)] == [3, 4, 5]


@pytest.mark.parametrize(
    ("bad", "in_query"),
    [
        ("999999", False),
        ("-1", False),
        ("abc", False),
        ("1e3", False),
        ("", False),
        (" ", True),
        ("１２", True),
        ("9" * 40, False),
        ("2\n3", True),
    ],
)
async def test_future_or_garbage_last_event_id(stack: Stack, bad: str, in_query: bool) -> None:
    user = uid()
    await publish_n(stack, user, 1, 2)
    await _wait_seq(stack, user, 2)
    async with open_stream(
        stack.edge, stack.token(user), last_event_id=bad, last_id_query=in_query
    ) as (resp, client):
        assert resp.status_code == 200
        hello = await client.next()
        assert hello.json["recovered"] is False
        assert hello.id == "2"  # cursor: the latest, no replay
        await stack.publisher.send_event_to_user(user, "n", 3)
        assert [e.seq for e in await client.take(1)] == [3]


async def test_seam_under_continuous_publishing(stack: Stack) -> None:
    """Clients drop and resume while events keep coming: each sees 1..N once, in order."""
    user = uid()
    total = 300
    received: list[int] = []

    async def producer() -> None:
        for i in range(1, total + 1):
            await stack.publisher.send_event_to_user(user, "n", i)

    prod = asyncio.create_task(producer())
    # From 0: the producer may have committed event 1 before the first stream
    # opens, and a stream without Last-Event-ID starts at the current position.
    last = "0"
    edge = 0
    try:
        while len(received) < total:
            async with open_stream(
                stack.edges[edge % 2], stack.token(user), last_event_id=last
            ) as (_, client):
                hello = await client.next()
                assert hello.json["recovered"] is True
                assert hello.id == last
                want = min(total - len(received), 37)  # drop after a few events
                for ev in await client.take(want, timeout=20):
                    received.append(ev.seq or 0)
                    last = ev.id
            edge += 1
    finally:
        await prod
    assert received == list(range(1, total + 1))


async def test_many_events_replay_in_pages(stack: Stack) -> None:
    user = uid()
    n = stack.settings.replay_page * 2 + 17
    await asyncio.gather(
        *(stack.publisher.send_event_to_user(user, "n", None, key=f"{user}-{i}") for i in range(n))
    )
    await _wait_seq(stack, user, n)
    async with open_stream(stack.edge, stack.token(user), last_event_id="0") as (_, client):
        await client.next()
        got = await client.take(n, timeout=30)
        assert [e.seq for e in got] == list(range(1, n + 1))


async def _wait_seq(stack: Stack, user: str, seq: int, timeout: float = 10.0) -> None:
    """Wait until the store holds ``seq`` for ``user`` (its own stream is the signal)."""
    store = stack.apps[0].state.edge.store
    async with asyncio.timeout(timeout):
        while (await store.position(user)).last_seq < seq:
            await asyncio.sleep(0.02)  # wait-ok: polling the store
