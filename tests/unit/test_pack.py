"""ssehub.pack: many deliveries per sse.deliver message, in order, bounded."""

from __future__ import annotations

import pytest
from ssehub import pack
from ssehub.fastpath.marshal import Publish
from ssehub.topology import DELIVER, DELIVERY_PROPERTIES, SENT_AT_HEADER


def sse(n: int) -> bytes:
    return b"id: %d\nevent: x\ndata: {}\n\n" % n


def records_of(packer: pack.Packer) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for p in packer.out:
        if pack.PACK_HEADER in (p.properties.headers or {}):
            out += pack.decode(p.body)
        else:
            out.append((p.routing_key, p.body))
    return out


def test_round_trip_keeps_order_and_bytes() -> None:
    records = [("ü-1", sse(1)), ("b", b""), ("ü-1", sse(2)), ("c" * 255, b"\x00\xff" * 70_000)]
    assert list(pack.decode(pack.encode(records))) == records


def test_a_truncated_pack_yields_the_good_records_then_fails() -> None:
    body = pack.encode([("a", sse(1)), ("b", sse(2))])
    got = []
    with pytest.raises(pack.MalformedPack):
        for record in pack.decode(body[:-3]):
            got.append(record)
    assert got == [("a", sse(1))]


def test_routing_key_is_the_first_user_and_the_others_are_bcc_once() -> None:
    packer = pack.Packer(256)
    for user, n in [("a", 1), ("b", 1), ("a", 2), ("c", 1)]:
        packer.add(user, sse(n))
    packer.flush()
    [p] = packer.out
    assert (p.exchange, p.routing_key) == (DELIVER.name, "a")
    assert p.properties.headers == {pack.PACK_HEADER: 4, "BCC": ["b", "c"]}
    assert records_of(packer) == [("a", sse(1)), ("b", sse(1)), ("a", sse(2)), ("c", sse(1))]


def test_a_pack_of_one_is_a_plain_delivery() -> None:
    packer = pack.Packer(256)
    packer.add("a", sse(1))
    packer.flush()
    assert [(p.routing_key, p.body, p.properties) for p in packer.out] == [
        ("a", sse(1), DELIVERY_PROPERTIES)
    ]


def test_size_one_is_one_message_per_delivery() -> None:
    packer = pack.Packer(1)
    for n in range(3):
        packer.add("a", sse(n))
    packer.flush()
    assert [p.properties for p in packer.out] == [DELIVERY_PROPERTIES] * 3


def test_packs_are_bounded_by_records_and_by_header_bytes() -> None:
    packer = pack.Packer(3)
    for n in range(7):
        packer.add(f"u{n}", sse(n))
    packer.flush()
    assert [len(list(pack.decode(p.body))) for p in packer.out[:2]] == [3, 3]
    assert len(packer.out) == 3
    # 255-byte user ids: the BCC header stays within MAX_KEY_BYTES (one frame)
    packer = pack.Packer(4096)
    users = [f"{n:0255d}" for n in range(600)]
    for user in users:
        packer.add(user, sse(1))
    packer.flush()
    assert len(packer.out) == 3
    for p in packer.out:
        bcc = (p.properties.headers or {})["BCC"]
        assert isinstance(bcc, list) and sum(len(str(k)) + 5 for k in bcc) <= pack.MAX_KEY_BYTES
    assert [u for u, _ in records_of(packer)] == users


def test_stamp_marks_the_first_delivery_or_pack_only() -> None:
    packer = pack.Packer(2)
    for user in "abc":
        packer.add(user, sse(1))
    packer.finish(123)
    first, second = packer.out
    assert first.properties.headers == {pack.PACK_HEADER: 2, "BCC": ["b"], SENT_AT_HEADER: 123}
    assert second.properties is DELIVERY_PROPERTIES


def test_a_message_alone_goes_after_what_was_added_before_it() -> None:
    packer = pack.Packer(256)
    packer.add("a", sse(1))
    packer.add("b", sse(1))
    notice = Publish(DELIVER.name, "a", sse(2), DELIVERY_PROPERTIES)
    packer.alone(notice)
    packer.add("a", sse(3))
    packer.flush()
    assert [u for u, _ in records_of(packer)] == ["a", "b", "a", "a"]
    assert packer.out[1] is notice
