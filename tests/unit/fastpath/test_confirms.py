"""ssehub.fastpath.confirms: a batch's confirms counted by delivery tag."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from pamqp import commands as spec
from ssehub import topology
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.confirms import BatchPublisher, ConfirmCounter
from ssehub.fastpath.marshal import Publish, marshal_publishes

from tests.unit.fastpath.channel import FakeChannel

WAIT = 10


def batch(n: int, user: str = "u") -> list[Publish]:
    return [
        Publish("sse.deliver", user, b"id: %d\n\n" % i, topology.DELIVERY_PROPERTIES)
        for i in range(n)
    ]


async def ack(channel: FakeChannel, tag: int, multiple: bool = False) -> None:
    """What aiormq's channel reader does with a Basic.Ack: the channel's handler."""
    await channel._on_confirm_frame(spec.Basic.Ack(delivery_tag=tag, multiple=multiple))


async def nack(channel: FakeChannel, tag: int) -> None:
    await channel._on_confirm_frame(spec.Basic.Nack(delivery_tag=tag))


def publisher(channel: FakeChannel) -> BatchPublisher:
    return BatchPublisher(cast(Any, channel))


# -- ConfirmCounter (pure) -------------------------------------------------------


def test_single_acks_in_order() -> None:
    c = ConfirmCounter()
    for tag in (1, 2, 3):
        c.ack(tag, multiple=False)
        assert c.confirmed == tag


def test_single_acks_out_of_order_wait_for_the_hole() -> None:
    c = ConfirmCounter(10)
    c.ack(13, False)
    c.ack(12, False)
    assert c.confirmed == 10
    c.ack(11, False)
    assert c.confirmed == 13


def test_multiple_confirms_everything_up_to_the_tag() -> None:
    c = ConfirmCounter()
    c.ack(5, True)
    assert c.confirmed == 5
    c.ack(3, True)  # older: changes nothing
    assert c.confirmed == 5


def test_multiple_closes_a_hole_and_picks_up_early_singles() -> None:
    c = ConfirmCounter()
    c.ack(4, False)
    c.ack(6, False)
    c.ack(3, True)
    assert c.confirmed == 4
    c.ack(5, True)
    assert c.confirmed == 6


def test_multiple_beyond_early_singles_forgets_them() -> None:
    c = ConfirmCounter()
    c.ack(2, False)
    c.ack(9, True)
    assert c.confirmed == 9
    c.ack(10, False)
    assert c.confirmed == 10


# -- BatchPublisher on a channel ---------------------------------------------------


async def test_a_batch_is_written_at_once_with_its_delivery_tags() -> None:
    channel = FakeChannel(delivery_tag=10)
    pub = publisher(channel)
    messages = batch(3)
    done = pub.send(messages)
    assert channel.delivery_tag == 13  # aiormq's count stays right for the channel
    assert channel.written() == [marshal_publishes(3, 10, messages)]
    assert not done.done()
    await ack(channel, 13, multiple=True)
    assert done.done() and done.result() is None
    assert channel.confirm_frames == []  # aiormq's handler no longer sees confirms


async def test_confirms_out_of_order() -> None:
    channel = FakeChannel()
    done = publisher(channel).send(batch(3))
    await ack(channel, 3)
    await ack(channel, 1)
    assert not done.done()
    await ack(channel, 2)
    assert done.done()


async def test_two_batches_resolve_in_order() -> None:
    channel = FakeChannel()
    pub = publisher(channel)
    first, second = pub.send(batch(2)), pub.send(batch(2))
    await ack(channel, 4)
    assert (first.done(), second.done()) == (False, False)
    await ack(channel, 1)
    await ack(channel, 2)
    assert (first.done(), second.done()) == (True, False)
    await ack(channel, 3)
    assert second.done()


async def test_one_multiple_ack_resolves_both_batches() -> None:
    channel = FakeChannel()
    pub = publisher(channel)
    first, second = pub.send(batch(2)), pub.send(batch(3))
    await ack(channel, 5, multiple=True)
    assert first.done() and second.done()


async def test_publish_waits_for_the_confirm() -> None:
    channel = FakeChannel()
    pub = publisher(channel)
    task = asyncio.ensure_future(pub.publish(batch(1)))
    frame = await asyncio.wait_for(channel.write_queue.get(), WAIT)  # written...
    assert frame.payload == marshal_publishes(3, 10, batch(1))
    assert not task.done()  # ...and waiting for the broker
    await ack(channel, 1)
    await asyncio.wait_for(task, WAIT)


async def test_a_nack_fails_every_waiting_batch() -> None:
    channel = FakeChannel()
    pub = publisher(channel)
    first, second = pub.send(batch(2)), pub.send(batch(2))
    await ack(channel, 1)
    await nack(channel, 2)
    for done in (first, second):
        with pytest.raises(BrokerUnavailable, match=r"^the broker refused publish 2$"):
            done.result()


async def test_a_confirmed_batch_stays_confirmed_after_a_nack() -> None:
    channel = FakeChannel()
    pub = publisher(channel)
    first, second = pub.send(batch(1)), pub.send(batch(1))
    await ack(channel, 1)
    await nack(channel, 2)
    assert first.result() is None
    with pytest.raises(BrokerUnavailable):
        second.result()


async def test_channel_close_fails_the_waiting_batches() -> None:
    channel = FakeChannel()
    pub = publisher(channel)
    first, second = pub.send(batch(1)), pub.send(batch(2))
    channel.close()
    await asyncio.wait_for(asyncio.wait([first, second]), WAIT)
    for done in (first, second):
        with pytest.raises(BrokerUnavailable, match=r"^publish channel closed$"):
            done.result()
    late = pub.send(batch(1))  # after the close: fails at once, nothing written
    with pytest.raises(BrokerUnavailable, match=r"^publish channel closed$"):
        late.result()
    assert len(channel.written()) == 2


async def test_an_empty_batch_is_confirmed_at_once() -> None:
    channel = FakeChannel(delivery_tag=4)
    done = publisher(channel).send([])
    assert done.result() is None
    assert (channel.delivery_tag, channel.written()) == (4, [])


async def test_a_channel_without_confirms_is_refused() -> None:
    with pytest.raises(ValueError, match="publisher confirms"):
        publisher(FakeChannel(confirms=False))


async def test_a_full_writer_queue_keeps_the_order() -> None:
    channel = FakeChannel(queue_size=1)
    pub = publisher(channel)
    batches = [batch(1, f"u{i}") for i in range(3)]
    for b in batches:
        pub.send(b)
    got: list[bytes] = []
    for _ in batches:
        frame = await asyncio.wait_for(channel.write_queue.get(), WAIT)
        got.append(frame.payload)
    assert got == [marshal_publishes(3, 10, b) for b in batches]
