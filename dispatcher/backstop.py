"""The redelivery backstop: a message that keeps coming back is set aside.

Every message is isolated (dispatcher/intake.py, dispatcher/worker.py): it
applies or is dead-lettered, and a bug it meets dead-letters it alone. This
is for what still slips through: a fault that takes the process down with
it, or a batch that fails as a whole. Such a batch is not acked, so it comes
back, to this process or a standby, and would fail again for ever. Here each
message that comes back is counted, and one delivered ``SSEHUB_MAX_DELIVERIES``
times without being handled is dead-lettered (``redelivered: ...``) before
anything else looks at it.

Quorum queues count for us (the ``x-delivery-count`` header). Classic queues
only flag a redelivery, so the count is kept in the store, keyed by the
message's fingerprint, and committed before the batch is handled: it survives
the crash it guards against. A first delivery costs nothing; a redelivered
batch (after a crash, a failover or a partition move) one short transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiormq.abc import DeliveredMessage
from ssehub.dispatcher.intake import DeadLetter
from ssehub.errors import StoreUnavailable

log = logging.getLogger("ssehub.dispatcher")

DELIVERY_COUNT = "x-delivery-count"  # quorum queues: earlier deliveries of this message
# fingerprints -> each one's redeliveries so far (DispatchStore.count_redeliveries)
Count = Callable[[Sequence[str]], Awaitable[dict[str, int]]]


def fingerprint(message: DeliveredMessage) -> str:
    """The same message, however often it comes back (and whichever process
    gets it): its exchange, routing key, message id and body."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        getattr(message.delivery, "exchange", "") or "",
        message.routing_key or "",
        message.header.properties.message_id or "",
    ):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    digest.update(message.body)
    return digest.hexdigest()


def broker_count(message: DeliveredMessage) -> int | None:
    """Earlier deliveries, as a quorum queue counts them (None: not counted)."""
    headers = message.header.properties.headers
    value = headers.get(DELIVERY_COUNT) if headers else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def redelivered(message: DeliveredMessage) -> bool:
    return bool(getattr(message.delivery, "redelivered", False))


class Backstop:
    def __init__(self, count: Count, limit: int, quorum: bool) -> None:
        """``limit``: deliveries a message may have (SSEHUB_MAX_DELIVERIES);
        ``quorum``: the queues count deliveries themselves."""
        self._count = count
        self._limit = limit
        self._quorum = quorum

    async def screen(
        self, batch: list[DeliveredMessage]
    ) -> tuple[list[DeliveredMessage], list[DeadLetter]]:
        """The batch without the messages delivered too often, and those as dead letters."""
        suspects = [m for m in batch if redelivered(m)]
        if not suspects:
            return batch, []
        earlier = await self._earlier(suspects)
        over = {id(m) for m in suspects if earlier.get(id(m), 0) + 1 >= self._limit}
        if not over:
            return batch, []
        dead = [
            DeadLetter(m, self._reason(earlier[id(m)] + 1), m.body) for m in batch if id(m) in over
        ]
        for letter in dead:
            log.error(
                "message %r delivered %d times without being handled: dead-lettered",
                letter.message.header.properties.message_id,
                earlier[id(letter.message)] + 1,
                extra={"reason": letter.reason},
            )
        return [m for m in batch if id(m) not in over], dead

    async def _earlier(self, suspects: list[DeliveredMessage]) -> dict[int, int]:
        """id(message) -> its earlier deliveries."""
        if self._quorum:
            return {id(m): n for m in suspects if (n := broker_count(m)) is not None}
        prints = {id(m): fingerprint(m) for m in suspects}
        try:
            counts = await self._count(list(prints.values()))
        except StoreUnavailable as exc:  # no count this time: the batch goes on as usual
            log.warning("redelivery count skipped: %s", exc)
            return {}
        return {i: counts.get(p, 0) for i, p in prints.items()}

    def _reason(self, deliveries: int) -> str:
        return (
            f"redelivered: delivered {deliveries} times without being handled "
            f"(SSEHUB_MAX_DELIVERIES={self._limit})"
        )
