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
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection
from ssehub.backoff import Backoff
from ssehub.errors import BrokerUnavailable
from yarl import URL

log = logging.getLogger("ssehub.amqp")

Setup = Callable[[AbstractConnection], Awaitable[None]]

# What a broker link can do to us that a reconnect repairs: the broker closing a
# connection or channel (aiormq's AMQPError tree), a channel used after it
# closed, the network (ConnectionError, OSError, TimeoutError) and our own
# BrokerUnavailable. Anything else (an AttributeError, a ConfigError) is a bug
# or a wrong setting: retrying it forever would hide it.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,  # ConnectionError and TimeoutError are OSErrors
    BrokerUnavailable,
)
Lost = Callable[[], Awaitable[None]]


HEARTBEAT = 10  # seconds: a vanished peer (no RST) is noticed within ~2-3 of these


def with_heartbeat(url: str) -> str:
    """Ask for a short AMQP heartbeat unless the URL sets one: aiormq's default of
    60 s would leave a standby dispatcher idle for minutes after a host vanishes."""
    parsed = URL(url)
    if "heartbeat" in parsed.query:
        return url
    return str(parsed.update_query(heartbeat=HEARTBEAT))


async def connect(url: str, *, timeout: float, **kwargs: object) -> AbstractConnection:
    """``aio_pika.connect`` that closes what it made when the connect fails.

    aio-pika builds the ``Connection`` before connecting and drops it on failure
    unclosed; its ``__del__`` then schedules ``close()`` on whichever thread the
    garbage collector happens to run (a worker thread has no loop, and the
    coroutine is never awaited). Every retry loop here fails connects on purpose.
    """
    connection = aio_pika.Connection(URL(url), **kwargs)  # type: ignore[arg-type]
    try:
        await connection.connect(timeout=timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(connection.close())
        raise
    return connection


def describe(exc: BaseException, url: str) -> str:
    """What went wrong connecting to ``url``, in words (never the password)."""
    parsed = URL(url)
    where = f"{parsed.host}:{parsed.port or 5672}"
    vhost = parsed.path[1:] if len(parsed.path) > 1 else "/"
    user = parsed.user or "guest"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return f"RabbitMQ at {where} refused the login of user {user!r} (wrong user or password)"
    text = str(exc)
    # aiormq reports the broker's Connection.Close during open as an unexpected
    # frame; the usual cause is a vhost that does not exist or is not allowed.
    if "Connection.OpenOk" in text and "Connection.Close" in text:
        return (
            f"RabbitMQ at {where} refused vhost {vhost!r} for user {user!r} "
            "(does the vhost exist, and may the user use it?)"
        )
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        # the broker's words name the resource, the vhost and the user
        return f"RabbitMQ at {where}: {exc} (what each process may do: `ssehub roles`)"
    if isinstance(exc, BrokerUnavailable):  # our own words already (e.g. topology.NotDeclared)
        return f"{exc} (RabbitMQ at {where}, vhost {vhost!r})"
    if isinstance(exc, aiormq.exceptions.ConnectionClosed):
        return f"RabbitMQ at {where} closed the connection: {exc.args[-1] if exc.args else exc}"
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        reason = exc.args[-1] if exc.args else exc.__class__.__name__
        return f"cannot reach RabbitMQ at {where} ({reason})"
    return f"RabbitMQ at {where}: {exc.__class__.__name__}: {exc}"


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
        """Run until cancelled or closed. Broker trouble (``BROKER_ERRORS``) is
        logged in one line saying why and retried with backoff; anything else
        raised by the connect or the owner's ``setup`` ends the run with it (the
        process fails, and says why once)."""
        backoff = Backoff(0.1, self._max_delay)
        waited = False  # a wait for another process (``waiting``) was said once already
        while not self._closing:
            connection: AbstractConnection | None = None
            self._watched = []
            self._failed.clear()
            try:
                connection = await connect(
                    self._url, timeout=10, client_properties={"connection_name": self._name}
                )
                await self._setup(connection)
                self.connection = connection
                self.connects += 1
                self.ready.set()
                log.info("%s: connected to RabbitMQ", self._name)
                backoff.reset()
                await self._until_lost(connection)
                if self._closing:
                    break
                log.warning("%s: lost the RabbitMQ connection; reconnecting", self._name)
            except BROKER_ERRORS as exc:
                # waiting for another process (an edge for a dispatcher to declare the
                # topology) is how a deployment starting at once begins: INFO the first time
                first_wait = getattr(exc, "waiting", False) and not waited
                waited = waited or first_wait
                log.log(
                    logging.INFO if first_wait else logging.WARNING,
                    "%s: %s; retrying in %.1fs",
                    self._name,
                    describe(exc, self._url),
                    backoff.nominal,
                )
            finally:
                self.ready.clear()
                self.connection = None
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close())
                if self._on_lost is not None and connection is not None:
                    await self._on_lost()
            await asyncio.sleep(backoff.next())

    async def _until_lost(self, connection: AbstractConnection) -> None:
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(w)
            for w in (connection.closed(), self._failed.wait(), *self._watched)
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
