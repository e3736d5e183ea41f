"""ssehub.fastpath.marshal: hand-packed publish frames, byte for byte what pamqp packs."""

from __future__ import annotations

from typing import Any

import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from ssehub import topology
from ssehub.fastpath.marshal import Publish, marshal_publishes


def test_publish_frames_marshal_like_pamqp() -> None:
    props = spec.Basic.Properties(headers={"x-ssehub-error": "bad"}, delivery_mode=2)
    messages = [
        Publish("sse.deliver", "u-1", b"id: 1\n\n", topology.DELIVERY_PROPERTIES),
        Publish("", "sse.dead", b"x" * 25, props),  # split over three body frames of 10
        Publish("sse.deliver", "ü" * 10, b"", topology.DELIVERY_PROPERTIES),
    ]
    data = marshal_publishes(3, 10, messages)
    expected: list[Any] = []
    for exchange, key, body, properties in messages:
        expected.append(spec.Basic.Publish(exchange=exchange, routing_key=key))
        expected.append(ContentHeader(0, len(body), properties))
        expected += [ContentBody(body[i : i + 10]) for i in range(0, len(body), 10)]
    got: list[Any] = []  # pamqp's frame union: the checks below narrow by type
    while data:
        used, channel, frame = pamqp.frame.unmarshal(data)
        assert channel == 3
        got.append(frame)
        data = data[used:]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert type(g) is type(e)
        if isinstance(e, ContentHeader):
            assert (g.body_size, dict(g.properties)) == (e.body_size, dict(e.properties))
        elif isinstance(e, ContentBody):
            assert g.value == e.value
        else:
            assert dict(g) == dict(e)


def test_the_bytes_are_pamqps_bytes() -> None:
    message = Publish("sse.deliver", "u-1", b"id: 1\n\n", topology.DELIVERY_PROPERTIES)
    expected = b"".join(
        pamqp.frame.marshal(frame, 7)
        for frame in (
            spec.Basic.Publish(exchange="sse.deliver", routing_key="u-1"),
            ContentHeader(0, 7, topology.DELIVERY_PROPERTIES),
            ContentBody(b"id: 1\n\n"),
        )
    )
    assert marshal_publishes(7, 1 << 17, [message]) == expected


def test_no_messages_no_bytes() -> None:
    assert marshal_publishes(1, 10, []) == b""


@pytest.mark.parametrize(("exchange", "key"), [("x" * 256, "u"), ("sse.deliver", "ü" * 128)])
def test_names_longer_than_a_shortstr_are_refused(exchange: str, key: str) -> None:
    message = Publish(exchange, key, b"", topology.DELIVERY_PROPERTIES)
    with pytest.raises(ValueError, match="at most 255 bytes"):
        marshal_publishes(1, 10, [message])
