"""A hostile publisher: AMQP publishes built byte by byte.

aio-pika and pamqp only send what they can encode (UTF-8 strings, well-typed
field tables); a publisher in another language, or an attacker, can send any
bytes RabbitMQ passes on: a routing key or a message id that is not UTF-8, a
header table of nonsense. These frames go on a channel of a real connection,
after which a round trip on the same channel proves the broker has routed them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiormq
from aiormq.abc import ChannelFrame

_HEAD = struct.Struct(">BHI")
# Basic properties: flag bits (AMQP 0-9-1, most significant first)
MESSAGE_ID = 1 << 7
HEADERS = 1 << 13
CONTENT_TYPE = 1 << 15


def shortstr(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def table(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A field table of string values (``S``), keys and values as raw bytes."""
    body = b"".join(shortstr(k) + b"S" + longstr(v) for k, v in entries)
    return longstr(body)


@dataclass(frozen=True)
class RawMessage:
    exchange: bytes
    routing_key: bytes
    body: bytes
    # raw property flags and their encoded values, in flag order
    flags: int = 0
    properties: bytes = b""


def properties(
    *,
    message_id: bytes | None = None,
    headers: Sequence[tuple[bytes, bytes]] | None = None,
    content_type: bytes | None = None,
) -> tuple[int, bytes]:
    """Flags and bytes of the properties given (the rest absent)."""
    flags, out = 0, b""
    if content_type is not None:
        flags |= CONTENT_TYPE
        out += shortstr(content_type)
    if headers is not None:
        flags |= HEADERS
        out += table(headers)
    if message_id is not None:
        flags |= MESSAGE_ID
        out += shortstr(message_id)
    return flags, out


def frames(channel: int, message: RawMessage, frame_max: int) -> bytes:
    method = struct.pack(">HHH", 60, 40, 0) + shortstr(message.exchange)
    method += shortstr(message.routing_key) + b"\x00"
    header = struct.pack(">HHQH", 60, 0, len(message.body), message.flags) + message.properties
    out = [_HEAD.pack(1, channel, len(method)), method, b"\xce"]
    out += [_HEAD.pack(2, channel, len(header)), header, b"\xce"]
    step = frame_max - 8
    for i in range(0, len(message.body), step):
        part = message.body[i : i + step]
        out += [_HEAD.pack(3, channel, len(part)), part, b"\xce"]
    return b"".join(out)


async def publish_raw(url: str, messages: Sequence[RawMessage]) -> None:
    """Publish ``messages`` as they are, in order, and return once RabbitMQ has
    taken them all (a synchronous method on the same channel answers after them)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        raw = cast(Any, channel)
        for message in messages:
            payload = frames(raw.number, message, raw.max_content_size + 8)
            await raw.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        await channel.basic_qos(prefetch_count=1)  # after every publish above
    finally:
        await connection.close()
