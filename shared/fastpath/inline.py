"""Consuming without a task per message.

``consume_inline`` calls a plain function per delivered message, as the
connection's reader hands over the message's last frame, synchronously and
in delivery order: no queue hop per frame, no channel reader, no task.

aiormq internals (pinned, see ``ssehub.fastpath``): ``Channel.frames``, the
queue the connection's reader ``put``s every frame of the channel into; it
is replaced on the consuming channel by ``_InlineFrames``, which passes every
frame that is not part of a delivery (RPC replies, Channel.Close, ...) on to
the real queue and the channel's reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

log = logging.getLogger("ssehub.amqp")


async def consume_inline(
    channel: aiormq.abc.AbstractChannel,
    queue: str,
    on_message: Callable[[DeliveredMessage], None],
    *,
    no_ack: bool,
) -> None:
    """Consume ``queue`` on a channel of its own, calling ``on_message`` inline."""
    raw: Any = cast(Any, channel)
    raw.frames = _InlineFrames(raw, on_message)  # before consuming: every delivery goes here

    async def unused(message: DeliveredMessage) -> None:  # pragma: no cover
        on_message(message)

    await channel.basic_consume(queue, unused, no_ack=no_ack)


class _InlineFrames:
    """Stands in for an aiormq channel's frame queue: the frames of a delivery
    are assembled here and handed on at once."""

    def __init__(self, channel: Any, on_message: Callable[[DeliveredMessage], None]) -> None:
        self._queue: asyncio.Queue[Any] = channel.frames
        self._channel = channel
        self._on_message = on_message
        self._deliver: spec.Basic.Deliver | None = None
        self._header: ContentHeader | None = None
        self._parts: list[bytes] = []
        self._have = 0

    async def put(self, item: tuple[int, Any]) -> None:
        frame = item[1]
        if self._deliver is None:
            if type(frame) is spec.Basic.Deliver:
                self._deliver = frame
                return
            await self._queue.put(item)
            return
        if self._header is None:
            self._header = frame
            if frame.body_size:
                return
        else:
            self._parts.append(frame.value)
            self._have += len(frame.value)
            if self._have < self._header.body_size:
                return
        body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        message = DeliveredMessage(self._deliver, self._header, body, self._channel)
        self._deliver, self._header, self._parts, self._have = None, None, [], 0
        try:
            self._on_message(message)
        except Exception:  # not into the connection's reader: it would drop the connection
            log.exception("consumer callback failed for %r", message.routing_key)

    def __getattr__(self, name: str) -> Any:  # get, task_done, empty, ...: the real queue's
        return getattr(self._queue, name)
