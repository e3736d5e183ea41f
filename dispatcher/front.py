"""The front stage (``SSEHUB_PARTITIONS`` > 1): what publishers send, split by
partition.

Publishers change nothing: their messages reach the intake queue
``ssehub.dispatch`` as before. One dispatcher process at a time consumes it
(single active consumer, like any partition) and, per batch, validates every
message (invalid ones are dead-lettered here, with the reasons of before),
splits the good ones by the partition that owns them (a ``batch``
message's items in place, in order; a ``users`` item split by its users'
partitions) and hands each partition its part as one message
(dispatcher/forward.py), persistent, on one channel, so each partition
receives each user's and conversation's messages in publish order. The batch
is acked once the broker has confirmed every part: a crash before that
redelivers it, and the parts are forwarded again with the same keys, which
the partitions dedupe. No store, no numbering here.
"""

from __future__ import annotations

import logging
import time

from aiormq.abc import DeliveredMessage
from ssehub import topology
from ssehub.config import Settings
from ssehub.dispatcher import forward
from ssehub.dispatcher.backstop import Backstop
from ssehub.dispatcher.loop import BatchLoop, tag_of
from ssehub.dispatcher.metrics import DispatcherMetrics

log = logging.getLogger("ssehub.dispatcher")


class Front(BatchLoop):
    partition = None  # not a partition: /readyz lists the partitions only

    def __init__(
        self, settings: Settings, metrics: DispatcherMetrics, name: str, backstop: Backstop
    ) -> None:
        super().__init__(f"{name}/front", settings, metrics)
        self.queue = topology.DISPATCH.name
        self.backstop = backstop

    async def handle(self, batch: list[DeliveredMessage], arrived: float) -> None:
        link = self.link
        if link is None:
            return
        settings = self._settings
        tag = tag_of(batch[-1])  # acks the whole batch, set-aside messages included
        batch, overdue = await self.backstop.screen(batch)
        intake = self.sort(batch)
        intake.dead += overdue
        if intake.presence or intake.routes or intake.notices:
            # an edge configured with one partition, in a deployment of several:
            # refused at its start, so only from one started before the change
            log.warning("edge signals on the intake queue dropped (SSEHUB_PARTITIONS differs?)")
        number = self.begin()
        started = time.perf_counter()
        parts = forward.split(intake.good, settings.partitions)
        messages = forward.publishes(parts, settings.partitions)
        messages += self.dead_letters(intake.dead)
        if not await self.ready_to_publish(link):
            return
        self.metrics.forwarded.inc(len(messages) - len(intake.dead))
        confirmed = self.publish_and_ack(link, messages, tag, number, started)
        self.metrics.intake_to_publish.observe(time.perf_counter() - arrived)
        self.metrics.time_publish(confirmed)
