"""Delivered AMQP messages for the intake's unit tests, as the broker hands them over."""

from __future__ import annotations

from typing import Any, cast

from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader
from ssehub import topology


def delivered(
    routing_key: str,
    body: bytes,
    *,
    exchange: str = topology.EVENTS.name,
    headers: dict[str, Any] | None = None,
    message_id: str | None = None,
    redelivered: bool = False,
    tag: int = 1,
    properties: spec.Basic.Properties | None = None,
) -> DeliveredMessage:
    props = properties or spec.Basic.Properties(headers=headers, message_id=message_id)
    return DeliveredMessage(
        delivery=spec.Basic.Deliver("ctag", tag, redelivered, exchange, routing_key),
        header=ContentHeader(0, len(body), props),
        body=body,
        channel=cast(Any, None),
    )


def internal(body: bytes, headers: dict[str, Any], tag: int = 1) -> DeliveredMessage:
    """What an ssehub process sent through ``ssehub.internal``."""
    return delivered(
        topology.DISPATCH.name, body, exchange=topology.INTERNAL.name, headers=headers, tag=tag
    )
