"""ssehub.edge.caps: the per-user stream cap, decided alike on every edge.

Stream ids sort in open order (s1 < s2 < s3), as real ones do."""

from __future__ import annotations

import orjson
from ssehub.edge.caps import StreamCaps
from ssehub.edge.registry import Registry
from ssehub.edge.response import stream_id
from ssehub.edge.stream import FAREWELLS, CloseReason, Stream


class Edge:
    """One edge's caps with its published notices collected."""

    def __init__(self, node: str, cap: int = 2, heartbeat: float = 10) -> None:
        self.sent: list[tuple[str, bytes]] = []  # (user, notice), as handed to the routing
        self.registry = Registry()
        self.caps = StreamCaps(node, cap, heartbeat, self.registry.streams_of, self._publish, 0.0)

    def _publish(self, user: str, body: bytes) -> None:
        self.sent.append((user, body))

    def open(self, user: str, sid: str, now: float = 0.0) -> Stream:
        stream = Stream(user, sid, 1 << 20)
        stream._syncing = False
        assert not self.caps.full(user)
        self.registry.add(stream)
        self.caps.announce(user, now)
        return stream

    def close(self, stream: Stream) -> None:
        self.registry.remove(stream)
        self.caps.closed(stream.user_id)

    def docs(self) -> list[dict[str, object]]:
        out = [orjson.loads(body) for _, body in self.sent]
        self.sent.clear()
        return out


def relay(src: Edge, *dst: Edge, now: float = 0.0) -> None:
    """Deliver what ``src`` published to ``dst`` (what RabbitMQ does)."""
    sent, src.sent[:] = list(src.sent), []
    for user, body in sent:
        assert orjson.loads(body)["user"] == user
        for edge in dst:
            edge.caps.receive(body, now)


def test_local_cap() -> None:
    a = Edge("a", cap=2)
    a.open("u", "s1")
    assert not a.caps.full("u")
    s2 = a.open("u", "s2")
    assert a.caps.full("u")
    assert not a.caps.full("other")
    a.close(s2)
    assert not a.caps.full("u")


def test_hello_is_answered_and_the_newest_goes_on_both_edges() -> None:
    a, b = Edge("a"), Edge("b")
    s1 = a.open("u", "s1")
    s2 = a.open("u", "s2")
    relay(a, b)  # b holds nothing of u yet: ignored
    s3 = b.open("u", "s3")
    (hello,) = b.docs()
    assert hello == {"node": "b", "user": "u", "hello": True, "streams": ["s3"]}
    b.caps.receive(orjson.dumps(hello), 0.0)  # its own notice comes back: ignored
    a.caps.receive(orjson.dumps(hello), 0.0)
    assert s1.closed is None and s2.closed is None  # a's are the oldest
    relay(a, b)  # a's answer
    assert s3.closed is CloseReason.TOO_MANY_STREAMS
    # what the response writes last: ephemeral
    farewell = FAREWELLS[CloseReason.TOO_MANY_STREAMS]
    assert farewell == b'event: disconnected\ndata: {"reason":"too_many_streams"}\n\n'


def test_ties_rank_by_stream_id() -> None:
    a, b = Edge("a", cap=1), Edge("b", cap=1)
    sa = a.open("u", "c-1-b")  # opened in the same microsecond
    sb = b.open("u", "c-1-a")
    relay(a, b)
    relay(b, a)
    relay(a, b)
    assert sb.closed is None
    assert sa.closed is CloseReason.TOO_MANY_STREAMS


def test_a_close_is_told_and_a_dead_node_stops_counting() -> None:
    a, b = Edge("a", cap=1, heartbeat=10), Edge("b", cap=1, heartbeat=10)
    a.open("u", "s1")
    relay(a, b)
    b.open("u", "s2")
    relay(b, a)
    relay(a, b)  # answer: b's s2 goes
    a.docs()
    # a re-sends every heartbeat while others are known
    a.caps.tick(10.0)
    assert [d["hello"] for d in a.docs()] == [False]
    # b's stream closed; once b is silent for 3 heartbeats a forgets it
    a.caps.tick(20.0)
    a.caps.tick(30.0)
    a.caps.tick(40.0)
    a.docs()
    assert "u" not in a.caps._remote
    a.caps.tick(50.0)
    assert a.docs() == []  # nothing to refresh for a user on one edge only


def test_closing_tells_the_others() -> None:
    a, b = Edge("a", cap=2), Edge("b", cap=2)
    s1 = a.open("u", "s1")
    relay(a, b)
    b.open("u", "s2")
    relay(b, a)
    relay(a, b)
    a.close(s1)
    (doc,) = a.docs()
    assert doc["streams"] == [] and doc["hello"] is False
    assert "u" not in a.caps._remote  # a is no longer bound for u


def test_single_edge_users_send_nothing_but_their_hellos() -> None:
    a = Edge("a")
    s = a.open("u", "s1")
    assert len(a.docs()) == 1
    a.caps.tick(100.0)
    a.close(s)
    assert a.docs() == []


def test_malformed_notices_are_ignored() -> None:
    a = Edge("a")
    s = a.open("u", "s1")
    for body in [
        b"",
        b"{",
        b"[]",
        b'{"node":"b"}',
        b'{"node":"b","user":"u","hello":true,"streams":[["x","y"]]}',
        b'{"node":"b","user":"u","hello":1,"streams":[1]}',
    ]:
        a.caps.receive(body, 0.0)
    assert s.closed is None
    assert "u" not in a.caps._remote


def test_stream_ids_sort_in_open_order() -> None:
    ids = [stream_id(t) for t in (1_700_000_000.0, 1_700_000_000.000001, 1_800_000_000.5)]
    assert ids == sorted(ids)
    assert all(len(i) == 35 and i.startswith("c-") for i in ids)
