"""Acking one delivery at once, without a round trip or a lock.

A dispatcher's probe (dispatcher/activity.py) is acked alone, outside any
batch: its ack frame goes into the connection's writer queue now, before any
later batch's multiple-ack (which then no longer covers it).

aiormq internals (pinned, see ``ssehub.fastpath``): ``Channel.write_queue``,
``Channel.number``, ``Channel.is_closed``, and ``aiormq.abc.ChannelFrame``.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from pamqp import commands as spec


def ack_now(channel: aiormq.abc.AbstractChannel, tag: int) -> None:
    """Ack delivery ``tag`` in order with everything written after it. If the
    writer queue is full, it is left to the next batch's multiple-ack, which
    covers every lower tag anyway."""
    raw: aiormq.Channel = channel  # type: ignore[assignment]
    if raw.is_closed:
        return
    payload = pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=tag), raw.number)
    with contextlib.suppress(asyncio.QueueFull):
        raw.write_queue.put_nowait(ChannelFrame(payload=payload, should_close=False))
