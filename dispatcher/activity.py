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
``PROBE_HEADER``) into ``ssehub.dispatch``, through ``ssehub.internal``: the
active consumer, whichever it is, receives it, acks it on the spot and drops
it (a message with the header that came another way is no probe). The active one thus learns
it is active from its own probes within ``PROBE_EVERY`` when idle (and at once
under traffic); a standby never receives anything and reads ``standby``; a
standby promoted by a failover receives its next probe within ``PROBE_EVERY``.
Cost: one tiny message per ``PROBE_EVERY`` per idle dispatcher, none under load.
Probes run only where the HTTP port is served (the only reader of the answer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiormq
from aiormq.abc import DeliveredMessage
from ssehub import topology
from ssehub.amqp import BROKER_ERRORS
from ssehub.fastpath.marshal import Publish

log = logging.getLogger("ssehub.dispatcher")

PROBE_EVERY = 5.0
WINDOW = 3 * PROBE_EVERY


def probe_message(name: str, queue: str = topology.DISPATCH.name) -> Publish:
    """Through ``ssehub.internal``: a probe is taken as one only from there."""
    properties = aiormq.spec.Basic.Properties(headers={topology.PROBE_HEADER: name})
    return topology.internal(queue, b"", properties)


def is_probe(message: DeliveredMessage) -> bool:
    headers = message.header.properties.headers
    return headers is not None and topology.PROBE_HEADER in headers


def _unconfirmed(confirmed: asyncio.Future[None]) -> None:
    if not confirmed.cancelled() and confirmed.exception() is not None:
        log.debug("probe not confirmed: %s", confirmed.exception())


class Activity:
    """Fed by the consumer callback (one attribute store per delivery) and
    read by the HTTP port; ``run`` turns the flag into a time and probes."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, every: float = PROBE_EVERY
    ) -> None:
        self._clock = clock
        self._every = every  # probe when idle this long; active for 3 × this after a delivery
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
        return self._last is None or now - self._last >= self._every

    def active(self, holding: bool) -> bool:
        """``holding``: deliveries in hand, not yet acked."""
        self.tick()
        return holding or (self._last is not None and self._clock() - self._last < 3 * self._every)

    async def run(self, probe: Callable[[], asyncio.Future[None] | None]) -> None:
        """Until cancelled: every ``PROBE_EVERY / 5`` s, probe if one is due."""
        next_probe = 0.0
        while True:
            if self.tick() and self._clock() >= next_probe:
                try:
                    confirmed = probe()
                except BROKER_ERRORS as exc:  # the link is going down: the supervisor knows
                    log.debug("probe not sent: %s", exc)
                else:
                    if confirmed is not None:
                        confirmed.add_done_callback(_unconfirmed)
                next_probe = self._clock() + self._every
            await asyncio.sleep(self._every / 5)
