"""ssehub.dispatcher.sequence: per-user numbers and the SSE bytes that carry them."""

from __future__ import annotations

from ssehub.dispatcher.expand import Fanout
from ssehub.dispatcher.sequence import Delivery, StoredEvent, assign

from tests.unit.dispatcher.messages import event


def test_numbers_follow_each_users_last_seq() -> None:
    msg = event("conversation.c", "e", {"x": 1}, id="k")
    last = {"a": 2, "b": 40}
    stored, deliveries = assign([Fanout(msg, ("a", "b", "new"))], last)
    assert stored == [
        StoredEvent("a", 3, b'id: 3\nevent: e\ndata: {"x":1}\n\n', "k"),
        StoredEvent("b", 41, b'id: 41\nevent: e\ndata: {"x":1}\n\n', "k"),
        StoredEvent("new", 1, b'id: 1\nevent: e\ndata: {"x":1}\n\n', "k"),
    ]
    assert deliveries == [Delivery(s.user_id, s.seq, s.sse) for s in stored]
    assert last == {"a": 3, "b": 41, "new": 1}


def test_numbers_run_on_within_a_batch_in_order() -> None:
    last: dict[str, int] = {}
    fanouts = [Fanout(event("user.u", name, i), ("u",)) for i, name in enumerate("xyz")]
    stored, deliveries = assign(fanouts, last)
    assert [(s.seq, s.sse) for s in stored] == [
        (1, b"id: 1\nevent: x\ndata: 0\n\n"),
        (2, b"id: 2\nevent: y\ndata: 1\n\n"),
        (3, b"id: 3\nevent: z\ndata: 2\n\n"),
    ]
    assert [s.key for s in stored] == [None, None, None]
    assert len(deliveries) == 3
    assert last == {"u": 3}


def test_ephemeral_events_get_no_number_and_are_not_stored() -> None:
    last = {"a": 5}
    fanouts = [
        Fanout(event("conversation.c", "typing", {"who": "a"}, ephemeral=True), ("a", "b")),
        Fanout(event("user.a", "e", []), ("a",)),
    ]
    stored, deliveries = assign(fanouts, last)
    assert stored == [StoredEvent("a", 6, b"id: 6\nevent: e\ndata: []\n\n", None)]
    assert deliveries == [
        Delivery("a", None, b'event: typing\ndata: {"who":"a"}\n\n'),
        Delivery("b", None, b'event: typing\ndata: {"who":"a"}\n\n'),
        Delivery("a", 6, b"id: 6\nevent: e\ndata: []\n\n"),
    ]
    assert last == {"a": 6}  # b got no number


def test_no_recipients_no_numbers() -> None:
    last: dict[str, int] = {}
    assert assign([Fanout(event("conversation.c"), ())], last) == ([], [])
    assert last == {}
