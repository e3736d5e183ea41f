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

import asyncio

import aiormq

from shared import topology


class Binder:
    def __init__(self, channel: aiormq.abc.AbstractChannel, queue: str) -> None:
        self._channel = channel
        self._queue = queue
        self._waiting: list[tuple[str, bool, asyncio.Future[None]]] = []
        self._round: asyncio.Task[None] | None = None

    async def apply(self, user_id: str, bind: bool) -> None:
        """Returns once the binding is in place (or gone); raises the broker's error."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((user_id, bind, done))
        if self._round is None:
            self._round = asyncio.create_task(self._rounds())
        await done

    async def _rounds(self) -> None:
        try:
            while self._waiting:
                ops, self._waiting = self._waiting, []
                try:
                    await self._send(ops)
                except Exception as exc:
                    for *_, done in ops:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for *_, done in ops:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._round = None

    async def _send(self, ops: list[tuple[str, bool, asyncio.Future[None]]]) -> None:
        channel, queue, exchange = self._channel, self._queue, topology.DELIVER.name
        last = len(ops) - 1
        for i, (user_id, bind, _) in enumerate(ops):
            if not bind:
                await channel.queue_unbind(queue, exchange, user_id)
            elif i < last:
                await channel.queue_bind(queue, exchange, user_id, nowait=True)
            else:
                await channel.queue_bind(queue, exchange, user_id)
