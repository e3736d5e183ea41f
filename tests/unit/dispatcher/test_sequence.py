"""ssehub.dispatcher.sequence: per-user numbers, the SSE bytes that carry them,
and the rows stored for them."""

from __future__ import annotations

from ssehub.dispatcher.expand import Fanout
from ssehub.dispatcher.sequence import Delivery, assign, stored_rows
from ssehub.topology import Notice

from tests.unit.dispatcher.messages import event


def test_numbers_follow_each_users_last_seq() -> None:
    msg = event("conversation.c", "e", {"x": 1}, id="k")
    last = {"a": 2, "b": 40}
    deliveries = assign([Fanout(msg, ("a", "b", "new"))], last)
    assert deliveries == [
        Delivery("a", 3, b'id: 3\nevent: e\ndata: {"x":1}\n\n', None, "k"),
        Delivery("b", 41, b'id: 41\nevent: e\ndata: {"x":1}\n\n', None, "k"),
        Delivery("new", 1, b'id: 1\nevent: e\ndata: {"x":1}\n\n', None, "k"),
    ]
    assert last == {"a": 3, "b": 41, "new": 1}
    assert stored_rows(deliveries, 5.0) == [
        ("a", 3, 'id: 3\nevent: e\ndata: {"x":1}\n\n', "k", 5.0, False),
        ("b", 41, 'id: 41\nevent: e\ndata: {"x":1}\n\n', "k", 5.0, False),
        ("new", 1, 'id: 1\nevent: e\ndata: {"x":1}\n\n', "k", 5.0, False),
    ]


def test_numbers_run_on_within_a_batch_in_order() -> None:
    last: dict[str, int] = {}
    fanouts = [Fanout(event("user.u", name, i), ("u",)) for i, name in enumerate("xyz")]
    deliveries = assign(fanouts, last)
    assert [(d.seq, d.body) for d in deliveries] == [
        (1, b"id: 1\nevent: x\ndata: 0\n\n"),
        (2, b"id: 2\nevent: y\ndata: 1\n\n"),
        (3, b"id: 3\nevent: z\ndata: 2\n\n"),
    ]
    assert [d.key for d in deliveries] == [None, None, None]
    assert last == {"u": 3}


def test_ephemeral_events_get_no_number_and_are_not_stored() -> None:
    last = {"a": 5}
    fanouts = [
        Fanout(event("conversation.c", "typing", {"who": "a"}, ephemeral=True), ("a", "b")),
        Fanout(event("user.a", "e", []), ("a",)),
    ]
    deliveries = assign(fanouts, last)
    assert deliveries == [
        Delivery("a", None, b'event: typing\ndata: {"who":"a"}\n\n'),
        Delivery("b", None, b'event: typing\ndata: {"who":"a"}\n\n'),
        Delivery("a", 6, b"id: 6\nevent: e\ndata: []\n\n"),
    ]
    assert stored_rows(deliveries, 1.0) == [
        ("a", 6, "id: 6\nevent: e\ndata: []\n\n", None, 1.0, False)
    ]
    assert last == {"a": 6}  # b got no number


def test_a_receipt_event_is_stored_with_its_flag_and_delivered_as_a_notice() -> None:
    deliveries = assign([Fanout(event("user.a", "m", 1, id="r1", receipt=True), ("a",))], {})
    assert deliveries == [Delivery("a", 1, b"id: 1\nevent: m\ndata: 1\n\n", Notice.RECEIPT, "r1")]
    assert stored_rows(deliveries, 2.0) == [
        ("a", 1, "id: 1\nevent: m\ndata: 1\n\n", "r1", 2.0, True)
    ]


def test_no_recipients_no_numbers() -> None:
    last: dict[str, int] = {}
    assert assign([Fanout(event("conversation.c"), ())], last) == []
    assert last == {}
