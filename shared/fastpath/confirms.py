"""A batch of publishes, confirmed by delivery tag: one future per batch.

aiormq keeps a future per published message and looks every confirm up in a
dict. Here the publisher writes a whole batch at once (``Outbox``) and counts
confirms by tag, with ``multiple`` acks, single acks out of order, and nacks.

aiormq internals (pinned, see ``ssehub.fastpath``): ``Channel._on_confirm_frame``
(replaced on this channel only: the publisher owns its channel's confirms, so
nothing else may publish on it), ``Channel.delivery_tag``,
``Channel.publisher_confirms``, ``Channel.is_closed``, ``Channel.closing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import aiormq
from pamqp import commands as spec
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.marshal import Publish
from ssehub.fastpath.outbox import Outbox


class ConfirmCounter:
    """Which delivery tags are confirmed: pure bookkeeping, fed the broker's
    Basic.Ack/Nack frames. ``confirmed`` is the highest tag up to which every
    tag is acked."""

    __slots__ = ("_early", "confirmed")

    def __init__(self, start: int = 0) -> None:
        self.confirmed = start
        self._early: set[int] = set()  # single acks above ``confirmed``

    def ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            if tag > self.confirmed:
                self.confirmed = tag
                self._early = {t for t in self._early if t > tag}
        else:
            self._early.add(tag)
        while self.confirmed + 1 in self._early:
            self.confirmed += 1
            self._early.discard(self.confirmed)


class BatchPublisher:
    """Publishes on one confirm channel; the future of ``send`` resolves once
    the broker has confirmed every message of the batch, and fails with
    BrokerUnavailable if it refused one or the channel closed first."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._channel: Any = cast(Any, channel)  # its internals are not in the ABC
        if not self._channel.publisher_confirms:
            raise ValueError("BatchPublisher needs a channel with publisher confirms")
        self._sent: int = self._channel.delivery_tag  # last delivery tag written
        self._tags = ConfirmCounter(self._sent)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._outbox = Outbox(channel)
        # Confirms are ours now: aiormq would look each one up in a dict of
        # per-message futures it no longer has.
        self._channel._on_confirm_frame = self._on_confirm
        channel.closing.add_done_callback(self._on_close)

    async def publish(self, messages: Sequence[Publish]) -> None:
        await self.send(messages)

    def send(self, messages: Sequence[Publish]) -> asyncio.Future[None]:
        """Write the batch now; the future resolves once all of it is confirmed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel = self._channel
        if channel.is_closed:
            done.set_exception(BrokerUnavailable("publish channel closed"))
            return done
        if not messages:
            done.set_result(None)
            return done
        self._sent += len(messages)
        channel.delivery_tag = self._sent
        self._waiters.append((self._sent, done))
        self._outbox.publish(messages)
        return done

    async def _on_confirm(self, frame: spec.Basic.Ack | spec.Basic.Nack) -> None:
        tag = frame.delivery_tag or 0
        if isinstance(frame, spec.Basic.Nack):
            self._fail(BrokerUnavailable(f"the broker refused publish {tag}"))
            return
        self._tags.ack(tag, bool(frame.multiple))
        confirmed = self._tags.confirmed
        while self._waiters and self._waiters[0][0] <= confirmed:
            _, done = self._waiters.pop(0)
            if not done.done():
                done.set_result(None)

    def _on_close(self, _: object) -> None:
        self._fail(BrokerUnavailable("publish channel closed"))

    def _fail(self, exc: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for _, done in waiters:
            if not done.done():
                done.set_exception(exc)
