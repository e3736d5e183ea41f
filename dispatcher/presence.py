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
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection
from ssehub import untrusted
from ssehub.dispatcher.scope import Scope
from ssehub.errors import InvalidMessage
from ssehub.schema import EventMessage, check_id
from ssehub.storage.db import chunks, insert_ignore, upsert
from ssehub.storage.models import NodeRow, OnlineRow, PresenceRow
from ssehub.storage.peers import co_members

PRESENCE: Any = PresenceRow.__table__  # type: ignore[attr-defined]
NODE: Any = NodeRow.__table__  # type: ignore[attr-defined]
ONLINE: Any = OnlineRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class PresenceOp:
    node: str
    user: str | None  # None: a heartbeat of the node
    online: bool


def parse_presence(body: bytes) -> PresenceOp:
    """An edge's signal (ssehub.topology.presence_message): ``{"node"}``, a
    heartbeat, or ``{"node", "user", "online"}``. Checked as strictly as a
    publisher's message; raises InvalidMessage."""
    doc, _ = untrusted.parse(body, "presence", exact=False)
    if not isinstance(doc, dict):
        raise InvalidMessage("presence: must be a JSON object")
    if set(doc) not in (HEARTBEAT_FIELDS, USER_FIELDS):
        raise InvalidMessage(
            "presence: must be an object of node (a heartbeat) or node, user, online"
        )
    node = check_id(doc["node"], "presence: node")
    if "user" not in doc:
        return PresenceOp(node, None, True)
    online = doc["online"]
    if not isinstance(online, bool):
        raise InvalidMessage("presence: online: must be true or false")
    return PresenceOp(node, check_id(doc["user"], "presence: user"), online)


HEARTBEAT_FIELDS = frozenset({"node"})
USER_FIELDS = frozenset({"node", "user", "online"})


def apply_presence(
    db: Connection, ops: list[PresenceOp], now: float, cap: int, scope: Scope
) -> list[EventMessage]:
    """Record a batch of ops (the last op per user and node wins) in a few bulk
    statements; return ``user:online`` for users who were not online before,
    as ephemeral ``users`` events to their peers. A comeback within the grace
    period, or a flap inside one batch, says nothing. ``scope``: the
    partition's (its users' rows, its record of the edges alive)."""
    nodes = sorted({op.node for op in ops})
    db.execute(
        upsert(db, NODE, "node_id", ["last_seen"]),
        [{"node_id": scope.node(n), "last_seen": now} for n in nodes],
    )
    final = {(op.user, op.node): op.online for op in ops if op.user is not None}
    if not final:
        return []
    up = [{"user_id": u, "node_id": n} for (u, n), on in final.items() if on]
    down = [{"u": u, "n": n} for (u, n), on in final.items() if not on]
    if up:
        db.execute(insert_ignore(db, PRESENCE), up)
    if down:
        db.execute(
            delete(PRESENCE).where(
                PRESENCE.c.user_id == bindparam("u"), PRESENCE.c.node_id == bindparam("n")
            ),
            down,
        )
    came = _settle(db, sorted({u for u, _ in final}), now)
    return _announce(db, came, "user:online", cap)


def sweep_presence(
    db: Connection, now: float, grace: float, node_ttl: float, cap: int, scope: Scope
) -> list[EventMessage]:
    """Expire silent nodes; announce ``user:offline`` for users gone past the
    grace. Of ``scope``'s partition only: its record of the nodes, its users."""
    suffix = scope.nodes_suffix()
    rows = db.execute(select(NODE.c.node_id).where(NODE.c.last_seen < now - node_ttl))
    dead = [n for (n,) in rows if n.endswith(suffix)]  # (suffix "": every node)
    for scoped in dead:
        node = scoped.removesuffix(suffix) if suffix else scoped
        rows = db.execute(select(PRESENCE.c.user_id).where(PRESENCE.c.node_id == node))
        users = sorted(u for (u,) in rows if scope.owns(u))
        for part in chunks(users):
            db.execute(
                delete(PRESENCE).where(PRESENCE.c.node_id == node, PRESENCE.c.user_id.in_(part))
            )
        db.execute(delete(NODE).where(NODE.c.node_id == scoped))
        _settle(db, users, now)
    gone = [
        u
        for (u,) in db.execute(
            select(ONLINE.c.user_id).where(
                ONLINE.c.offline_since.is_not(None), ONLINE.c.offline_since <= now - grace
            )
        )
        if scope.owns(u)
    ]
    for part in chunks(gone):
        db.execute(delete(ONLINE).where(ONLINE.c.user_id.in_(part)))
    return _announce(db, gone, "user:offline", cap)


def _settle(db: Connection, users: list[str], now: float) -> list[str]:
    """After the presence rows of ``users`` changed: return who came online, end
    the grace of who is back, and start it for who has no node left."""
    present: set[str] = set()
    announced: dict[str, float | None] = {}
    for part in chunks(users):
        rows = db.execute(select(PRESENCE.c.user_id).where(PRESENCE.c.user_id.in_(part)).distinct())
        present.update(u for (u,) in rows)
        rows = db.execute(
            select(ONLINE.c.user_id, ONLINE.c.offline_since).where(ONLINE.c.user_id.in_(part))
        )
        announced.update((u, since) for u, since in rows)
    came = [u for u in users if u in present and u not in announced]
    back = [u for u in users if u in present and announced.get(u) is not None]
    leaving = [u for u in users if u not in present and u in announced and announced[u] is None]
    if came:
        db.execute(ONLINE.insert(), [{"user_id": u, "offline_since": None} for u in came])
    for part in chunks(back):
        db.execute(update(ONLINE).where(ONLINE.c.user_id.in_(part)).values(offline_since=None))
    for part in chunks(leaving):
        db.execute(update(ONLINE).where(ONLINE.c.user_id.in_(part)).values(offline_since=now))
    return came


def _announce(db: Connection, users: list[str], event: str, cap: int) -> list[EventMessage]:
    """One ephemeral ``users`` event per user announced, to its peers."""
    peers: dict[str, list[str]] = {}
    for user, peer in co_members(db, users, cap):
        peers.setdefault(user, []).append(peer)
    return [
        EventMessage(
            "users",
            "",
            event,
            orjson.dumps({"userId": user}),
            None,
            frozenset(),
            True,
            targets=tuple(sorted(peers[user])),
        )
        for user in users
        if user in peers
    ]
