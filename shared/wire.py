"""Fast paths through aiormq, for the hot loops of the edge and the dispatcher.

aiormq is built for one message at a time: ``basic_publish`` takes the channel
lock, writes one message and waits for the socket to drain, and a consumer
gets a task of its own for every delivered message. At tens of thousands of
messages per second those costs are most of the work, so:

- ``BatchPublisher`` writes a whole batch of publishes as one frame write and
  waits for the broker's confirms by delivery tag: one future per batch.
- ``consume_inline`` calls a plain function per delivered message, as the
  connection's reader hands over its frames, in order: no queue hop per
  frame, no channel reader, no task per message.
- ``Outbox`` publishes without waiting (no channel lock, no drain per message).
- ``FastFrameReceiver`` reads frames off the socket with two reads and
  decodes the frames of a delivery (Basic.Deliver, a content header without
  properties, the body) by hand; pamqp decodes the rest as before. pamqp's
  generic decoding was half of an edge's CPU.

They reach into aiormq's internals (pinned in pyproject.toml); the
publisher owns its channel's confirms, so nothing else may publish on it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiormq
import aiormq.connection
import pamqp.frame
from aiormq.abc import ChannelFrame, DeliveredMessage
from aiormq.exceptions import AMQPConnectionError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

from shared.errors import BrokerUnavailable

log = logging.getLogger("ssehub.amqp")

Properties = spec.Basic.Properties
# (exchange, routing key, body, properties)
Publish = tuple[str, str, bytes, Properties]


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
        self._outbox = Outbox(channel)
        # Confirms are ours now: aiormq would look each one up in a dict of
        # per-message futures it no longer has.
        self._channel._on_confirm_frame = self._on_confirm
        channel.closing.add_done_callback(self._on_close)

    async def publish(self, messages: Sequence[Publish]) -> None:
        await self.send(messages)

    def send(self, messages: Sequence[Publish]) -> asyncio.Future[None]:
        """Write the batch now; the future resolves once all of it is confirmed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel = self._channel
        if channel.is_closed:
            done.set_exception(BrokerUnavailable("publish channel closed"))
            return done
        if not messages:
            done.set_result(None)
            return done
        self._sent += len(messages)
        channel.delivery_tag = self._sent
        self._waiters.append((self._sent, done))
        self._outbox.publish(messages)
        return done

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


class Outbox:
    """Publishes without waiting: ``publish`` queues the frames for the
    connection's writer at once, in order, and returns. (aiormq's
    ``basic_publish`` serialises every caller on the channel lock and a socket
    drain.) The writer's queue is bounded; when it is full, frames wait here,
    still in order, for a task that feeds them in as it drains."""

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


async def consume_inline(
    channel: aiormq.abc.AbstractChannel,
    queue: str,
    on_message: Callable[[DeliveredMessage], None],
    *,
    no_ack: bool,
) -> None:
    """Consume ``queue`` on a channel of its own: ``on_message`` runs as the
    connection's reader hands over the message's last frame, synchronously and
    in delivery order, with no task, no queue and no channel reader in between."""
    raw: Any = cast(Any, channel)
    raw.frames = _InlineFrames(raw, on_message)  # before consuming: every delivery goes here

    async def unused(message: DeliveredMessage) -> None:  # pragma: no cover
        on_message(message)

    await channel.basic_consume(queue, unused, no_ack=no_ack)


class _InlineFrames:
    """Stands in for an aiormq channel's frame queue (the connection's reader
    ``put``s every frame of the channel into it). The frames of a delivery are
    assembled here and handed on at once; every other frame (RPC replies,
    Channel.Close, ...) goes on to the real queue and the channel's reader."""

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


_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_PUBLISH_ID = struct.pack(">HHH", 60, 40, 0)  # Basic.Publish, ticket 0
_CONTENT_HEAD = struct.Struct(">HHQ")  # class id, weight, body size
_DELIVER = struct.Struct(">HH")  # class id, method id
_LONGLONG = struct.Struct(">Q")
_CONTENT = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_NO_PROPERTIES = spec.Basic.Properties()  # shared, read-only: nobody mutates them
FRAME_END = 0xCE


def marshal_publishes(channel: int, max_body: int, messages: Sequence[Publish]) -> bytes:
    """The wire bytes of Basic.Publish + header + body frames for each message
    (pamqp's generic marshalling was a third of a fan-out's dispatcher CPU).
    Properties are marshalled by pamqp, once per distinct properties object."""
    out: list[bytes] = []
    head = _HEAD.pack
    props_of: Properties | None = None
    props_bytes = b""
    for exchange, routing_key, body, properties in messages:
        ex, rk = exchange.encode(), routing_key.encode()
        if len(ex) > 255 or len(rk) > 255:
            raise ValueError("exchange and routing key are at most 255 bytes")
        method = b"%s%c%s%c%s\x00" % (_PUBLISH_ID, len(ex), ex, len(rk), rk)
        out.append(head(1, channel, len(method)))
        out.append(method)
        out.append(b"\xce")
        if properties is not props_of:
            props_of, props_bytes = properties, properties.marshal()
        header = _CONTENT_HEAD.pack(60, 0, len(body)) + props_bytes
        out.append(head(2, channel, len(header)))
        out.append(header)
        out.append(b"\xce")
        for i in range(0, len(body), max_body):
            part = body[i : i + max_body]
            out.append(head(3, channel, len(part)))
            out.append(part)
            out.append(b"\xce")
    return b"".join(out)


def _deliver(payload: bytes) -> spec.Basic.Deliver:
    """Basic.Deliver's arguments (after the 4-byte method id), decoded by hand."""
    i = 4
    n = payload[i]
    consumer_tag = payload[i + 1 : i + 1 + n].decode()
    i += 1 + n
    (delivery_tag,) = _LONGLONG.unpack_from(payload, i)
    redelivered = bool(payload[i + 8] & 1)
    i += 9
    n = payload[i]
    exchange = payload[i + 1 : i + 1 + n].decode()
    i += 1 + n
    n = payload[i]
    routing_key = payload[i + 1 : i + 1 + n].decode()
    frame = spec.Basic.Deliver.__new__(spec.Basic.Deliver)  # skip validate(): from the broker
    frame.consumer_tag = consumer_tag
    frame.delivery_tag = delivery_tag
    frame.redelivered = redelivered
    frame.exchange = exchange
    frame.routing_key = routing_key
    return frame


class FastFrameReceiver(aiormq.connection.FrameReceiver):
    async def get_frame(self) -> tuple[int, int, Any]:
        reader = self.reader
        try:
            head = await reader.readexactly(7)
            if not self.started:
                if head.startswith(b"AMQP"):
                    raise aiormq.exceptions.ProtocolSyntaxError("Unexpected AMQP protocol header")
                self.started = True
            kind, channel, size = _HEAD.unpack(head)
            payload = await reader.readexactly(size + 1)
        except asyncio.IncompleteReadError as exc:
            raise AMQPConnectionError("Server connection unexpectedly closed") from exc
        except OSError as exc:
            raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc
        if payload[-1] != FRAME_END:
            raise aiormq.exceptions.InvalidFrameError("frame end byte missing")
        weight = size + 8
        if kind == 3:  # body
            return weight, channel, ContentBody(payload[:-1])
        if kind == 1 and _DELIVER.unpack_from(payload) == (60, 60):
            return weight, channel, _deliver(payload)
        if kind == 2:
            _class, _weight, body_size, flags = _CONTENT.unpack_from(payload)
            if flags == 0:
                return weight, channel, ContentHeader(0, body_size, _NO_PROPERTIES)
        try:
            return pamqp.frame.unmarshal(head + payload)
        except PAMQPException as exc:
            raise aiormq.exceptions.InvalidFrameError(str(exc)) from exc


def install_fast_frames() -> None:
    """Make aiormq read frames with FastFrameReceiver (all its connections in
    this process; every connection of ours comes from shared/amqp.py)."""
    aiormq.connection.FrameReceiver = FastFrameReceiver  # type: ignore[misc]
