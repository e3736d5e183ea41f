"""The Python publisher client: what a backend imports to push events.

    from ssehub import Publisher

    publisher = Publisher("amqp://guest:guest@localhost:5672/")

    @app.post("/messages")
    async def create_message(...):
        ...
        await publisher.broadcast_to_conversation(conv_id, "message:new", {...}, exclude=[sender])

The publisher connects on first use and reconnects after a loss. Every message
is persistent, carries an idempotency key and is confirmed by the broker
before the call returns; a failed attempt is retried with the same key, so a
retry never produces a second event.

It declares nothing: a broker user that may only write to ``sse.events`` is
enough (``ssehub roles``, the publisher role). The dispatcher declares the
topology; until one has, a call fails (PublishError: no dispatcher has
declared this deployment's topology yet) rather than publish into nothing.
Once a dispatcher has, messages wait in its queue while no dispatcher runs.

Concurrent calls (one event-loop turn, or ``linger`` seconds) are sent
together as one ``batch`` message (ssehub.sender), which is what lets the
broker carry many events cheaply.
Invalid input raises :class:`ssehub.InvalidMessage` in the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from ssehub.config import QueueType
from ssehub.schema import (
    ControlOp,
    MemberOp,
    check_id,
    check_users,
    control_doc,
    event_doc,
)
from ssehub.sender import Sender


class Publisher:
    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        timeout: float = 10.0,
        linger: float = 0.0,
        max_batch_items: int = 1000,
        max_batch_bytes: int = 1 << 20,
        queue_type: QueueType = "classic",
    ) -> None:
        """``linger``: seconds to wait for more calls before sending (a few ms at
        most; 0 sends at the end of the current event-loop turn). ``queue_type``:
        not used (publishers declare no queue any more); kept so that calls that
        pass it still work."""
        if not 0 <= linger <= 0.05:
            raise ValueError("linger: 0 to 0.05 seconds")
        self._sender = Sender(
            url,
            attempts=attempts,
            timeout=timeout,
            linger=linger,
            max_items=max_batch_items,
            max_bytes=max_batch_bytes,
        )

    # -- events ----------------------------------------------------------------
    async def send_event_to_user(
        self,
        user_id: str,
        event: str,
        data: Any,
        *,
        key: str | None = None,
        ephemeral: bool = False,
        receipt: bool = False,
    ) -> str:
        """One event to every stream of one user. Returns the idempotency key."""
        doc = event_doc(event, data, key=key, ephemeral=ephemeral, receipt=receipt)
        return await self._sender.submit("user", check_id(user_id, "user_id"), doc)

    async def send_event_to_users(
        self,
        user_ids: Iterable[str],
        event: str,
        data: Any,
        *,
        key: str | None = None,
        ephemeral: bool = False,
        receipt: bool = False,
    ) -> str:
        """The same event to each listed user (at most 1,000), as one batch item."""
        doc = event_doc(event, data, key=key, ephemeral=ephemeral, receipt=receipt)
        doc["users"] = list(check_users(list(user_ids), "user_ids"))
        return await self._sender.submit("users", None, doc)

    async def broadcast_to_conversation(
        self,
        conversation_id: str,
        event: str,
        data: Any,
        *,
        exclude: Iterable[str] = (),
        ephemeral: bool = False,
        key: str | None = None,
        receipt: bool = False,
    ) -> str:
        """One event to every member of a conversation but ``exclude``."""
        doc = event_doc(event, data, key=key, exclude=exclude, ephemeral=ephemeral, receipt=receipt)
        target = check_id(conversation_id, "conversation_id")
        return await self._sender.submit("conversation", target, doc)

    # -- membership --------------------------------------------------------------
    async def set_members(self, conversation_id: str, users: Iterable[str]) -> str:
        return await self._members(conversation_id, "set", users)

    async def add_members(self, conversation_id: str, users: Iterable[str]) -> str:
        return await self._members(conversation_id, "add", users)

    async def remove_members(self, conversation_id: str, users: Iterable[str]) -> str:
        return await self._members(conversation_id, "remove", users)

    async def _members(self, conversation_id: str, op: MemberOp, users: Iterable[str]) -> str:
        doc = {"op": op, "users": list(check_users(list(users), "users"))}
        return await self._sender.submit(
            "members", check_id(conversation_id, "conversation_id"), doc
        )

    # -- control -----------------------------------------------------------------
    async def disconnect_user(self, user_id: str, reason: str = "disconnect") -> str:
        """Close every open stream of the user, on every edge (``disconnected``)."""
        return await self._control(user_id, "disconnect", control_doc("disconnect", reason=reason))

    async def revoke_tokens(self, user_id: str, before: float | None = None) -> str:
        """Refuse the user's tokens issued before ``before`` (default: now) and
        close the streams opened with them. Logout and bans use this."""
        return await self._control(user_id, "revoke", control_doc("revoke", before=before))

    async def _control(self, user_id: str, op: ControlOp, doc: dict[str, Any]) -> str:
        return await self._sender.submit("control", check_id(user_id, "user_id"), doc)

    # -- plumbing ----------------------------------------------------------------
    async def publish(self, routing_key: str, body: bytes, key: str | None = None) -> str:
        """A raw contract message to ``sse.events``, on its own, confirmed."""
        key = key or uuid.uuid4().hex
        await self._sender.publish(routing_key, body, key)
        return key

    async def close(self) -> None:
        await self._sender.close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
