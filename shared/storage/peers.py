"""Who shares a conversation with whom: the one query presence asks, from the
edge (``presence:snapshot``: peers online now) and from the dispatcher
(``user:online`` / ``user:offline``: every peer).

Peers count only in conversations of at most ``cap`` members: presence in a
1,000-member room would cost a million deliveries when everyone connects, and
says little there. The users are bound as ONE parameter, like
``ssehub.storage.db.select_in`` (an expanded ``IN`` planned badly on
PostgreSQL).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy.engine import Connection


def co_members(
    db: Connection, users: Iterable[str], cap: int, *, online: bool = False
) -> list[tuple[str, str]]:
    """(user, peer) pairs, each once; ``online``: only peers announced online
    and not gone past the grace (their ``user:offline`` not sent yet)."""
    values = list(dict.fromkeys(users))
    if not values:
        return []
    pg = db.dialect.name == "postgresql"
    sql = _sql(pg, online)
    if pg:
        return [(u, p) for u, p in db.exec_driver_sql(sql, (values, cap)).fetchall()]
    cursor: Any = db.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(sql, (orjson.dumps(values).decode(), cap))
    return [(u, p) for u, p in cursor.fetchall()]


@functools.lru_cache(maxsize=4)
def _sql(pg: bool, online: bool) -> str:
    users, cap = ("$1::text[]", "$2") if pg else ("?", "?")
    source = (
        f"unnest({users}) AS v(k) JOIN ssehub_member m1 ON m1.user_id = v.k"
        if pg
        else "ssehub_member m1"
    )
    where = "" if pg else f"m1.user_id IN (SELECT value FROM json_each({users})) AND "
    joined = " JOIN ssehub_online o ON o.user_id = m2.user_id" if online else ""
    return (
        f"SELECT DISTINCT m1.user_id, m2.user_id FROM {source}"
        " JOIN ssehub_member m2 ON m2.conversation_id = m1.conversation_id"
        f"{joined} WHERE {where}m2.user_id <> m1.user_id"
        " AND (SELECT COUNT(*) FROM ssehub_member m3"
        f" WHERE m3.conversation_id = m1.conversation_id) <= {cap}"
    )
