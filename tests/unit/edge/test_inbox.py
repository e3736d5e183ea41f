"""ssehub.edge.inbox: every kind of delivery to its handler; events to the streams."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader
from ssehub import pack, topology
from ssehub.edge.inbox import Inbox
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.registry import Registry
from ssehub.edge.stream import CloseReason, Stream
from ssehub.topology import Notice

from tests.unit.edge.streams import sse


def delivery(routing_key: str, body: bytes, headers: dict[str, Any] | None = None) -> Any:
    props = Basic.Properties(headers=headers)
    return DeliveredMessage(
        delivery=Basic.Deliver("ctag", 1, False, "ssehub.nodes", routing_key),
        header=ContentHeader(0, len(body), props),
        body=body,
        channel=cast(Any, None),
    )


class Edge:
    def __init__(self) -> None:
        self.registry = Registry()
        self.seen: list[tuple[Notice, str, bytes]] = []

        def handler(kind: Notice) -> Any:
            return lambda user, body, _headers: self.seen.append((kind, user, body))

        self.inbox = Inbox(
            self.registry,
            EdgeMetrics(),
            {kind: handler(kind) for kind in (Notice.JOINED, Notice.RESYNC, Notice.CAPS)},
        )

    def stream(self, user: str) -> Stream:
        s = Stream(user, f"{user}-s", 1 << 20)
        s._syncing = False
        self.registry.add(s)
        return s


def test_events_plain_and_packed_reach_their_users_streams() -> None:
    edge = Edge()
    a, b = edge.stream("a"), edge.stream("b")
    edge.inbox(delivery("a", sse(1)))
    records = pack.encode([("b", sse(1)), ("nobody", sse(1)), ("a", sse(2))])
    edge.inbox(delivery("n1", records, {pack.PACK_HEADER: 3, topology.SENT_AT_HEADER: 1}))
    assert a.take()[0] == sse(1) + sse(2)
    assert b.take()[0] == sse(1)


def test_each_notice_goes_to_its_handler_with_the_user_it_names() -> None:
    edge = Edge()
    for kind in (Notice.JOINED, Notice.RESYNC, Notice.CAPS):
        props = topology.notice_properties(kind, user="u9")
        edge.inbox(delivery("n1", b"{}", dict(props.headers or {})))
    assert edge.seen == [
        (Notice.JOINED, "u9", b"{}"),
        (Notice.RESYNC, "u9", b"{}"),
        (Notice.CAPS, "u9", b"{}"),
    ]


def test_receipts_and_control_ops_act_on_the_users_streams() -> None:
    edge = Edge()
    s = edge.stream("a")
    props = topology.notice_properties(Notice.RECEIPT, key="k1", user="a")
    edge.inbox(delivery("n1", sse(1), dict(props.headers or {})))
    assert s.take()[0] == sse(1)
    assert [(seq, key) for seq, key, _ in s.receipts_due()] == [(1, "k1")]
    op = orjson.dumps({"op": "disconnect", "reason": "bye"})
    edge.inbox(delivery("a", op, dict(topology.notice_properties(Notice.CONTROL).headers or {})))
    assert s.closed is CloseReason.DISCONNECTED


def test_an_unknown_notice_is_dropped_never_written_as_an_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge = Edge()
    s = edge.stream("a")
    edge.inbox(delivery("a", sse(1), {topology.NOTICE_HEADER: "from-the-future"}))
    assert not s.has_output and edge.seen == []
    assert "unknown notice" in caplog.text


def test_every_notice_kind_needs_a_handler() -> None:
    with pytest.raises(TypeError, match="no handler"):
        Inbox(Registry(), EdgeMetrics(), {Notice.JOINED: lambda *_: None})


@pytest.mark.parametrize(
    "body",
    [
        b"id: 1\nevent: e\nid: 999999\ndata: 1\n\n",  # a stray line moves Last-Event-ID
        b"event: e\ndata: 1\n\nevent: f\ndata: 2\n\n",  # two events in one
        b"id: 1\r\nevent: e\r\ndata: 1\r\n\r\n",
        b"id: x\nevent: e\ndata: 1\n\n",
        b"raw bytes",
        b"",
    ],
)
def test_a_delivery_that_is_not_one_event_is_never_written(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    edge = Edge()
    s = edge.stream("a")
    edge.inbox(delivery("a", body))
    edge.inbox(delivery("n1", pack.encode([("a", body)]), {pack.PACK_HEADER: 1}))
    edge.inbox(delivery("n1", body, {topology.SENT_AT_HEADER: 1, topology.USER_HEADER: "a"}))
    receipt = topology.notice_properties(Notice.RECEIPT, key="k", user="a")
    edge.inbox(delivery("n1", body, dict(receipt.headers or {})))
    assert not s.has_output
    edge.inbox(delivery("a", sse(1)))
    assert s.take()[0] == sse(1)
    assert "malformed delivery" in caplog.text


@pytest.mark.parametrize("op", [b"[]", b"1", b'{"op": "explode"}', b"{not json"])
def test_a_malformed_control_notice_closes_nothing(op: bytes) -> None:
    edge = Edge()
    s = edge.stream("a")
    edge.inbox(delivery("a", op, dict(topology.notice_properties(Notice.CONTROL).headers or {})))
    assert s.closed is None
