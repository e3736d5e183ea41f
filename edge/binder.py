"""Binding users on the node queue in rounds, for crowds that connect at once.

A ``queue.bind`` is an RPC, and RPCs on one AMQP channel go one at a time, a
round trip each; under a crowd that round trip also waits for a busy event
loop twice. So bind requests made while a round is in flight wait for the
next round, which sends them all back to back: every bind but the last with
``nowait`` (no reply), the last one waited for. RabbitMQ handles a channel's
methods in order, so the last reply means every bind of the round is in
place. (``queue.unbind`` has no ``nowait`` in AMQP 0-9-1: unbinds are sent as
plain RPCs, in order, within the round.) A failed bind closes the channel;
the round fails and the edge reconnects, as for any broker error.
"""

from __future__ import annotations

import aiormq
from ssehub import topology
from ssehub.coalesce import Coalescer

Op = tuple[str, bool]  # user id, bind (True) or unbind


class Binder:
    def __init__(self, channel: aiormq.abc.AbstractChannel, queue: str) -> None:
        self._channel = channel
        self._queue = queue
        # The rounds are the Coalescer's: ops wait for the next round, in order.
        self._rounds: Coalescer[Op, None] = Coalescer(self._send, None)

    async def apply(self, user_id: str, bind: bool) -> None:
        """Returns once the binding is in place (or gone); raises the broker's error."""
        await self._rounds.get((user_id, bind))

    async def _send(self, ops: list[Op]) -> dict[Op, None]:
        channel, queue, exchange = self._channel, self._queue, topology.DELIVER.name
        last = len(ops) - 1
        for i, (user_id, bind) in enumerate(ops):
            if not bind:
                await channel.queue_unbind(queue, exchange, user_id)
            elif i < last:
                await channel.queue_bind(queue, exchange, user_id, nowait=True)
            else:
                await channel.queue_bind(queue, exchange, user_id)
        return {}
