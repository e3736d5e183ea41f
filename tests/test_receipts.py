"""Receipts: ``sse.receipts`` hears of the first write of an event that asked for one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aio_pika
import orjson

from tests.sse import open_stream
from tests.support import Stack, uid


@contextlib.asynccontextmanager
async def receipts_of(url: str, user: str) -> AsyncIterator[asyncio.Queue[dict[str, object]]]:
    got: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        ex = await ch.declare_exchange("sse.receipts", aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(exclusive=True)
        await q.bind(ex, f"receipt.{user}")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            await got.put(orjson.loads(message.body))

        await q.consume(on_message, no_ack=True)
        yield got
    finally:
        await conn.close()


async def test_first_write_publishes_one_receipt(stack: Stack) -> None:
    user = uid()
    t0 = int(time.time() * 1000)
    async with (
        receipts_of(stack.settings.rabbitmq_url, user) as receipts,
        open_stream(stack.edges[0], stack.token(user)) as (_, a),
        open_stream(stack.edges[0], stack.token(user)) as (_, b),  # two tabs, one edge
    ):
        await a.next()
        await b.next()
        await stack.publisher.send_event_to_user(user, "plain", 1)
        await stack.publisher.send_event_to_user(user, "message:new", 2, key="m-7", receipt=True)
        await stack.publisher.send_event_to_user(user, "unkeyed", 3, receipt=True)
        for s in (a, b):
            assert [e.seq for e in await s.take(3)] == [1, 2, 3]
        first = await asyncio.wait_for(receipts.get(), 10)
        second = await asyncio.wait_for(receipts.get(), 10)
        assert first.pop("deliveredAt") >= t0  # type: ignore[operator]
        assert first == {"userId": user, "seq": 2, "id": "m-7", "event": "message:new"}
        assert {k: second[k] for k in ("seq", "event")} == {"seq": 3, "event": "unkeyed"}
        assert second["id"] is not None  # the publisher's own key (M:<index> or message id)
        await stack.publisher.send_event_to_user(user, "flush", 4, receipt=True)
        third = await asyncio.wait_for(receipts.get(), 10)
        assert third["seq"] == 4  # no duplicate of 2 or 3 from the second tab came first


async def test_a_replayed_event_counts_as_written_when_the_replay_writes_it(
    stack: Stack,
) -> None:
    user = uid()
    async with receipts_of(stack.settings.rabbitmq_url, user) as receipts:
        await stack.publisher.send_event_to_user(user, "offline", 1, receipt=True, key=uid())
        await stack.publisher.send_event_to_user(user, "sync", 2)  # committed after the first
        async with open_stream(stack.edge, stack.token(user), last_event_id="0") as (_, c):
            await c.next()
            got = await c.take(2)
            assert [e.event for e in got] == ["offline", "sync"]
            receipt = await asyncio.wait_for(receipts.get(), 10)
    assert (receipt["seq"], receipt["event"]) == (1, "offline")
