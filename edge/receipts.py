"""Receipts: when an event that asked for one is first written to one of the
recipient's streams, a persistent message goes to ``sse.receipts`` with routing
key ``receipt.<userId>`` and body ``{"userId", "seq", "id", "event", "deliveredAt"}``.

At least once: receipts wait here until the broker confirms them and are sent
again on the next connection if it did not. Within one edge a (user, seq) is
reported once, however many of the user's streams write it; across edges (the
user's tabs on two nodes) a consumer sees it twice and dedupes by
``(userId, seq)``. Events that did not ask for a receipt cost nothing here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiormq
import orjson
from ssehub import topology
from ssehub.amqp import BROKER_ERRORS
from ssehub.edge.seam import Spawn
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.marshal import Publish

log = logging.getLogger("ssehub.edge")

RECEIPT_PROPERTIES = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=2)


class Receipts:
    def __init__(self, spawn: Spawn, clock: Callable[[], float] = time.time) -> None:
        """``spawn``: runs a confirmation in the node's task group (edge/node.py)."""
        self._spawn = spawn
        self._clock = clock
        self._reported: dict[str, int] = {}  # user -> highest seq reported by this edge
        self._queue: list[Publish] = []
        self._publisher: BatchPublisher | None = None
        self._scheduled = False

    def attach(self, publisher: BatchPublisher | None) -> None:
        """The confirm channel of the current broker link (None: link lost)."""
        self._publisher = publisher
        if publisher is not None and self._queue:
            self._schedule()

    def report(self, user: str, due: list[tuple[int, str | None, str]]) -> None:
        """(seq, key, event) of events just written to one of ``user``'s streams."""
        upto = self._reported.get(user, 0)
        now_ms = int(self._clock() * 1000)
        for seq, key, event in sorted(due):
            if seq <= upto:
                continue
            upto = seq
            body = {"userId": user, "seq": seq, "id": key, "event": event, "deliveredAt": now_ms}
            self._queue.append(
                Publish(
                    topology.RECEIPTS.name,
                    f"receipt.{user}",
                    orjson.dumps(body),
                    RECEIPT_PROPERTIES,
                )
            )
        self._reported[user] = upto
        self._schedule()

    def forget(self, user: str) -> None:
        """The user has no stream here any more."""
        self._reported.pop(user, None)

    def _schedule(self) -> None:
        if not self._scheduled and self._queue:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        publisher = self._publisher
        if publisher is None or not self._queue:
            return  # kept until the next link
        batch, self._queue = self._queue, []
        self._spawn(self._confirm(publisher, batch))

    async def _confirm(self, publisher: BatchPublisher, batch: list[Publish]) -> None:
        try:
            await publisher.send(batch)
        except BROKER_ERRORS as exc:  # not confirmed: again on the next link
            log.warning("%d receipts not confirmed (%s); resending on reconnect", len(batch), exc)
            self._queue[:0] = batch
            if self._publisher is not publisher:
                self._schedule()
