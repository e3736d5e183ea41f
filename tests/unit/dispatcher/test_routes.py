"""dispatcher/routes.py: the table of who is on which edge, and a batch's
deliveries as one message per edge, each edge's in order."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader
from ssehub import pack, topology
from ssehub.dispatcher.intake import sort_batch
from ssehub.dispatcher.presence import PresenceOp, parse_presence
from ssehub.dispatcher.routes import (
    NodePacks,
    RouteOp,
    Routes,
    joined_body,
    parse_caps_notice,
    parse_route,
)
from ssehub.dispatcher.sequence import Delivery
from ssehub.errors import InvalidMessage
from ssehub.fastpath.marshal import Publish
from ssehub.topology import Notice


def op(node: str, *ops: tuple[str, bool], ref: int = 1) -> RouteOp:
    return RouteOp(node, ref, tuple(ops))


def records(message: Publish) -> list[tuple[str, bytes]]:
    assert pack.PACK_HEADER in (message.properties.headers or {})
    return list(pack.decode(message.body))


def test_joins_and_leaves_apply_in_order() -> None:
    routes = Routes()
    assert routes.apply(op("n1", ("a", True), ("b", True), ("a", False), ("a", True)), 0) == []
    assert sorted(routes.nodes_of("a")) == ["n1"]
    assert routes.apply(op("n2", ("a", True), ("c", True)), 0) == ["a"]  # a is on n1 too
    assert sorted(routes.nodes_of("a")) == ["n1", "n2"]
    routes.apply(op("n1", ("a", False), ("b", False), ("zz", False)), 0)  # zz: never joined
    assert list(routes.nodes_of("a")) == ["n2"]
    assert list(routes.nodes_of("b")) == []
    assert len(routes) == 2  # a, c


def test_silent_nodes_expire_with_their_users() -> None:
    routes = Routes()
    routes.apply(op("old", ("a", True), ("b", True)), now=0)
    routes.apply(op("live", ("a", True)), now=0)
    routes.heard("live", 25)
    assert routes.expire(now=31, ttl=30) == ["old"]
    assert list(routes.nodes_of("a")) == ["live"]
    assert list(routes.nodes_of("b")) == []
    assert routes.expire(now=31, ttl=30) == []
    routes.clear()
    assert len(routes) == 0 and list(routes.nodes_of("a")) == []


def test_a_batch_is_one_pack_per_node_in_delivery_order() -> None:
    routes = Routes()
    routes.apply(op("n1", ("a", True), ("b", True)), 0)
    routes.apply(op("n2", ("b", True), ("c", True)), 0)
    packs = NodePacks(routes)
    packs.add(
        [
            Delivery("a", 1, b"id: 1\n\n"),
            Delivery("b", 1, b"id: 1\n\n"),
            Delivery("nobody", 1, b"id: 1\n\n"),  # not on any edge: not sent
            Delivery("c", 1, b"id: 1\n\n"),
            Delivery("a", 2, b"id: 2\n\n"),
        ]
    )
    out = packs.finish(sent_at_us=123)
    assert [(m.exchange, m.routing_key) for m in out] == [
        ("ssehub.nodes", "n1"),
        ("ssehub.nodes", "n2"),
    ]
    assert records(out[0]) == [("a", b"id: 1\n\n"), ("b", b"id: 1\n\n"), ("a", b"id: 2\n\n")]
    assert records(out[1]) == [("b", b"id: 1\n\n"), ("c", b"id: 1\n\n")]
    for m in out:  # every edge samples the batch's publish-to-write latency
        assert (m.properties.headers or {})[topology.SENT_AT_HEADER] == 123


def test_a_notice_travels_alone_after_its_nodes_earlier_deliveries() -> None:
    routes = Routes()
    routes.apply(op("n1", ("a", True)), 0)
    packs = NodePacks(routes)
    packs.add(
        [
            Delivery("a", 1, b"id: 1\n\n"),
            Delivery("a", 2, b"id: 2\n\n", Notice.RECEIPT, "k-2"),
            Delivery("a", 3, b"id: 3\n\n"),
        ]
    )
    packs.send("n1", joined_body(7, []), topology.notice_properties(Notice.JOINED))
    out = packs.finish(0)
    assert [m.routing_key for m in out] == ["n1"] * 4
    assert records(out[0]) == [("a", b"id: 1\n\n")]
    headers = out[1].properties.headers or {}
    assert headers[topology.NOTICE_HEADER] == "receipt"
    assert headers[topology.NOTICE_KEY] == "k-2"
    assert headers[topology.USER_HEADER] == "a"  # the routing key is the node's
    assert records(out[2]) == [("a", b"id: 3\n\n")]
    assert orjson.loads(out[3].body) == {"ref": 7, "shared": []}  # after every delivery


def test_packs_split_at_the_body_cap() -> None:
    routes = Routes()
    routes.apply(op("n1", ("a", True)), 0)
    packs = NodePacks(routes)
    big = b"data: " + b"x" * (300 * 1024) + b"\n\n"
    packs.add([Delivery("a", i, big) for i in range(1, 6)])
    out = packs.finish(0)
    assert len(out) == 2  # four of ~300 KiB pass 1 MiB
    assert sum(len(records(m)) for m in out) == 5


# -- edges' signals, checked as strictly as a publisher's messages -----------------


def test_what_the_edges_send_parses() -> None:
    route = topology.route_message("host.1.ab", 7, [("a", True), ("b", False)])
    assert parse_route(route.body) == RouteOp("host.1.ab", 7, (("a", True), ("b", False)))
    assert parse_route(b'{"node":"n","ref":0,"ops":[["a",true],["a",false]]}').ops == (
        ("a", True),
        ("a", False),
    )
    beat = topology.presence_message("host.1.ab", None, True)
    assert parse_presence(beat.body) == PresenceOp("host.1.ab", None, True)
    online = topology.presence_message("host.1.ab", "ü", False)
    assert parse_presence(online.body) == PresenceOp("host.1.ab", "ü", False)
    caps = {"node": "n1", "user": "a", "hello": False, "streams": ["c-1", "c-2"]}
    assert parse_caps_notice(orjson.dumps(caps)) == "a"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "route: not valid UTF-8 JSON ("),
        (b'{"ref": 1, "ops": []}', "route: must be a JSON object of node, ops, ref"),
        (b'{"node": "n", "ref": 1, "ops": [], "x": 1}', "route: must be a JSON object of node"),
        (b'{"node": "", "ref": 1, "ops": []}', "route: node: must be 1-128 bytes, got 0"),
        (b'{"node": "n\\n", "ref": 1, "ops": []}', "route: node: character '\\n' is not allowed"),
        (b'{"node": "n", "ref": "1", "ops": []}', "route: ref: must be an integer from 0 to"),
        (b'{"node": "n", "ref": true, "ops": []}', "route: ref: must be an integer from 0 to"),
        (b'{"node": "n", "ref": -1, "ops": []}', "route: ref: must be an integer from 0 to"),
        (b'{"node": "n", "ref": 1.5, "ops": []}', "route: ref: must be an integer from 0 to"),
        (b'{"node": "n", "ref": %s, "ops": []}' % (b"9" * 30), "route: ref: must be an integer"),
        (b'{"node": "n", "ref": 1, "ops": {}}', "route: ops: must be an array of [user, 1 or 0]"),
        (b'{"node": "n", "ref": 1, "ops": [["a"]]}', "route: ops[0]: must be [user, 1 (join)"),
        (b'{"node": "n", "ref": 1, "ops": [["a", 2]]}', "route: ops[0]: must be [user, 1 (join)"),
        (b'{"node": "n", "ref": 1, "ops": [["a", "1"]]}', "route: ops[0]: must be [user, 1"),
        (b'{"node": "n", "ref": 1, "ops": [["", 1]]}', "route: ops[0] user: must be 1-128 bytes"),
        (b'{"node": "n", "ref": 1, "ops": [[7, 1]]}', "route: ops[0] user: must be a string"),
    ],
)
def test_a_malformed_route_round_is_refused_in_words(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_route(body)
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "presence: must be a JSON object"),
        (b"{}", "presence: must be an object of node (a heartbeat) or node, user, online"),
        (b'{"node": "n", "online": true}', "presence: must be an object of node (a heartbeat)"),
        (b'{"node": "n", "user": "u", "online": 1}', "presence: online: must be true or false"),
        (b'{"node": 5}', "presence: node: must be a string, got number"),
        (b'{"node": "n", "user": "a b", "online": true}', "presence: user: character ' '"),
        (b'{"node": "n", "user": "\\ud83d", "online": true}', "presence: user holds a lone"),
    ],
)
def test_a_malformed_presence_signal_is_refused_in_words(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_presence(body)
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"user": "a"}, "caps notice: must be a JSON object of hello, node, streams, user"),
        ({"node": "n", "user": "a b", "hello": True, "streams": []}, "caps notice: user: char"),
        ({"node": "", "user": "a", "hello": True, "streams": []}, "caps notice: node: must be"),
        ({"node": "n", "user": "a", "hello": 1, "streams": []}, "caps notice: hello: must be"),
        ({"node": "n", "user": "a", "hello": True, "streams": "c"}, "caps notice: streams: must"),
        ({"node": "n", "user": "a", "hello": True, "streams": [1]}, "caps notice: streams[0]:"),
    ],
)
def test_a_malformed_caps_notice_is_refused_in_words(doc: object, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_caps_notice(orjson.dumps(doc))
    assert str(info.value).startswith(reason)


def _internal(body: bytes, headers: dict[str, Any], tag: int = 1) -> DeliveredMessage:
    props = Basic.Properties(headers=headers)
    delivery = Basic.Deliver("ctag", tag, False, topology.INTERNAL.name, topology.DISPATCH.name)
    return DeliveredMessage(
        delivery=delivery,
        header=ContentHeader(0, len(body), props),
        body=body,
        channel=cast(Any, None),
    )


def test_intake_sorts_an_edges_signals_and_dead_letters_bad_ones() -> None:
    route = topology.route_message("n1", 3, [("a", True), ("b", False)])
    caps = orjson.dumps({"node": "n1", "user": "a", "hello": True, "streams": ["c-1"]})
    intake = sort_batch(
        [
            _internal(route.body, {topology.ROUTE_HEADER: 1}),
            _internal(caps, {topology.NOTICE_HEADER: "caps"}, 2),
            _internal(b"{}", {topology.ROUTE_HEADER: 1}, 3),
            _internal(b"{}", {}, 4),
        ],
        1 << 16,
        1 << 20,
        0.0,
    )
    assert intake.routes == [RouteOp("n1", 3, (("a", True), ("b", False)))]
    assert intake.notices == [Delivery("a", None, caps, Notice.CAPS)]
    assert [d.reason for d in intake.dead] == [
        "route: must be a JSON object of node, ops, ref",
        "unknown message in the dispatch queue",
    ]
    assert intake.good == []
