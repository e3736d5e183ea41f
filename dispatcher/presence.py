"""Presence: ``user:online`` when a user's first stream anywhere opens,
``user:offline`` when the last one has stayed closed for the grace period,
both ephemeral, to everyone who shares a conversation with the user.

Edges report per node (online/offline per user, and node heartbeats) into the
dispatch queue; the dispatcher keeps who is where in the store. A node that
stops sending heartbeats (killed) is expired and its users count as gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatcher.sequence import Delivery
from shared.db import insert_ignore, upsert
from shared.errors import InvalidMessage
from shared.frames import event_frame
from shared.models import NodeRow, OnlineRow, PresenceRow
from shared.schema import check_id

PRESENCE: Any = PresenceRow.__table__  # type: ignore[attr-defined]
NODE: Any = NodeRow.__table__  # type: ignore[attr-defined]
ONLINE: Any = OnlineRow.__table__  # type: ignore[attr-defined]

# Peers in conversations of at most :cap members: presence in a 1,000-member room
# would cost a million frames when everyone connects, and says little there.
CO_MEMBERS = text(
    "SELECT DISTINCT m2.user_id FROM ssehub_member m1 JOIN ssehub_member m2"
    " ON m2.conversation_id = m1.conversation_id"
    " WHERE m1.user_id = :user AND m2.user_id <> :user"
    " AND (SELECT COUNT(*) FROM ssehub_member m3"
    "      WHERE m3.conversation_id = m1.conversation_id) <= :cap"
)


@dataclass(frozen=True, slots=True)
class PresenceOp:
    node: str
    user: str | None  # None: a heartbeat of the node
    online: bool


def parse_presence(body: bytes) -> PresenceOp:
    try:
        doc = orjson.loads(body)
        node = doc["node"]
        if not isinstance(node, str) or not node:
            raise ValueError("node")
        if "user" not in doc:
            return PresenceOp(node, None, True)
        return PresenceOp(node, check_id(doc["user"], "user"), bool(doc["online"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(f"presence: malformed ({exc})") from None


async def apply_presence(
    conn: AsyncConnection, ops: list[PresenceOp], now: float, cap: int
) -> list[Delivery]:
    """Record the ops in order; return ``user:online`` deliveries for users who
    were not online before (a comeback within the grace period says nothing)."""
    came: list[str] = []
    for op in ops:
        await conn.execute(
            upsert(conn, NODE, "node_id", ["last_seen"]), {"node_id": op.node, "last_seen": now}
        )
        if op.user is None:
            continue
        if op.online:
            await conn.execute(
                insert_ignore(conn, PRESENCE), {"user_id": op.user, "node_id": op.node}
            )
            row = (
                await conn.execute(
                    select(ONLINE.c.offline_since).where(ONLINE.c.user_id == op.user)
                )
            ).first()
            if row is None:
                await conn.execute(ONLINE.insert(), {"user_id": op.user, "offline_since": None})
                came.append(op.user)
            elif row[0] is not None:
                await conn.execute(
                    update(ONLINE).where(ONLINE.c.user_id == op.user).values(offline_since=None)
                )
        else:
            await conn.execute(
                delete(PRESENCE).where(PRESENCE.c.user_id == op.user, PRESENCE.c.node_id == op.node)
            )
            await _maybe_leaving(conn, op.user, now)
    return await _announce(conn, came, "user:online", cap)


async def sweep_presence(
    conn: AsyncConnection, now: float, grace: float, node_ttl: float, cap: int
) -> list[Delivery]:
    """Expire silent nodes; announce ``user:offline`` for users gone past the grace."""
    dead = [
        n
        for (n,) in await conn.execute(
            select(NODE.c.node_id).where(NODE.c.last_seen < now - node_ttl)
        )
    ]
    for node in dead:
        users = [
            u
            for (u,) in await conn.execute(
                select(PRESENCE.c.user_id).where(PRESENCE.c.node_id == node)
            )
        ]
        await conn.execute(delete(PRESENCE).where(PRESENCE.c.node_id == node))
        await conn.execute(delete(NODE).where(NODE.c.node_id == node))
        for user in users:
            await _maybe_leaving(conn, user, now)
    gone = [
        u
        for (u,) in await conn.execute(
            select(ONLINE.c.user_id).where(
                ONLINE.c.offline_since.is_not(None), ONLINE.c.offline_since <= now - grace
            )
        )
    ]
    if gone:
        await conn.execute(delete(ONLINE).where(ONLINE.c.user_id.in_(gone)))
    return await _announce(conn, gone, "user:offline", cap)


async def _maybe_leaving(conn: AsyncConnection, user: str, now: float) -> None:
    left = (
        await conn.execute(
            select(func.count()).select_from(PRESENCE).where(PRESENCE.c.user_id == user)
        )
    ).scalar_one()
    if left == 0:
        await conn.execute(
            update(ONLINE)
            .where(ONLINE.c.user_id == user, ONLINE.c.offline_since.is_(None))
            .values(offline_since=now)
        )


async def _announce(
    conn: AsyncConnection, users: list[str], event: str, cap: int
) -> list[Delivery]:
    out: list[Delivery] = []
    for user in users:
        frame = event_frame(None, event, orjson.dumps({"userId": user}))
        peers = await conn.execute(CO_MEMBERS, {"user": user, "cap": cap})
        out.extend(Delivery(peer, None, frame) for (peer,) in peers)
    return out
