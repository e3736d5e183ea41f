"""Delivery frames decoded by hand.

``FastFrameReceiver`` reads each frame off the socket with two reads and
decodes the frames of a delivery (Basic.Deliver, a content header without
properties, the body) by hand; pamqp decodes every other frame as before.
pamqp's generic decoding was half of an edge's CPU.

aiormq internals (pinned, see ``ssehub.fastpath``): ``aiormq.connection.FrameReceiver``
(subclassed, and replaced for every connection of the process by
``install()``), its ``reader`` and ``started`` attributes and ``get_frame``.
``install`` is called explicitly by the entry points, at start.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiormq
import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader
from ssehub.fastpath.marshal import FRAME_END, HEAD

_DELIVER = struct.Struct(">HH")  # class id, method id
_LONGLONG = struct.Struct(">Q")
_CONTENT = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_NO_PROPERTIES = spec.Basic.Properties()  # shared, read-only: nobody mutates them
# The properties of a delivery whose content header pamqp cannot decode (a
# publisher's bytes: a string that is not UTF-8, a field table of nonsense).
# Compared by identity (no header can forge it): the consumer dead-letters it.
UNDECODABLE = spec.Basic.Properties()


def decode_deliver(payload: bytes) -> spec.Basic.Deliver:
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
    # a publisher's bytes, not always UTF-8: kept reversible, never raised on
    # (an exception here would end the connection, and the message would come back)
    routing_key = payload[i + 1 : i + 1 + n].decode("utf-8", "surrogateescape")
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
            kind, channel, size = HEAD.unpack(head)
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
            return weight, channel, decode_deliver(payload)
        if kind == 2:
            _class, _weight, body_size, flags = _CONTENT.unpack_from(payload)
            if flags == 0:
                return weight, channel, ContentHeader(0, body_size, _NO_PROPERTIES)
            try:
                return pamqp.frame.unmarshal(head + payload)
            except (PAMQPException, ValueError, LookupError, struct.error, TypeError):
                # the properties are what a publisher wrote: one message's fault
                return weight, channel, ContentHeader(0, body_size, UNDECODABLE)
        try:
            return pamqp.frame.unmarshal(head + payload)
        except PAMQPException as exc:
            raise aiormq.exceptions.InvalidFrameError(str(exc)) from exc


def install() -> None:
    """Make aiormq read frames with FastFrameReceiver, for every connection this
    process opens from now on. Idempotent; call it at start."""
    aiormq.connection.FrameReceiver = FastFrameReceiver  # type: ignore[misc]


def installed() -> bool:
    return aiormq.connection.FrameReceiver is FastFrameReceiver
