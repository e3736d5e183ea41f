"""Two fast paths through aiormq, for the hot loops of the edge and the dispatcher.

aiormq is built for one message at a time: ``basic_publish`` takes the channel
lock, writes one message and waits for the socket to drain, and a consumer
gets a task of its own for every delivered message. At tens of thousands of
messages per second those costs are most of the work, so:

- ``BatchPublisher`` writes a whole batch of publishes as one frame write and
  waits for the broker's confirms by delivery tag: one future per batch.
- ``consume_inline`` calls a plain function per delivered message, from the
  channel's reader, in order, with no task per message.

Both reach into aiormq's channel internals (pinned in pyproject.toml); the
publisher owns its channel's confirms, so nothing else may publish on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiormq
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from shared.errors import BrokerUnavailable

# (exchange, routing key, body, properties)
Publish = tuple[str, str, bytes, spec.Basic.Properties]


class BatchPublisher:
    """Publishes on one confirm channel; ``publish`` returns once the broker has
    confirmed every message of the batch, and raises BrokerUnavailable if it
    refused one or the channel closed first."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._channel: Any = cast(Any, channel)  # its internals are not in the ABC
        if not self._channel.publisher_confirms:
            raise ValueError("BatchPublisher needs a channel with publisher confirms")
        self._sent: int = self._channel.delivery_tag  # last delivery tag written
        self._confirmed = self._sent  # every tag up to here is confirmed
        self._early: set[int] = set()  # single confirms above _confirmed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Confirms are ours now: aiormq would look each one up in a dict of
        # per-message futures it no longer has.
        self._channel._on_confirm_frame = self._on_confirm
        channel.closing.add_done_callback(self._on_close)

    async def publish(self, messages: Sequence[Publish]) -> None:
        if not messages:
            return
        channel = self._channel
        if channel.is_closed:
            raise BrokerUnavailable("publish channel closed")
        frames: list[Any] = []
        split = channel._split_body
        for exchange, routing_key, body, properties in messages:
            frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key))
            frames.append(ContentHeader(properties=properties, body_size=len(body)))
            frames.extend(split(body))
        self._sent += len(messages)
        channel.delivery_tag = self._sent
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._sent, done))
        channel.write_queue.put_nowait(
            ChannelFrame.marshall(channel_number=channel.number, frames=frames)
        )
        await done

    async def _on_confirm(self, frame: spec.Basic.Ack | spec.Basic.Nack) -> None:
        tag = frame.delivery_tag or 0
        if isinstance(frame, spec.Basic.Nack):
            self._fail(BrokerUnavailable(f"the broker refused publish {tag}"))
            return
        if frame.multiple:
            if tag > self._confirmed:
                self._confirmed = tag
                self._early = {t for t in self._early if t > tag}
        else:
            self._early.add(tag)
        while self._confirmed + 1 in self._early:
            self._confirmed += 1
            self._early.discard(self._confirmed)
        while self._waiters and self._waiters[0][0] <= self._confirmed:
            _, done = self._waiters.pop(0)
            if not done.done():
                done.set_result(None)

    def _on_close(self, _: object) -> None:
        self._fail(BrokerUnavailable("publish channel closed"))

    def _fail(self, exc: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for _, done in waiters:
            if not done.done():
                done.set_exception(exc)


async def consume_inline(
    channel: aiormq.abc.AbstractChannel,
    queue: str,
    on_message: Callable[[DeliveredMessage], None],
    *,
    no_ack: bool,
) -> None:
    """Consume ``queue`` on a channel of its own: ``on_message`` runs in the
    channel's reader, synchronously and in delivery order."""
    raw: Any = cast(Any, channel)
    read_header = getattr(raw, "_Channel__get_content_header", None)
    read_content = getattr(raw, "_read_content", None)

    async def task_per_message(message: DeliveredMessage) -> None:
        on_message(message)

    if read_header is not None and read_content is not None:
        # Before basic_consume, so that no delivery takes the other path.
        async def on_deliver_frame(frame: spec.Basic.Deliver) -> None:
            message = await read_content(frame, await read_header())
            on_message(message)

        raw._on_deliver_frame = on_deliver_frame
    # (another aiormq without those internals keeps its task per message: slower, still correct)
    await channel.basic_consume(queue, task_per_message, no_ack=no_ack)
