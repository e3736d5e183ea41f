"""One queue's loop: consume → handle a batch → publish → ack, acks in order.

The shape both stages share (the front, dispatcher/front.py, and each
partition, dispatcher/worker.py): deliveries arrive inline from the
connection's reader (ssehub.fastpath.inline) into an inbox; the loop takes
up to a batch of them, the stage handles it, publishes what it produced as
one write and acks the batch with one multiple-ack once the broker has
confirmed it. Publishing and acking a batch overlap the next batch's work;
the next is published only after the previous one is acked, so acks stay in
order. A batch whose publish or ack fails marks its channel broken: no later
batch consumed on it is acked (a multiple-ack would cover the failed one),
and all come back from the broker on a new channel.

A loop's channel comes and goes (the link, or the fair share releasing the
partition): ``attach`` and ``detach``; what was buffered from a gone channel
is dropped (the broker redelivers it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage
from ssehub.amqp import BROKER_ERRORS
from ssehub.config import Settings
from ssehub.dispatcher.activity import PROBE_EVERY, Activity, is_probe
from ssehub.dispatcher.intake import DeadLetter, Intake, is_internal, sort_batch
from ssehub.dispatcher.metrics import DispatcherMetrics
from ssehub.dispatcher.outbound import dead_letter
from ssehub.fastpath.acks import ack_now
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.marshal import Publish

log = logging.getLogger("ssehub.dispatcher")


@dataclass(slots=True)
class Link:
    """What one consume channel gave a loop; replaced wholesale."""

    generation: int
    consume: aiormq.abc.AbstractChannel
    publisher: BatchPublisher  # the process's confirm channel
    # the aio-pika wrapper of the consume channel, held so that it lives as
    # long as the link (a collected wrapper marks its channel closed)
    channel: AbstractChannel
    # no batch published on it yet: the loop just became active on a new channel
    fresh: bool = True


class BatchLoop:
    queue: str  # the queue it consumes

    def __init__(self, name: str, settings: Settings, metrics: DispatcherMetrics) -> None:
        self.name = name
        self._settings = settings
        self.metrics = metrics
        # (link generation, message, when it arrived: perf_counter)
        self._inbox: asyncio.Queue[tuple[int, DeliveredMessage, float]] = asyncio.Queue()
        self.link: Link | None = None
        self._generation = 0
        # several partitions: a process must soon know which it holds (its share)
        self.activity = Activity(every=1.0 if settings.partitions > 1 else PROBE_EVERY)
        self._acking: asyncio.Task[None] | None = None
        self._broken: Link | None = None
        self.batches = 0  # acked batches; for tests and metrics
        self._started = 0  # batches taken up (failpoints count these)

    # -- the channel -------------------------------------------------------------
    def attach(self, consume: aiormq.abc.AbstractChannel, publisher: BatchPublisher,
               channel: AbstractChannel) -> Link:  # fmt: skip
        self._generation += 1
        self.link = Link(self._generation, consume, publisher, channel)
        return self.link

    def detach(self) -> None:
        """The channel is gone: its unacked messages go back to the queue on the
        broker; the ones buffered here can no longer be acked, so forget them."""
        self.link = None
        self.activity.lost()
        while not self._inbox.empty():
            self._inbox.get_nowait()

    def on_message(self, message: DeliveredMessage) -> None:
        """Inline, from the connection's reader: one attribute store and a put."""
        self.activity.seen = True
        link = self.link
        if link is None:
            return
        if is_probe(message) and is_internal(message):  # it reached us: we are the active one
            ack_now(link.consume, tag_of(message))
            return
        self._inbox.put_nowait((link.generation, message, time.perf_counter()))

    @property
    def active(self) -> bool:
        """The queue's single active consumer (rule: dispatcher/activity.py)."""
        busy = self._acking is not None and not self._acking.done()
        return self.link is not None and self.activity.active(not self._inbox.empty() or busy)

    async def settle(self) -> None:
        """Wait for the batch being acked, if any (before a release or a stop)."""
        if self._acking is not None:
            await asyncio.gather(self._acking, return_exceptions=True)
            self._acking = None

    async def handle(self, batch: list[DeliveredMessage], arrived: float) -> None:
        """The stage's work on one batch (``arrived``: its oldest, perf_counter)."""
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------
    async def next_batch(self, timeout: float) -> tuple[list[DeliveredMessage], float]:
        """Up to a batch of what the consumer buffered, and when its oldest arrived."""
        inbox = self._inbox
        if inbox.empty():
            get = asyncio.ensure_future(inbox.get())
            # not wait_for: before 3.12 it could drop an item that arrived as it timed out
            await asyncio.wait((get,), timeout=timeout)
            if not get.done():
                get.cancel()
                return [], 0.0
            items = [get.result()]
        else:  # under load: no futures, no wait (~25 µs a batch)
            items = [inbox.get_nowait()]
        while len(items) < self._settings.batch_size and not inbox.empty():
            items.append(inbox.get_nowait())
        link = self.link
        batch = [m for g, m, _ in items if link is not None and g == link.generation]
        return batch, items[0][2]

    def sort(self, batch: list[DeliveredMessage]) -> Intake:
        """The batch's messages validated and sorted (dispatcher/intake.py)."""
        settings = self._settings
        return sort_batch(batch, settings.max_message_bytes, settings.max_batch_bytes, time.time())

    def begin(self) -> int:
        """A batch is taken up: its number (failpoints count these)."""
        self._started += 1
        return self._started

    async def ready_to_publish(self, link: Link) -> bool:
        """Wait for the previous batch's ack (acks go in order, and if it failed,
        this one is redelivered with it); False if this batch must not go out."""
        if self._acking is not None:
            await self._acking
            self._acking = None
        return self.link is link and self._broken is not link

    def publish_and_ack(
        self, link: Link, messages: list[Publish], tag: int, number: int, started: float
    ) -> asyncio.Future[None]:
        """Publish as one write; ack the batch once confirmed (in the background,
        overlapping the next batch). Returns the confirmation."""
        link.fresh = False
        confirmed = link.publisher.send(messages)
        self._acking = asyncio.ensure_future(self._ack(link, confirmed, tag, number, started))
        return confirmed

    async def _ack(
        self, link: Link, confirmed: asyncio.Future[None], tag: int, number: int, started: float
    ) -> None:
        try:
            await confirmed
            self.failpoint("after_publish", number)
            await link.consume.basic_ack(tag, multiple=True)
        except BROKER_ERRORS as exc:  # nothing acked: all of it comes back on a new channel
            log.warning(
                "%s: publish/ack failed (%s); the batch will be redelivered",
                self.name,
                exc,
                extra={"batch": number, "reason": str(exc)},
            )
            self._broken = link
            self.broke(link)
            return
        self.batches += 1
        self.metrics.batches.inc()
        self.metrics.ack_seconds.observe(time.perf_counter() - started)

    def dead_letters(self, dead: Sequence[DeadLetter]) -> list[Publish]:
        """To ``sse.dead``, each logged and counted by its reason."""
        for letter in dead:
            message, reason = letter.message, letter.reason
            log.warning(
                "dead-lettering %r: %s",
                message.routing_key,
                reason,
                extra={"routing_key": message.routing_key, "reason": reason},
            )
            self.metrics.dead_letter(reason)
        return [dead_letter(letter) for letter in dead]

    def broke(self, link: Link) -> None:
        """A publish or ack failed on ``link`` (the owner replaces the link)."""

    def failpoint(self, point: str, number: int) -> None:
        """Testing only (SSEHUB_FAILPOINT): die like a power cut at ``point``
        of batch ``number``."""
        if self._settings.failpoint == f"{point}:{number}":
            log.warning("failpoint %s reached: SIGKILL", self._settings.failpoint)
            os.kill(os.getpid(), signal.SIGKILL)


def tag_of(message: DeliveredMessage) -> int:
    tag = message.delivery.delivery_tag  # type: ignore[union-attr]
    assert tag is not None
    return int(tag)
