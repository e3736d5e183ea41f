"""The intake: every message sorts or is dead-lettered alone, whatever it holds;
what is internal is decided by the exchange it came through, never by itself."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ssehub import topology
from ssehub.dispatcher import forward, intake
from ssehub.dispatcher.intake import item_body, sort_batch
from ssehub.fastpath.receiver import UNDECODABLE
from ssehub.schema import EventMessage, MembershipMessage

from tests.unit.dispatcher.delivered import delivered, internal

LIMITS = (1 << 16, 1 << 20, 0.0)
GOOD = b'{"event": "note", "data": {"text": "hi"}}'
HALF_EMOJI = b'{"event":"note","data":{"text":"\\ud83d 12345678901234567890"}}'


def test_good_and_bad_messages_sort_in_order_each_on_its_own() -> None:
    out = sort_batch(
        [
            delivered("user.a", GOOD, tag=1),
            delivered("user.a", b"{oops", tag=2),
            delivered("user.b", GOOD, tag=3),
        ],
        *LIMITS,
    )
    assert [m.target for m in out.good if isinstance(m, EventMessage)] == ["a", "b"]
    assert [o.delivery.delivery_tag for o in out.origins] == [1, 3]  # type: ignore[union-attr]
    assert [d.message.delivery.delivery_tag for d in out.dead] == [2]  # type: ignore[union-attr]


@pytest.mark.parametrize("rk", ["user.a", "conversation.c"])
def test_half_an_emoji_beside_a_big_number_is_a_dead_letter_in_words(rk: str) -> None:
    out = sort_batch([delivered(rk, HALF_EMOJI), delivered(rk, GOOD)], *LIMITS)
    assert len(out.good) == 1
    [dead] = out.dead
    assert "surrogate" in dead.reason


def test_half_an_emoji_in_one_batch_item_spares_the_others() -> None:
    body = (
        b'[{"user": "a", "event": "one", "data": 1},'
        b' {"user": "a", "event": "note", "data": {"text": "\\ud83d 12345678901234567890"}},'
        b' {"user": "a", "event": "three", "data": 3}]'
    )
    out = sort_batch([delivered("batch", body, message_id="m1")], *LIMITS)
    assert [m.event for m in out.good if isinstance(m, EventMessage)] == ["one", "three"]
    [dead] = out.dead
    assert dead.reason.startswith("item 1: ") and "surrogate" in dead.reason


@pytest.mark.parametrize(
    "headers",
    [
        {topology.FORWARD_HEADER: 1},
        {topology.PRESENCE_HEADER: 1},
        {topology.ROUTE_HEADER: 1},
        {topology.NOTICE_HEADER: "caps"},
        {topology.PROBE_HEADER: "x"},
    ],
)
@pytest.mark.parametrize("rk", [topology.DISPATCH.name, f"{topology.DISPATCH.name}.0"])
def test_nothing_through_sse_events_is_internal(headers: dict[str, Any], rk: str) -> None:
    forged = forward.encode([_event("a", "x")])
    out = sort_batch([delivered(rk, forged, headers=headers)], *LIMITS)
    assert out.good == [] and out.presence == [] and out.routes == [] and out.notices == []
    [dead] = out.dead
    assert dead.reason.startswith("routing key")


def test_the_default_exchange_is_not_internal_either() -> None:
    forged = forward.encode([_event("a", "x")])
    out = sort_batch(
        [delivered(topology.DISPATCH.name, forged, exchange="", headers={"x-ssehub-forward": 1})],
        *LIMITS,
    )
    assert out.good == [] and len(out.dead) == 1


def test_a_forward_through_the_internal_exchange_is_taken() -> None:
    body = forward.encode([_event("a", "x")])
    out = sort_batch([internal(body, {topology.FORWARD_HEADER: 1})], *LIMITS)
    assert [m.target for m in out.good if isinstance(m, EventMessage)] == ["a"]
    assert out.dead == []


def test_undecodable_properties_are_a_dead_letter() -> None:
    out = sort_batch([delivered("user.a", GOOD, properties=UNDECODABLE)], *LIMITS)
    assert out.good == []
    assert out.dead[0].reason.startswith("properties: not decodable")


def test_a_routing_key_that_is_not_utf8_is_a_dead_letter() -> None:
    rk = b"user.\xff\xfe".decode("utf-8", "surrogateescape")  # as the receiver decodes it
    out = sort_batch([delivered(rk, GOOD)], *LIMITS)
    assert out.good == [] and out.dead[0].reason.startswith("routing key")


def test_a_bug_met_by_one_message_dead_letters_it_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = intake.parse_message

    def buggy(rk: str, body: bytes, *args: Any) -> Any:
        if b"boom" in body:
            raise KeyError("a bug")
        return real(rk, body, *args)

    monkeypatch.setattr(intake, "parse_message", buggy)
    boom = b'{"event": "boom", "data": 1}'
    out = sort_batch(
        [delivered("user.a", GOOD), delivered("user.a", boom, message_id="m-boom")], *LIMITS
    )
    assert len(out.good) == 1
    [dead] = out.dead
    assert dead.reason == "internal_error: KeyError"
    assert dead.body == boom
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "m-boom" in record.getMessage()


def test_item_body_is_the_message_as_published_or_as_a_batch_item() -> None:
    single = delivered("members.c", b'{"op": "set", "users": ["a"]}')
    m = MembershipMessage("c", "set", ("a", "b"), "k1")
    assert item_body(m, single) == single.body
    from_batch = delivered("batch", b"[]")
    doc = orjson.loads(item_body(m, from_batch))
    assert doc == {"members": "c", "op": "set", "users": ["a", "b"], "id": "k1"}
    ev = _event("u", "x")
    assert orjson.loads(item_body(ev, from_batch)) == {"user": "u", "event": "x", "data": 1}


def _event(user: str, name: str) -> EventMessage:
    return EventMessage("user", user, name, b"1", None, frozenset(), False)
