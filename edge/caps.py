"""At most ``SSEHUB_MAX_STREAMS_PER_USER`` open streams per user, across all edges.

The rule. A user's open streams are ranked by stream id, which begins with
the stream's open time (``c-<µs since the epoch, 13 hex digits><random>``,
stamped by the edge that holds it; edge/response.py), so the rank is the open
order, ties broken by the random rest. The first ``cap`` may stay open;
every stream ranked beyond the cap receives the ephemeral ``disconnected``
``{"reason": "too_many_streams"}`` and is closed
(``CloseReason.TOO_MANY_STREAMS``). So the newest streams go, and every edge
that knows the same streams reaches the same verdict on its own: an edge only
ever closes its own streams.

At once, on this edge: when the edge alone already holds ``cap`` streams of
the user, one more is refused before it opens (429, edge/route.py; the check
and the registration of a stream happen in one step of the event loop).

Across edges: an edge publishes a *notice* ``{"node", "user", "hello",
"streams": [stream ids]}`` with the header ``x-ssehub-notice: caps`` that
reaches exactly the edges routed for that user, which are the edges holding
streams of the user: with per-node delivery the dispatcher forwards it to the
user's edges like a delivery, with per-user bindings it goes to
``sse.deliver`` by the user's id (edge/routing.py: ``caps``). The node's inbox
hands such notices here instead of to the streams (edge/inbox.py). Notices are
sent

- when a stream of the user opens here (a *hello*, once the node is routed
  for the user, so the answers reach it); every edge holding streams of the user
  answers a hello with its own list (answers are not answered);
- when a stream closes here (the list without it; an empty list: "none
  left"), while other edges with streams of the user are known;
- every ``SSEHUB_PRESENCE_HEARTBEAT`` for users that other edges hold too.

A node's list counts for ``3 × SSEHUB_PRESENCE_HEARTBEAT`` after its last
notice: a node that died stops re-sending, and its streams stop counting.
The node's own notices come back to it (it is routed too) and are ignored.
Users held by one edge only cost one notice per stream opened, and nothing
while idle; the books hold nothing per stream (the registry has the streams).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import orjson
from ssehub.edge.stream import CloseReason, Stream

EXPIRY_BEATS = 3  # a node's notice counts for this many heartbeats


class StreamCaps:
    def __init__(
        self,
        node_id: str,
        cap: int,
        heartbeat: float,
        streams_of: Callable[[str], Collection[Stream]],
        publish: Callable[[str, bytes], None],
        now: float,
    ) -> None:
        self._node_id = node_id
        self.cap = cap
        self._heartbeat = heartbeat
        self._streams_of = streams_of  # this edge's streams of a user (the registry)
        self._publish = publish  # (user, notice): by the delivery design (edge/routing.py)
        # user -> node -> (its stream ids of the user, when we last heard, monotonic)
        self._remote: dict[str, dict[str, tuple[list[str], float]]] = {}
        self._next_refresh = now + heartbeat

    # -- this edge's streams ------------------------------------------------
    def full(self, user_id: str) -> bool:
        """This edge alone holds the cap for ``user_id``: refuse one more at once."""
        return len(self._streams_of(user_id)) >= self.cap

    def announce(self, user_id: str, now: float, hello: bool = True) -> None:
        """The node is routed for ``user_id``: tell the other edges (a hello),
        and apply what is already known of them. ``hello`` False: no other
        edge held the user when this one joined (per-node delivery knows),
        so only edges already heard from need to hear of the new stream."""
        if self._streams_of(user_id):
            if hello or user_id in self._remote:
                self._send(user_id, hello=True)
            self._judge(user_id, now)

    def closed(self, user_id: str) -> None:
        """A stream of ``user_id`` left this edge's registry."""
        if user_id in self._remote:
            self._send(user_id, hello=False)
            if not self._streams_of(user_id):
                del self._remote[user_id]  # no longer routed here: we would not hear more

    # -- other edges --------------------------------------------------------
    def receive(self, body: bytes, now: float) -> None:
        """A notice from RabbitMQ (edge/inbox.py); malformed ones are ignored."""
        try:
            doc = orjson.loads(body)
            node, user, hello = str(doc["node"]), str(doc["user"]), bool(doc["hello"])
            ids = doc["streams"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                return
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if node == self._node_id or not self._streams_of(user):
            return
        nodes = self._remote.setdefault(user, {})
        if ids:
            nodes[node] = (ids, now)
        else:
            nodes.pop(node, None)
            if not nodes:
                del self._remote[user]
        if hello:
            self._send(user, hello=False)
        self._judge(user, now)

    def tick(self, now: float) -> None:
        """About once a second (the pinger): re-send and expire, per heartbeat."""
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._heartbeat
        stale = now - EXPIRY_BEATS * self._heartbeat
        for user in list(self._remote):
            nodes = self._remote[user]
            for node in [n for n, (_, heard) in nodes.items() if heard < stale]:
                del nodes[node]
            if not nodes:
                del self._remote[user]
            elif self._streams_of(user):
                self._send(user, hello=False)

    # -- the rule -------------------------------------------------------------
    def _judge(self, user_id: str, now: float) -> None:
        """Close this edge's streams of ``user_id`` that rank beyond the cap."""
        nodes = self._remote.get(user_id)
        if not nodes:
            return
        local = {s.stream_id: s for s in self._streams_of(user_id) if s.closed is None}
        stale = now - EXPIRY_BEATS * self._heartbeat
        ranked = list(local)
        for ids, heard in nodes.values():
            if heard >= stale:
                ranked.extend(ids)
        if len(ranked) <= self.cap:
            return
        ranked.sort()
        for stream_id in ranked[self.cap :]:
            stream = local.get(stream_id)
            if stream is not None:
                stream.close(CloseReason.TOO_MANY_STREAMS)  # the response says why

    def _send(self, user_id: str, *, hello: bool) -> None:
        ids = [s.stream_id for s in self._streams_of(user_id) if s.closed is None]
        doc = {"node": self._node_id, "user": user_id, "hello": hello, "streams": ids}
        self._publish(user_id, orjson.dumps(doc))
