"""``batch`` messages and the Publisher's coalescing, against real RabbitMQ and edges."""

from __future__ import annotations

import asyncio

import aio_pika
import orjson

from tests.sse import open_stream
from tests.support import Stack, dead_letter_queue, uid
from tests.test_dispatch import raw_publish


async def test_items_apply_in_order_with_membership_changes(stack: Stack) -> None:
    conv, a, b, c = uid("conv"), uid("a"), uid("b"), uid("c")
    batch = [
        {"members": conv, "op": "set", "users": [a, b]},
        {"conversation": conv, "event": "one", "data": 1},
        {"members": conv, "op": "add", "users": [c]},
        {"members": conv, "op": "remove", "users": [a]},
        {"conversation": conv, "event": "two", "data": 2, "exclude": [b]},
        {"users": [a, b, c], "event": "all", "data": 3},
        {"user": a, "event": "solo", "data": 4, "ephemeral": True},
    ]
    async with (
        open_stream(stack.edges[0], stack.token(a)) as (_, sa),
        open_stream(stack.edges[1], stack.token(b)) as (_, sb),
        open_stream(stack.edges[0], stack.token(c)) as (_, sc),
    ):
        for s in (sa, sb, sc):
            await s.next()
        await raw_publish(
            stack.settings.rabbitmq_url, "batch", orjson.dumps(batch), message_id=uid()
        )
        got_a = await sa.take(3)
        got_b = await sb.take(2)
        got_c = await sc.take(2)
    assert [(e.event, e.seq) for e in got_a] == [("one", 1), ("all", 2), ("solo", None)]
    assert [(e.event, e.seq) for e in got_b] == [("one", 1), ("all", 2)]
    assert [(e.event, e.seq, e.json) for e in got_c] == [("two", 1, 2), ("all", 2, 3)]


async def test_a_redelivered_batch_is_applied_once(stack: Stack) -> None:
    user = uid()
    body = orjson.dumps([{"user": user, "event": "e", "data": i} for i in range(5)])
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await client.next()
        for _ in range(3):  # a publisher retrying, or the broker redelivering
            await raw_publish(stack.settings.rabbitmq_url, "batch", body, message_id=f"m-{user}")
        await stack.publisher.send_event_to_user(user, "end", None)
        got = await client.until(lambda e: e.event == "end")
    assert [(e.seq, e.event) for e in got] == [(i, "e") for i in range(1, 6)] + [(6, "end")]


async def test_invalid_items_are_dead_lettered_alone(stack: Stack) -> None:
    user = uid()
    mid = f"bad-batch-{user}"
    batch = [
        {"user": user, "event": "ok", "data": 0},
        {"user": user, "conversation": "c", "event": "x", "data": 1},  # two targets
        {"control": user, "op": "explode"},  # unknown op
        {"control": user, "op": "revoke", "before": 4_000_000_000},  # far in the future
        {"event": "x", "data": 1},  # no target
        {"user": user, "event": "ok", "data": 5},
    ]
    async with (
        dead_letter_queue(stack.settings.rabbitmq_url) as dead,
        open_stream(stack.edge, stack.token(user)) as (_, client),
    ):
        await client.next()
        await raw_publish(stack.settings.rabbitmq_url, "batch", orjson.dumps(batch), message_id=mid)
        got = await client.take(2)
        assert [(e.seq, e.json) for e in got] == [(1, 0), (2, 5)]
        letters: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(10):
            while len(letters) < 4:
                msg = await dead.get()
                if msg.message_id == mid:
                    letters.append(msg)
    reasons = [str((m.headers or {})["x-ssehub-error"]) for m in letters]
    assert reasons[0].startswith("item 1: target: an item has exactly one of")
    assert reasons[1].startswith('item 2: op: must be "disconnect" or "revoke"')
    assert reasons[2] == "item 3: before: more than a day in the future"
    assert reasons[3].startswith("item 4: target:") and "found: none" in reasons[3]
    assert orjson.loads(letters[0].body) == batch[1]  # the item's own JSON
    assert all(m.headers["x-ssehub-routing-key"] == "batch" for m in letters)


async def test_a_body_that_is_no_array_of_objects_dead_letters_the_message(stack: Stack) -> None:
    user = uid()
    bodies = {
        f"nb-{user}-0": b'{"user": "x"}',
        f"nb-{user}-1": b"[1, 2]",
        f"nb-{user}-2": b"[]",
        f"nb-{user}-3": orjson.dumps([{"user": user, "event": "e", "data": "y" * (1 << 20)}]),
    }
    async with dead_letter_queue(stack.settings.rabbitmq_url) as dead:
        for mid, body in bodies.items():
            await raw_publish(stack.settings.rabbitmq_url, "batch", body, message_id=mid)
        reasons: dict[str, str] = {}
        async with asyncio.timeout(10):
            while len(reasons) < len(bodies):
                msg = await dead.get()
                if msg.message_id in bodies:
                    reasons[msg.message_id] = str((msg.headers or {})["x-ssehub-error"])
                    assert msg.body == bodies[msg.message_id]
    assert reasons[f"nb-{user}-0"] == "body: a batch must be a JSON array of objects"
    assert reasons[f"nb-{user}-1"] == "body: a batch must be a JSON array of objects"
    assert reasons[f"nb-{user}-2"] == "body: a batch holds 1-1000 items, got 0"
    assert "exceeds the batch limit of 1048576" in reasons[f"nb-{user}-3"]


async def test_concurrent_calls_travel_as_one_batch(stack: Stack) -> None:
    user, other = uid(), uid()
    conn = await aio_pika.connect(stack.settings.rabbitmq_url)
    try:
        ch = await conn.channel()
        tap = await ch.declare_queue(exclusive=True)
        await tap.bind("sse.events", "#")  # every message publishers send, as sent
        async with open_stream(stack.edge, stack.token(user)) as (_, client):
            await client.next()
            keys = await asyncio.gather(
                *(stack.publisher.send_event_to_user(user, "n", i) for i in range(50)),
                stack.publisher.send_event_to_users([user, other], "both", None),
            )
            got = await client.take(51)
        assert [e.json for e in got[:50]] == list(range(50))  # in call order
        assert got[50].event == "both" and len(set(keys)) == 51
        seen: list[str] = []
        async with asyncio.timeout(10):
            while True:
                msg = await tap.get(fail=False)
                if msg is None:
                    break
                if user.encode() in msg.body:
                    seen.append(msg.routing_key or "")
        assert seen == ["batch"]  # 51 calls, one AMQP message
    finally:
        await conn.close()
