"""Publishing without waiting.

aiormq's ``basic_publish`` serialises every caller on the channel lock and a
socket drain. ``Outbox.publish`` queues the frames for the connection's
writer at once, in order, and returns.

aiormq internals (pinned, see ``ssehub.fastpath``): ``Channel.write_queue``
(the connection's bounded writer queue), ``Channel.number``,
``Channel.max_content_size``, ``Channel.is_closed``, ``Channel.closing``,
and ``aiormq.abc.ChannelFrame``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import aiormq
from aiormq.abc import ChannelFrame
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.marshal import Publish, marshal_publishes


class Outbox:
    """The writer's queue is bounded; when it is full, frames wait here, still
    in order, for a task that feeds them in as it drains."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._channel: Any = cast(Any, channel)
        self._pending: deque[ChannelFrame] = deque()
        self._feeder: asyncio.Task[None] | None = None
        # A dead connection's writer no longer drains its queue: stop feeding it.
        channel.closing.add_done_callback(self._on_close)

    def publish(self, messages: Sequence[Publish]) -> None:
        channel = self._channel
        if channel.is_closed:
            raise BrokerUnavailable("channel closed")
        frame = ChannelFrame(
            payload=marshal_publishes(channel.number, channel.max_content_size, messages),
            should_close=False,
        )
        if self._feeder is None:
            try:
                channel.write_queue.put_nowait(frame)
                return
            except asyncio.QueueFull:
                pass
        self._pending.append(frame)
        if self._feeder is None:
            self._feeder = asyncio.create_task(self._feed())

    def _on_close(self, _: object) -> None:
        self._pending.clear()
        if self._feeder is not None:
            self._feeder.cancel()

    async def _feed(self) -> None:
        try:
            while self._pending:
                await self._channel.write_queue.put(self._pending[0])
                self._pending.popleft()
        finally:
            self._feeder = None
