"""Which streams are open on this node, by user."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from ssehub.edge.stream import CloseReason, Stream, goodbye


class Registry:
    def __init__(self) -> None:
        self._by_user: dict[str, set[Stream]] = {}
        self._count = 0

    def add(self, stream: Stream) -> bool:
        """Register; True when this is the user's first stream on the node."""
        streams = self._by_user.get(stream.user_id)
        first = streams is None
        if streams is None:
            streams = self._by_user[stream.user_id] = set()
        streams.add(stream)
        self._count += 1
        return first

    def remove(self, stream: Stream) -> bool:
        """Unregister; True when that was the user's last stream on the node."""
        streams = self._by_user.get(stream.user_id)
        if streams is None or stream not in streams:
            return False
        streams.discard(stream)
        self._count -= 1
        if streams:
            return False
        del self._by_user[stream.user_id]
        return True

    def deliver(self, user_id: str, seq: int | None, sse: bytes) -> None:
        for stream in self._by_user.get(user_id, ()):
            stream.offer(seq, sse)

    def deliver_receipted(self, user_id: str, seq: int, sse: bytes, key: str | None) -> None:
        """An event that asked for a receipt: each stream reports it once written."""
        for stream in self._by_user.get(user_id, ()):
            stream.want_receipt(seq, key, sse)
            stream.offer(seq, sse)

    def control(self, user_id: str, op: dict[str, Any]) -> int:
        """A control op for the user's streams here; returns how many it closed.
        ``disconnect``: all of them; ``revoke``: those opened with a token issued
        before ``before`` (or with no ``iat``)."""
        closed = 0
        if op.get("op") == "disconnect":
            reason = str(op.get("reason") or "disconnect")
            for stream in list(self._by_user.get(user_id, ())):
                stream.end(goodbye(reason), CloseReason.DISCONNECTED)
                closed += 1
        elif op.get("op") == "revoke":
            before = float(op.get("before", 0))
            for stream in list(self._by_user.get(user_id, ())):
                if revoked(stream.issued_at, before):
                    stream.end(goodbye("token_revoked"), CloseReason.TOKEN_REVOKED)
                    closed += 1
        return closed

    def streams_of(self, user_id: str) -> Collection[Stream]:
        return self._by_user.get(user_id, ())

    def has_user(self, user_id: str) -> bool:
        return user_id in self._by_user

    def users(self) -> list[str]:
        return list(self._by_user)

    def streams(self) -> Iterator[Stream]:
        for streams in list(self._by_user.values()):
            yield from list(streams)

    def __len__(self) -> int:
        return self._count


def revoked(issued_at: float | None, before: float | None) -> bool:
    """Whether a revocation cut-off ``before`` covers a token issued at ``issued_at``."""
    return before is not None and (issued_at is None or issued_at < before)
