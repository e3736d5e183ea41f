"""The Python publisher client: what a backend imports to push events.

    publisher = Publisher("amqp://guest:guest@localhost:5672/")

    @app.post("/messages")
    async def create_message(...):
        ...
        await publisher.broadcast_to_conversation(conv_id, "message:new", {...}, exclude=[sender])

The publisher connects on first use and reconnects after a loss. Every message is
persistent, carries an idempotency key (its ``message_id``) and is confirmed
by the broker before the awaitable returns; a failed attempt is retried with
the same key, so a retry never produces a second event. Where the deployment
runs with ``SSEHUB_QUEUE_TYPE=quorum``, pass ``queue_type="quorum"`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from ssehub import topology
from ssehub.amqp import describe
from ssehub.backoff import Backoff
from ssehub.config import QueueType
from ssehub.errors import ConfigError, PublishError
from ssehub.schema import MemberOp, check_id, event_body, membership_body


class Publisher:
    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        timeout: float = 10.0,
        queue_type: QueueType = "classic",
    ) -> None:
        self._url = url
        self._queue_type = queue_type  # the deployment's SSEHUB_QUEUE_TYPE
        self._attempts = attempts
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    # -- the API -------------------------------------------------------------
    async def send_event_to_user(
        self,
        user_id: str,
        event: str,
        data: Any,
        *,
        key: str | None = None,
        ephemeral: bool = False,
    ) -> str:
        """One event to every connection of one user. Returns the idempotency key."""
        body = event_body(event, data, key=key, ephemeral=ephemeral)
        return await self.publish(f"user.{check_id(user_id, 'user_id')}", body, key)

    async def broadcast_to_conversation(
        self,
        conversation_id: str,
        event: str,
        data: Any,
        *,
        exclude: Iterable[str] = (),
        ephemeral: bool = False,
        key: str | None = None,
    ) -> str:
        """One event to every member of a conversation but ``exclude``."""
        body = event_body(event, data, key=key, exclude=exclude, ephemeral=ephemeral)
        rk = f"conversation.{check_id(conversation_id, 'conversation_id')}"
        return await self.publish(rk, body, key)

    async def set_members(self, conversation_id: str, users: Iterable[str]) -> str:
        return await self._members(conversation_id, "set", users)

    async def add_members(self, conversation_id: str, users: Iterable[str]) -> str:
        return await self._members(conversation_id, "add", users)

    async def remove_members(self, conversation_id: str, users: Iterable[str]) -> str:
        return await self._members(conversation_id, "remove", users)

    async def _members(self, conversation_id: str, op: MemberOp, users: Iterable[str]) -> str:
        rk = f"members.{check_id(conversation_id, 'conversation_id')}"
        return await self.publish(rk, membership_body(op, users), None)

    # -- plumbing ------------------------------------------------------------
    async def publish(self, routing_key: str, body: bytes, key: str | None = None) -> str:
        """Publish a raw contract message to ``sse.events`` and await its confirm."""
        key = key or uuid.uuid4().hex
        last: Exception | None = None
        backoff = Backoff(0.1, 2.0)
        for _ in range(self._attempts):
            try:
                exchange = await self._ready()
                message = aio_pika.Message(
                    body,
                    content_type="application/json",
                    message_id=key,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await exchange.publish(message, routing_key, timeout=self._timeout)
                return key
            except ConfigError:  # e.g. the wrong queue type: no retry can help
                await self._reset()
                raise
            except Exception as exc:  # retry on a fresh connection, same key
                last = exc
                await self._reset()
                await asyncio.sleep(backoff.next())
        assert last is not None
        raise PublishError(
            f"{routing_key}: not confirmed after {self._attempts} attempts: "
            f"{describe(last, self._url)}"
        )

    async def _ready(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                # Declare the dispatcher's queue too: a message published before any
                # dispatcher ever ran must wait in it, not vanish unrouted.
                exchanges = await topology.declare_core(self._channel, self._queue_type)
                self._exchange = exchanges[topology.EVENTS.name]
            return self._exchange

    async def _reset(self) -> None:
        async with self._lock:
            connection, self._connection, self._channel, self._exchange = (
                self._connection,
                None,
                None,
                None,
            )
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()

    async def close(self) -> None:
        await self._reset()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
