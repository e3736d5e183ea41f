"""One AMQP connection per process, kept up by a supervisor.

We use plain (not "robust") aio-pika connections: on any loss the supervisor
throws the connection away, reconnects with capped, jittered backoff and runs
the owner's ``setup`` again, which re-declares the topology, re-binds and
re-consumes. Recovery is therefore the same code path as start-up, and
readiness is only reported once ``setup`` has really finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from yarl import URL

from shared.wire import install_fast_frames

log = logging.getLogger("ssehub.amqp")

Setup = Callable[[AbstractConnection], Awaitable[None]]
Lost = Callable[[], Awaitable[None]]


HEARTBEAT = 10  # seconds: a vanished peer (no RST) is noticed within ~2-3 of these


def with_heartbeat(url: str) -> str:
    """Ask for a short AMQP heartbeat unless the URL sets one: aiormq's default of
    60 s would leave a standby dispatcher idle for minutes after a host vanishes."""
    parsed = URL(url)
    if "heartbeat" in parsed.query:
        return url
    return str(parsed.update_query(heartbeat=HEARTBEAT))


class AmqpSupervisor:
    def __init__(
        self,
        url: str,
        setup: Setup,
        *,
        name: str,
        on_lost: Lost | None = None,
        max_delay: float = 10.0,
    ) -> None:
        install_fast_frames()
        self._url = with_heartbeat(url)
        self._setup = setup
        self._on_lost = on_lost
        self._name = name
        self._max_delay = max_delay
        self._watched: list[Awaitable[object]] = []
        self._failed: asyncio.Event = asyncio.Event()
        self._closing = False
        self.ready = asyncio.Event()
        self.connection: AbstractConnection | None = None
        self.connects = 0  # how many times setup completed; tests watch it

    def watch(self, channel: AbstractChannel) -> None:
        """A channel closed by the broker (e.g. a failed declare) counts as a lost connection."""
        self._watched.append(channel.closed())

    def fail(self) -> None:
        """Ask for a reconnect, e.g. after a publish on a dead channel."""
        self._failed.set()

    async def close(self) -> None:
        """Leave for good: close the connection and do not reconnect."""
        self._closing = True
        self._failed.set()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()

    async def run(self) -> None:
        """Run until cancelled or closed; never raises for broker trouble."""
        delay = 0.1
        while not self._closing:
            conn: AbstractConnection | None = None
            self._watched = []
            self._failed.clear()
            try:
                conn = await aio_pika.connect(
                    self._url, timeout=10, client_properties={"connection_name": self._name}
                )
                await self._setup(conn)
                self.connection = conn
                self.connects += 1
                self.ready.set()
                log.info("%s: connected to RabbitMQ", self._name)
                delay = 0.1
                await self._until_lost(conn)
                if self._closing:
                    break
                log.warning("%s: lost the RabbitMQ connection; reconnecting", self._name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: RabbitMQ unavailable (%s); retry in %.1fs", self._name, exc, delay)
            finally:
                self.ready.clear()
                self.connection = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close())
                if self._on_lost is not None and conn is not None:
                    await self._on_lost()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_delay)

    async def _until_lost(self, conn: AbstractConnection) -> None:
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(w) for w in (conn.closed(), self._failed.wait(), *self._watched)
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
