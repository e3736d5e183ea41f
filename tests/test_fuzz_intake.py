"""Fuzzing what ssehub processes consume, on a real broker and a real dispatcher
and edge: random and mutated bodies, routing keys and properties, sent as raw
AMQP frames (bytes no client library would send). The processes never die,
every message is acked or dead-lettered (exactly as many dead letters as the
parser finds faults), and streams only ever receive well-formed events.

``SSEHUB_FUZZ_MESSAGES`` raises the count for a longer run (default 2,000);
``SSEHUB_FUZZ_SEED`` replays one run.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pamqp import commands as spec
from ssehub import topology
from ssehub.dispatcher.intake import sort_batch
from ssehub.dispatcher.main import running_dispatcher
from ssehub.fastpath.receiver import UNDECODABLE
from ssehub.schema import EVENT_NAME, dump_body
from ssehub.sse import well_formed

from tests.raw_amqp import RawMessage, properties, publish_raw
from tests.sse import open_stream
from tests.support import (
    make_settings,
    publisher_of,
    queue_depth,
    rabbitmq_vhost,
    running_edge,
    uid,
)
from tests.unit.dispatcher.delivered import delivered

COUNT = int(os.environ.get("SSEHUB_FUZZ_MESSAGES", "2000"))
SEED = int(os.environ.get("SSEHUB_FUZZ_SEED", random.randrange(1 << 30)))
LIMITS = (256 * 1024, 1 << 20)

TOKENS = [
    b"\\ud83d", b"\\udfff", b"\\ud83d\\ude00", b"12345678901234567890123", b"1e400", b"-1e999",
    b"NaN", b"Infinity", b'"', b"\\", b"\n", b"\r", b"\x00", b"\\u0000", b"[" * 1100, b"{",
    b"}", b"\xff", b"\xc3\x28", b"\xed\xa0\xbd", b'"\xe2\x80\xa8"', b"null", b"true", b"[]",
    b'"id: 99\\nevent: x"', b'"x\\nid: 999999"', b"\\n\\n", b"0" * 25, b",", b":",
]  # fmt: skip
ROUTING_KEYS = [
    b"user.{u}", b"conversation.{c}", b"members.{c}", b"control.{u}", b"batch", b"broadcast",
    b"ssehub.dispatch", b"ssehub.dispatch.0", b"user.", b"user", b"x.y", b"user.a b",
    b"user.\xff{u}", b"", b"user.{u}\x00", b"control.", b"members.\xed\xa0\xbd",
]  # fmt: skip
INTERNAL_HEADERS = [b"x-ssehub-forward", b"x-ssehub-presence", b"x-ssehub-route",
                    b"x-ssehub-notice", b"x-ssehub-probe", b"x-delivery-count"]  # fmt: skip


def seeds(u: str, c: str) -> list[tuple[bytes, bytes]]:
    """Valid messages of every kind (routing key, body), to mutate."""
    docs: list[tuple[str, object]] = [
        (f"user.{u}", {"event": "message:new", "data": {"text": "hi", "n": 1}, "id": "k1"}),
        (f"user.{u}", {"event": "e", "data": [1, "two", None, {"x": 12345678901234567890123}]}),
        (f"conversation.{c}", {"event": "e", "data": "x", "exclude": [u], "ephemeral": True}),
        (f"members.{c}", {"op": "set", "users": [u, "v"]}),
        (f"control.{u}", {"op": "disconnect", "reason": "bye"}),
        (f"control.{u}", {"op": "revoke", "before": 1000}),
        ("batch", [{"user": u, "event": "e", "data": 1},
         {"users": [u, "w"], "event": "e", "data": 2},
         {"conversation": c, "event": "e", "data": 3, "exclude": [u]},
         {"members": c, "op": "add", "users": ["z"]}, {"control": u, "op": "disconnect"}]),
    ]  # fmt: skip
    return [(rk.encode(), dump_body(d)) for rk, d in docs]


def mutate(rng: random.Random, body: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(len(body) + 1)
        choice = rng.random()
        if choice < 0.45:
            body = body[:where] + rng.choice(TOKENS) + body[where:]
        elif choice < 0.7 and body:
            flip = rng.randrange(len(body))
            body = body[:flip] + bytes([rng.randrange(256)]) + body[flip + 1 :]
        elif choice < 0.8:
            body = body[:where]
        elif choice < 0.9:
            body = rng.randbytes(rng.randrange(64))
        # else: unchanged (valid messages flow between the broken ones)
    return body


def fuzz_messages(rng: random.Random, n: int) -> Iterator[tuple[RawMessage, object]]:
    """(what is published, what the dispatcher should make of its properties)."""
    users = [uid("fz") for _ in range(5)]
    convs = [uid("fzc") for _ in range(3)]
    for i in range(n):
        u, c = rng.choice(users), rng.choice(convs)
        rk, body = rng.choice(seeds(u, c))
        shape = rng.random()  # a third valid, a third a bad body, a third anything
        if shape > 1 / 3:
            body = mutate(rng, body)
        if shape > 2 / 3:
            rk = rng.choice(ROUTING_KEYS).replace(b"{u}", u.encode()).replace(b"{c}", c.encode())
        roll = rng.random()
        headers: list[tuple[bytes, bytes]] | None = None
        message_id: bytes | None = f"fz-{i}".encode() if roll < 0.5 else None
        if roll > 0.8:
            headers = [(rng.choice(INTERNAL_HEADERS), rng.choice([b"1", b"caps", b"\xff"]))]
        if 0.7 < roll <= 0.8:
            message_id = rng.choice([b"\xff\xfe", b"ok-\x00", "é".encode(), b"\xed\xa0\xbd"])
        flags, props = properties(message_id=message_id, headers=headers)
        yield RawMessage(b"sse.events", rk, body, flags, props), _decoded(message_id, headers)


def _decoded(
    message_id: bytes | None, headers: list[tuple[bytes, bytes]] | None
) -> spec.Basic.Properties:
    """The properties as the receiver hands them over: pamqp's decoding (a
    string value that is not UTF-8 stays bytes; a name or a short string that
    is not UTF-8 fails it, so UNDECODABLE)."""
    try:
        return spec.Basic.Properties(
            message_id=message_id.decode() if message_id is not None else None,
            headers={k.decode(): _value(v) for k, v in headers} if headers else None,
        )
    except UnicodeDecodeError:
        return UNDECODABLE


def _value(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def expected_dead(messages: list[tuple[RawMessage, object]]) -> int:
    """Dead letters the parser finds in these messages, each sorted on its own."""
    total = 0
    for raw, props in messages:
        rk = raw.routing_key.decode("utf-8", "surrogateescape")
        one = delivered(rk, raw.body, properties=props)  # type: ignore[arg-type]
        total += len(sort_batch([one], *LIMITS, 0.0).dead)
    return total


@pytest.fixture(scope="module")
def fuzz_vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


async def test_fuzzed_messages_never_stop_the_hub(fuzz_vhost: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    messages = list(fuzz_messages(rng, COUNT))
    dead = expected_dead(messages)
    settings = make_settings(fuzz_vhost, f"sqlite:///{tmp_path / 'fuzz.db'}", presence=True)
    watcher = uid("watch")
    async with (
        running_dispatcher(settings) as dispatcher,
        running_edge(settings) as (url, app),
        publisher_of(settings) as publisher,
        open_stream(url, _token(settings, watcher)) as (_, client),
    ):
        assert (await client.next()).event == "connected"
        node = app.state.edge.node.node_id
        await publish_raw(fuzz_vhost, [m for m, _ in messages])
        # the edge's own queue, fuzzed too: only the dispatcher's role may write
        # there, but an edge validates what it writes to a browser all the same
        await publish_raw(fuzz_vhost, list(edge_fuzz(rng, node, watcher)))
        await publisher.send_event_to_user(watcher, "after", 1)
        async with asyncio.timeout(60):
            event = await client.next()
            while event.event != "after":
                _check_event(event)
                event = await client.next()
            while queue_depth(fuzz_vhost, topology.DISPATCH.name):
                await asyncio.sleep(0.1)  # wait-ok: polling the broker's count
        assert dispatcher.running is not None and not dispatcher.running.done()
        assert not client.ended.is_set(), "the stream was closed"
    assert queue_depth(fuzz_vhost, topology.DEAD.name) == dead, f"seed {SEED}"


def edge_fuzz(rng: random.Random, node: str, user: str) -> Iterator[RawMessage]:
    for _ in range(300):
        body = mutate(rng, b"id: 7\nevent: e\ndata: {}\n\n")
        if well_formed(body):
            continue  # a well-formed event from the dispatcher's exchange is trusted
        headers = rng.choice(
            [None, [(b"x-ssehub-pack", b"1")], [(b"x-ssehub-notice", b"control")],
             [(b"x-ssehub-notice", b"receipt"), (b"x-ssehub-user", user.encode())],
             [(b"x-ssehub-notice", b"caps")], [(b"x-ssehub-notice", b"joined")],
             [(b"x-ssehub-sent-at", b"x")]]
        )  # fmt: skip
        flags, props = properties(headers=headers)
        target = rng.choice([(b"ssehub.nodes", node.encode()), (b"ssehub.nodes", b"all")])
        yield RawMessage(*target, body, flags, props)


def _check_event(event: object) -> None:
    name = getattr(event, "event", "")
    assert EVENT_NAME.fullmatch(name), name
    orjson.loads(getattr(event, "data", "null"))


def _token(settings: object, user: str) -> str:
    from ssehub.edge.auth import mint_token

    return mint_token(settings, user)  # type: ignore[arg-type]
