"""The publisher's sending side: concurrent calls coalesced into ``batch`` messages.

Calls made in one event-loop turn (or within ``linger`` seconds) go out
together: one call alone as its own message (``user.<id>``, ...), several as
one ``batch`` message of at most ``max_items`` items and ``max_bytes`` bytes.
One message is in flight at a time, so order is kept exactly, and while it
waits for the broker's confirm the next calls gather into the next batch:
the busier the caller, the larger the batches. A message that is not
confirmed is sent again on a fresh connection with the same ``message_id``,
so item keys (``M:<index>``) stay the same and a retry never doubles an event.

The sender declares nothing (its broker user may only write to ``sse.events``:
ssehub.roles): the dispatcher declares the topology. It checks ``sse.events``
passively, and publishes with ``mandatory``: a message that no queue takes
(no dispatcher ever declared the topology) comes back, and is an error after
the retries, never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from ssehub import batch, topology
from ssehub.amqp import BROKER_ERRORS, connect, describe
from ssehub.backoff import Backoff
from ssehub.errors import PublishError
from ssehub.schema import dump_body


@dataclass(slots=True)
class Call:
    """One API call: its target (``kind``, ``target``; ``users`` items have no
    ``target``), its validated JSON object, and the caller's future (its key)."""

    kind: str
    target: str | None
    doc: dict[str, Any]
    body: bytes  # ``doc`` as a message body of its own
    key: str | None
    done: asyncio.Future[str] = field(repr=False)


UNROUTABLE = (
    "RabbitMQ returned it: no queue is bound to sse.events, so no dispatcher has declared "
    "this deployment's topology yet (start one: publishers declare nothing)"
)
NO_EXCHANGE = (
    "the exchange sse.events does not exist: no dispatcher has declared this "
    "deployment's topology yet (start one: publishers declare nothing)"
)


class Sender:
    def __init__(
        self,
        url: str,
        *,
        attempts: int,
        timeout: float,
        linger: float,
        max_items: int,
        max_bytes: int,
    ) -> None:
        self._url = url
        self._attempts = attempts
        self._timeout = timeout
        self._linger = linger
        self._max_items = min(max_items, batch.MAX_ITEMS)
        self._max_bytes = max_bytes
        self._calls: deque[Call] = deque()
        self._loop_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def submit(self, kind: str, target: str | None, doc: dict[str, Any]) -> str:
        """Queue a call; returns its idempotency key once the broker confirmed it."""
        body = dump_body(doc)  # raises InvalidMessage here, in the caller's call
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._calls.append(Call(kind, target, doc, body, doc.get("id"), done))
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run())
        return await done

    async def _run(self) -> None:
        try:
            while self._calls:
                await asyncio.sleep(self._linger)  # (0: the rest of this loop turn)
                while self._calls:
                    await self._send(self._take())
        finally:
            self._loop_task = None

    def _take(self) -> list[Call]:
        """The next message's calls, within the item and byte bounds."""
        calls = [self._calls.popleft()]
        size = len(calls[0].body) + 64
        while self._calls and len(calls) < self._max_items:
            nxt = self._calls[0]
            size += len(nxt.body) + 64  # room for the target field
            if size > self._max_bytes:
                break
            calls.append(self._calls.popleft())
        return calls

    async def _send(self, calls: list[Call]) -> None:
        message_id = uuid.uuid4().hex
        if len(calls) == 1 and calls[0].kind != "users":  # (no routing key of its own)
            call = calls[0]
            key = call.key or message_id
            routing_key, body, keys = f"{call.kind}.{call.target}", call.body, [key]
        else:
            items, keys = [], []
            for i, call in enumerate(calls):
                item = dict(call.doc)
                item[call.kind] = call.target if call.kind != "users" else call.doc["users"]
                items.append(item)
                keys.append(call.key or f"{message_id}:{i}")
            routing_key, body = batch.ROUTING_KEY, dump_body(items)
        try:
            await self.publish(routing_key, body, message_id)
        except Exception as exc:  # PublishError, ConfigError: the callers learn of it
            for call in calls:
                if not call.done.done():
                    call.done.set_exception(exc)
            return
        for call, key in zip(calls, keys, strict=True):
            if not call.done.done():
                call.done.set_result(key)

    async def publish(self, routing_key: str, body: bytes, message_id: str) -> None:
        """One persistent message to ``sse.events``, confirmed; retried on a fresh
        connection with the same ``message_id``. Raises PublishError (an
        unroutable message, after the retries, says why in words)."""
        last: BaseException | None = None
        backoff = Backoff(0.1, 2.0)
        for _ in range(self._attempts):
            try:
                exchange = await self._ready()
                message = aio_pika.Message(
                    body,
                    content_type="application/json",
                    message_id=message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await exchange.publish(message, routing_key, mandatory=True, timeout=self._timeout)
                return
            except BROKER_ERRORS as exc:
                # not confirmed, or returned: retried on a fresh connection, same message id
                last = exc
                await self._reset()
                await asyncio.sleep(backoff.next())
        assert last is not None
        raise PublishError(
            f"{routing_key}: not confirmed after {self._attempts} attempts: {self._why(last)}"
        ) from last

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, aiormq.exceptions.PublishError):  # a basic.return
            return UNROUTABLE
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
            return NO_EXCHANGE
        return describe(exc, self._url)

    async def _ready(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                self._connection = await connect(self._url, timeout=self._timeout)
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                # passive: needs no permission, and says at once that no dispatcher
                # declared the topology (NOT_FOUND) instead of a publish failing later
                self._exchange = await self._channel.get_exchange(topology.EVENTS.name, ensure=True)
            return self._exchange

    async def _reset(self) -> None:
        async with self._lock:
            connection = self._connection
            self._connection, self._channel, self._exchange = None, None, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()

    async def close(self) -> None:
        """Send what is queued, then close the connection."""
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._reset()
