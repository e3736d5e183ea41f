"""Issue 24's crash loops, as regression tests on a real broker, store and edge:
every case is a clear dead letter, the same dispatcher keeps running, the
next event arrives, and the dispatch queue is empty afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from ssehub import topology
from ssehub.dispatcher import expand, outbound
from ssehub.dispatcher.forward import encode
from ssehub.dispatcher.main import running_dispatcher
from ssehub.dispatcher.service import Dispatcher
from ssehub.schema import EventMessage

from tests.raw_amqp import RawMessage, properties, publish_raw
from tests.sse import SSEClient, open_stream
from tests.support import (
    Stack,
    dead_letter_queue,
    make_settings,
    publisher_of,
    queue_depth,
    rabbitmq_vhost,
    running_edge,
    uid,
)

HALF_EMOJI = b'{"event":"note","data":{"text":"\\ud83d 12345678901234567890"}}'
MAX_MEMBERS = 5
MAX_DELIVERIES = 3


@pytest.fixture(scope="module")
def own_vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


class Hub(Stack):
    dispatcher: Dispatcher


@pytest.fixture(scope="module")
async def hub(own_vhost: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    db: Path = tmp_path_factory.mktemp("poison") / "ssehub.db"
    settings = make_settings(
        own_vhost, f"sqlite:///{db}", max_members=MAX_MEMBERS, max_deliveries=MAX_DELIVERIES
    )
    async with (
        running_dispatcher(settings) as dispatcher,
        running_edge(settings) as (url, app),
        publisher_of(settings) as publisher,
    ):
        hub = Hub(settings, [url], [app], publisher)
        hub.dispatcher = dispatcher
        yield hub


async def publish(url: str, routing_key: str, body: bytes, **props: Any) -> None:
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(topology.EVENTS.name)
        await ex.publish(aio_pika.Message(body, **props), routing_key)
    finally:
        await conn.close()


async def reasons_of(dead: asyncio.Queue[Any], ids: set[str]) -> dict[str, str]:
    """message id -> its dead letter's reason, for each of ``ids``."""
    out: dict[str, str] = {}
    async with asyncio.timeout(15):
        while not ids <= set(out):
            msg = await dead.get()
            if msg.message_id in ids:
                out[msg.message_id] = str((msg.headers or {})[topology.ERROR_HEADER])
    return out


async def drained(hub: Hub) -> None:
    """The dispatch queue empties (each message acked or dead-lettered)."""
    async with asyncio.timeout(15):
        while queue_depth(hub.settings.rabbitmq_url, topology.DISPATCH.name):
            await asyncio.sleep(0.1)  # wait-ok: polling the broker's count


def still_running(hub: Hub) -> None:
    running = hub.dispatcher.running
    assert running is not None and not running.done(), "the dispatcher stopped"


@contextlib.asynccontextmanager
async def watching(hub: Hub, user: str) -> AsyncIterator[SSEClient]:
    async with open_stream(hub.edge, hub.token(user)) as (_, client):
        assert (await client.next()).event == "connected"
        yield client


async def test_half_an_emoji_is_a_dead_letter_and_the_next_event_arrives(hub: Hub) -> None:
    user, conv = uid(), uid("conv")
    url = hub.settings.rabbitmq_url
    await hub.publisher.set_members(conv, [user])
    batch = (
        b'[{"user": "%s", "event": "one", "data": 1},'
        b' {"user": "%s", "event": "note", "data": {"text": "\\ud83d 12345678901234567890"}},'
        b' {"user": "%s", "event": "three", "data": 3}]' % ((user.encode(),) * 3)
    )
    async with dead_letter_queue(url) as dead, watching(hub, user) as client:
        await publish(url, f"user.{user}", HALF_EMOJI, message_id=f"{user}-u")
        await publish(url, f"conversation.{conv}", HALF_EMOJI, message_id=f"{user}-c")
        await publish(url, "batch", batch, message_id=f"{user}-b")
        await hub.publisher.send_event_to_user(user, "after", 4)
        got = await client.take(3)
        assert [(e.seq, e.event) for e in got] == [(1, "one"), (2, "three"), (3, "after")]
        reasons = await reasons_of(dead, {f"{user}-u", f"{user}-c", f"{user}-b"})
    assert all("surrogate" in r for r in reasons.values()), reasons
    assert reasons[f"{user}-b"].startswith("item 1: ")
    still_running(hub)
    await drained(hub)


async def test_a_forward_forged_through_sse_events_is_public_input(hub: Hub) -> None:
    user = uid()
    url = hub.settings.rabbitmq_url
    sneaky = EventMessage("user", user, "x\nid: 999999", b"1", None, frozenset(), False)
    forged = encode([sneaky])
    kinds = {
        "fwd": {topology.FORWARD_HEADER: 1},
        "presence": {topology.PRESENCE_HEADER: 1},
        "route": {topology.ROUTE_HEADER: 1},
        "caps": {topology.NOTICE_HEADER: "caps"},
    }
    ids = set()
    async with dead_letter_queue(url) as dead, watching(hub, user) as client:
        for name, headers in kinds.items():
            for rk in (topology.DISPATCH.name, f"{topology.DISPATCH.name}.0"):
                ids.add(mid := f"{user}-{name}-{rk}")
                await publish(url, rk, forged, headers=headers, message_id=mid)
        await hub.publisher.send_event_to_user(user, "real", 1)
        ev = await client.next()
        assert (ev.seq, ev.event) == (1, "real")
        reasons = await reasons_of(dead, ids)
    assert all(r.startswith("routing key") for r in reasons.values()), reasons
    still_running(hub)
    await drained(hub)


async def test_bytes_that_are_not_utf8_in_routing_key_and_properties(hub: Hub) -> None:
    user = uid()
    url = hub.settings.rabbitmq_url
    good = b'{"event": "e", "data": 1}'
    flags, props = properties(message_id=b"\xff\xfe-id")
    hflags, hprops = properties(
        headers=[(b"x-\xff", b"\xc3\x28")], message_id=b"h-" + user.encode()
    )
    async with dead_letter_queue(url) as dead, watching(hub, user) as client:
        await publish_raw(
            url,
            [
                RawMessage(b"sse.events", b"user.\xff\xfe" + user.encode(), good),
                RawMessage(b"sse.events", b"user." + user.encode(), good, flags, props),
                RawMessage(b"sse.events", b"user." + user.encode(), good, hflags, hprops),
            ],
        )
        await hub.publisher.send_event_to_user(user, "after", 2)
        got = await client.take(1)
        assert [(e.seq, e.event) for e in got] == [(1, "after")]
        reasons: list[str] = []
        async with asyncio.timeout(15):
            while len(reasons) < 3:
                msg = await dead.get()
                rk = str((msg.headers or {}).get("x-ssehub-routing-key", ""))
                if user in rk or rk.endswith(user):
                    reasons.append(str((msg.headers or {})[topology.ERROR_HEADER]))
    assert sorted(r.partition(" ")[0] for r in reasons) == ["properties:", "properties:", "routing"]
    still_running(hub)
    await drained(hub)


async def test_a_message_that_meets_a_bug_is_dead_lettered_alone(
    hub: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = uid()
    real = expand.recipients_of

    def buggy(message: EventMessage, members: Any) -> tuple[str, ...]:
        if message.event == "boom":
            raise RuntimeError("a bug met by this message")
        return real(message, members)

    monkeypatch.setattr(expand, "recipients_of", buggy)
    url = hub.settings.rabbitmq_url
    items = [
        {"user": user, "event": "one", "data": 1},
        {"user": user, "event": "boom", "data": 2},
        {"user": user, "event": "three", "data": 3},
    ]
    async with dead_letter_queue(url) as dead, watching(hub, user) as client:
        await publish(url, "batch", orjson.dumps(items), message_id=f"{user}-bug")
        got = await client.take(2)
        assert [(e.seq, e.event) for e in got] == [(1, "one"), (2, "three")]
        async with asyncio.timeout(15):
            msg = await dead.get()
            while msg.message_id != f"{user}-bug":
                msg = await dead.get()
    assert (msg.headers or {})[topology.ERROR_HEADER] == "internal_error: RuntimeError"
    assert orjson.loads(msg.body)["event"] == "boom"
    still_running(hub)
    await drained(hub)


async def test_a_batch_that_keeps_failing_is_set_aside_after_its_deliveries(
    hub: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside any one message's path fails the whole batch: it comes
    back, and on its MAX_DELIVERIES-th delivery it is dead-lettered."""
    user = uid()
    design = type(outbound.outbound_for(hub.settings, 0))
    real = design.messages

    def buggy(self: Any, deliveries: Any, *args: Any, **kw: Any) -> Any:
        if any(b"poison-batch" in d.body for d in deliveries):
            raise RuntimeError("a bug on the batch's path")
        return real(self, deliveries, *args, **kw)

    monkeypatch.setattr(design, "messages", buggy)
    url = hub.settings.rabbitmq_url
    body = orjson.dumps({"event": "poison-batch", "data": 1})
    async with dead_letter_queue(url) as dead, watching(hub, user) as client:
        await publish(url, f"user.{user}", body, message_id=f"{user}-loop")
        async with asyncio.timeout(30):
            msg = await dead.get()
            while msg.message_id != f"{user}-loop":
                msg = await dead.get()
        monkeypatch.undo()
        await hub.publisher.send_event_to_user(user, "after", 2)
        # the poison one was stored before the bug: the stream reads it from the store
        got = await client.take(2)
        assert [e.event for e in got] == ["poison-batch", "after"]
    reason = str((msg.headers or {})[topology.ERROR_HEADER])
    assert reason.startswith(f"redelivered: delivered {MAX_DELIVERIES} times")
    still_running(hub)
    await drained(hub)


async def test_a_conversation_beyond_max_members_is_refused(hub: Hub) -> None:
    conv, user = uid("conv"), uid()
    url = hub.settings.rabbitmq_url
    crowd = [uid("m") for _ in range(MAX_MEMBERS)]
    await hub.publisher.set_members(conv, [user])
    async with dead_letter_queue(url) as dead, watching(hub, user) as client:
        body = orjson.dumps({"op": "add", "users": crowd})
        await publish(url, f"members.{conv}", body, message_id=f"{conv}-add")
        await hub.publisher.broadcast_to_conversation(conv, "still", 1)
        ev = await client.next()
        assert (ev.seq, ev.event) == (1, "still")  # membership as it was: the user only
        reasons = await reasons_of(dead, {f"{conv}-add"})
    assert reasons[f"{conv}-add"].startswith("too_many_members: ")
    still_running(hub)
    await drained(hub)
