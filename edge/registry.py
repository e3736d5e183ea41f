"""Which streams are open on this node, by user."""

from __future__ import annotations

from collections.abc import Iterator

from edge.connection import Connection


class Registry:
    def __init__(self) -> None:
        self._by_user: dict[str, set[Connection]] = {}
        self._count = 0

    def add(self, conn: Connection) -> bool:
        """Register; True when this is the user's first stream on the node."""
        conns = self._by_user.get(conn.user_id)
        first = conns is None
        if conns is None:
            conns = self._by_user[conn.user_id] = set()
        conns.add(conn)
        self._count += 1
        return first

    def remove(self, conn: Connection) -> bool:
        """Unregister; True when that was the user's last stream on the node."""
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        self._count -= 1
        if conns:
            return False
        del self._by_user[conn.user_id]
        return True

    def deliver(self, user_id: str, seq: int | None, frame: bytes) -> None:
        for conn in self._by_user.get(user_id, ()):
            conn.offer(seq, frame)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._by_user

    def users(self) -> list[str]:
        return list(self._by_user)

    def connections(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from list(conns)

    def __len__(self) -> int:
        return self._count
