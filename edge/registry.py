"""Which streams are open on this node, by user."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from ssehub.edge.stream import Stream


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
