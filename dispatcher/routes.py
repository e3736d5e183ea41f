"""Per-node delivery (``SSEHUB_DELIVERY=nodes``): which edge holds which user,
and a batch's deliveries as one message per edge.

Edges *join* a user when the user's first stream opens there and *leave*
when the last one closes, with route messages into the dispatch queue. The
dispatcher applies them between batches, in order, and answers each with
``joined`` on the node's own key, published after every delivery of the
batch it was applied in. So every batch published after the answer is routed
with the join, and every batch published before it was committed before it:
an edge that reads the store after the answer misses nothing (the seam proof
is in docs/architecture.md). Pure: no I/O here.

The table is memory only. A dispatcher that takes over starts empty and
asks every edge to join again (``resync``); an edge then re-reads every
stream from the store once its joins are answered. A node that stops sending
heartbeats is dropped and told to resync, in case it is only slow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiormq
import orjson
from ssehub import pack, topology, untrusted
from ssehub.dispatcher.sequence import Delivery
from ssehub.errors import InvalidMessage
from ssehub.fastpath.marshal import Publish
from ssehub.schema import check_id, check_users


@dataclass(frozen=True, slots=True)
class RouteOp:
    node: str
    ref: int
    ops: tuple[tuple[str, bool], ...]  # (user, join), in the edge's order


ROUTE_FIELDS = frozenset({"node", "ref", "ops"})
CAPS_FIELDS = frozenset({"node", "user", "hello", "streams"})
MAX_REF = 2**63 - 1  # an edge's round number: a counter from 1


def parse_route(body: bytes) -> RouteOp:
    """An edge's round (ssehub.topology.route_message): ``{"node", "ref", "ops":
    [[user, 1 (join) or 0 (leave)], ...]}``. Checked as strictly as a
    publisher's message; raises InvalidMessage."""
    doc = _object(body, "route", ROUTE_FIELDS)
    node = check_id(doc["node"], "route: node")
    ref = doc["ref"]
    if type(ref) is not int or not 0 <= ref <= MAX_REF:
        raise InvalidMessage(f"route: ref: must be an integer from 0 to {MAX_REF}")
    if not isinstance(doc["ops"], list):
        raise InvalidMessage("route: ops: must be an array of [user, 1 or 0]")
    ops: list[tuple[str, bool]] = []
    for i, op in enumerate(doc["ops"]):
        join = op[1] if isinstance(op, list) and len(op) == 2 else None
        if type(join) not in (int, bool) or join not in (0, 1):
            raise InvalidMessage(f"route: ops[{i}]: must be [user, 1 (join) or 0 (leave)]")
        ops.append((check_id(op[0], f"route: ops[{i}] user"), bool(join)))
    return RouteOp(node, ref, tuple(ops))


def parse_caps_notice(body: bytes) -> str:
    """An edge's caps notice (edge/caps.py), to forward as it is to the user's
    edges: ``{"node", "user", "hello", "streams": [stream ids]}``, checked as
    strictly as a publisher's message. Returns the user; raises InvalidMessage."""
    doc = _object(body, "caps notice", CAPS_FIELDS)
    check_id(doc["node"], "caps notice: node")
    if not isinstance(doc["hello"], bool):
        raise InvalidMessage("caps notice: hello: must be true or false")
    check_users(doc["streams"], "caps notice: streams")
    return check_id(doc["user"], "caps notice: user")


def _object(body: bytes, what: str, fields: frozenset[str]) -> dict[str, Any]:
    doc, _ = untrusted.parse(body, what, exact=False)
    if not isinstance(doc, dict) or set(doc) != fields:
        raise InvalidMessage(f"{what}: must be a JSON object of {', '.join(sorted(fields))}")
    return doc


class Routes:
    """user → nodes, node → users, and when each node was last heard."""

    def __init__(self) -> None:
        self._nodes: dict[str, set[str]] = {}
        self._users: dict[str, set[str]] = {}
        self._seen: dict[str, float] = {}

    def apply(self, op: RouteOp, now: float) -> list[str]:
        """Apply a round in order; return the users it joined that another node
        holds too (their edges tell each other of their streams: edge/caps.py)."""
        self._seen[op.node] = now
        users = self._users.setdefault(op.node, set())
        shared: list[str] = []
        for user, join in op.ops:
            nodes = self._nodes.get(user)
            if join:
                if nodes is None:
                    nodes = self._nodes[user] = set()
                nodes.add(op.node)
                users.add(user)
                if len(nodes) > 1:
                    shared.append(user)
            elif nodes is not None:
                nodes.discard(op.node)
                users.discard(user)
                if not nodes:
                    del self._nodes[user]
        return shared

    def heard(self, node: str, now: float) -> None:
        """A heartbeat: the node lives (known or not; it joins what it holds)."""
        self._seen[node] = now

    def expire(self, now: float, ttl: float) -> list[str]:
        """Drop the nodes not heard from within ``ttl``; return them."""
        dead = [node for node, seen in self._seen.items() if seen < now - ttl]
        for node in dead:
            del self._seen[node]
            for user in self._users.pop(node, ()):
                nodes = self._nodes[user]
                nodes.discard(node)
                if not nodes:
                    del self._nodes[user]
        return dead

    def clear(self) -> None:
        self._nodes.clear()
        self._users.clear()
        self._seen.clear()

    def nodes_of(self, user: str) -> Iterable[str]:
        return self._nodes.get(user, ())

    def __len__(self) -> int:
        """Users joined on at least one edge."""
        return len(self._nodes)

    @property
    def edges(self) -> int:
        """Edges heard from and not expired."""
        return len(self._seen)


class NodePacks:
    """A batch's deliveries → messages per node, each node's in delivery order:
    plain deliveries in packs (ssehub.pack, no ``BCC``), notices alone."""

    def __init__(self, routes: Routes) -> None:
        self._routes = routes
        self._open: dict[str, pack.Records] = {}  # by node
        self.out: list[Publish] = []

    def add(self, deliveries: Sequence[Delivery]) -> None:
        nodes_of, open_ = self._routes.nodes_of, self._open
        for d in deliveries:
            for node in nodes_of(d.user_id):
                if d.notice is not None:
                    props = topology.notice_properties(d.notice, d.key, d.user_id)
                    self.send(node, d.body, props)
                    continue
                records = open_.get(node)
                if records is None:
                    records = open_[node] = pack.Records()
                if records.add(d.user_id, d.body):
                    self._flush(node)

    def send(self, node: str, body: bytes, props: aiormq.spec.Basic.Properties) -> None:
        """A message to ``node`` by itself, after its deliveries so far."""
        self._flush(node)
        self.out.append(Publish(topology.NODES.name, node, body, props))

    def finish(self, sent_at_us: int) -> list[Publish]:
        """Flush every node; each node's first pack carries the publish time
        (the edge's publish-to-write latency, sampled once per batch)."""
        for node in list(self._open):
            self._flush(node)
        pack.stamp(self.out, sent_at_us, per_key=True)
        return self.out

    def _flush(self, node: str) -> None:
        records = self._open.pop(node, None)
        if records is not None:
            props = aiormq.spec.Basic.Properties(headers={pack.PACK_HEADER: len(records)})
            self.out.append(Publish(topology.NODES.name, node, pack.encode(records.records), props))


def joined_body(ref: int, shared: list[str]) -> bytes:
    return orjson.dumps({"ref": ref, "shared": shared})
