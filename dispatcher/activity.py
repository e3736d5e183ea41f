"""Is this dispatcher the active one?

``ssehub.dispatch`` has ``x-single-active-consumer``: RabbitMQ delivers to one
consumer and keeps the others as standbys, and over AMQP 0-9-1 (3.10) it tells
no consumer which it is: ``basic.consume-ok`` is the same for both, and a
passive ``queue.declare`` only counts consumers. What does tell is a delivery:
only the active consumer gets any. So the rule is

    active ⇔ the broker delivered to us on the current connection within the
             last ``WINDOW`` seconds, or we hold deliveries not yet acked.

An idle queue delivers nothing, so a dispatcher that has seen no delivery for
``PROBE_EVERY`` seconds publishes a probe (an empty message with
``PROBE_HEADER``) into ``ssehub.dispatch``: the active consumer, whichever it
is, receives it, acks it on the spot and drops it. The active one thus learns
it is active from its own probes within ``PROBE_EVERY`` when idle (and at once
under traffic); a standby never receives anything and reads ``standby``; a
standby promoted by a failover receives its next probe within ``PROBE_EVERY``.
Cost: one tiny message per ``PROBE_EVERY`` per idle dispatcher, none under load.
Probes run only where the HTTP port is served (the only reader of the answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec
from ssehub import topology
from ssehub.fastpath.marshal import Publish

log = logging.getLogger("ssehub.dispatcher")

PROBE_EVERY = 5.0
WINDOW = 3 * PROBE_EVERY


def probe_message(name: str) -> Publish:
    properties = aiormq.spec.Basic.Properties(headers={topology.PROBE_HEADER: name})
    return Publish("", topology.DISPATCH.name, b"", properties)


def is_probe(message: DeliveredMessage) -> bool:
    return message.routing_key == topology.DISPATCH.name and topology.PROBE_HEADER in (
        message.header.properties.headers or {}
    )


def ack_now(channel: aiormq.abc.AbstractChannel, tag: int) -> None:
    """Ack one delivery synchronously, in order with everything written after it.

    A probe is acked alone, outside any batch: written into the connection's
    writer queue now, before any later batch's multiple-ack (which then simply
    no longer covers it). If the writer queue is full, it is left to the next
    batch's multiple-ack, which covers every lower tag anyway."""
    raw: aiormq.Channel = channel  # type: ignore[assignment]
    if raw.is_closed:
        return
    payload = pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=tag), raw.number)
    with contextlib.suppress(asyncio.QueueFull):
        raw.write_queue.put_nowait(ChannelFrame(payload=payload, should_close=False))


def _unconfirmed(confirmed: asyncio.Future[None]) -> None:
    if not confirmed.cancelled() and confirmed.exception() is not None:
        log.debug("probe not confirmed: %s", confirmed.exception())


class Activity:
    """Fed by the consumer callback (one attribute store per delivery) and
    read by the HTTP port; ``run`` turns the flag into a time and probes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seen = False  # a delivery since the last tick
        self._last: float | None = None  # when one was last noticed, on this link

    def lost(self) -> None:
        """The connection went: deliveries on the old one say nothing any more."""
        self.seen = False
        self._last = None

    def tick(self) -> bool:
        """Fold the flag into the time; True when a probe is due."""
        now = self._clock()
        if self.seen:
            self.seen = False
            self._last = now
        return self._last is None or now - self._last >= PROBE_EVERY

    def active(self, holding: bool) -> bool:
        """``holding``: deliveries in hand, not yet acked."""
        self.tick()
        return holding or (self._last is not None and self._clock() - self._last < WINDOW)

    async def run(self, probe: Callable[[], asyncio.Future[None] | None]) -> None:
        """Until cancelled: every ``PROBE_EVERY / 5`` s, probe if one is due."""
        next_probe = 0.0
        while True:
            if self.tick() and self._clock() >= next_probe:
                try:
                    confirmed = probe()
                except Exception as exc:  # the link is going down: the supervisor knows
                    log.debug("probe not sent: %s", exc)
                else:
                    if confirmed is not None:
                        confirmed.add_done_callback(_unconfirmed)
                next_probe = self._clock() + PROBE_EVERY
            await asyncio.sleep(PROBE_EVERY / 5)
