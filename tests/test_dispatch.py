"""The dispatcher against real RabbitMQ: bad input, dedupe, raw AMQP publishers."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import aio_pika
import orjson
import pytest

from tests.sse import open_stream
from tests.support import Stack, dead_letter_queue, uid


async def raw_publish(url: str, routing_key: str, body: bytes, **props: object) -> None:
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange("sse.events")
        await ex.publish(aio_pika.Message(body, **props), routing_key)  # type: ignore[arg-type]
    finally:
        await conn.close()


BAD = [
    ("user.{u}", b"not json", "body: not valid UTF-8 JSON"),
    ("user.{u}", b"\xff\xfe\x00", "body: not valid UTF-8 JSON"),
    ("user.{u}", b"[1,2]", "body: must be a JSON object, got array"),
    ("user.{u}", b'{"data": 1}', "event: missing"),
    ("user.{u}", b'{"event": "x"}', "data: missing"),
    ("user.{u}", b'{"event": "bad name!", "data": 1}', "event: must be 1-64 characters"),
    ("user.{u}", b'{"event": "' + b"x" * 65 + b'", "data": 1}', "event: must be 1-64"),
    ("user.{u}", b'{"event": 5, "data": 1}', "event: must be 1-64"),
    ("user.{u}", b'{"event": "x", "data": 1, "id": ""}', "id: must be a string of 1-128"),
    (
        "user.{u}",
        b'{"event": "x", "data": 1, "ephemeral": "yes"}',
        "ephemeral: must be true or false",
    ),
    ("user.{u}", b'{"event": "x", "data": 1, "exclude": ["a"]}', "exclude: only conversation"),
    ("user.{u}", b'{"event": "x", "data": 1, "extra": 1}', "extra: unknown field"),
    ("conversation.{u}", b'{"event": "x", "data": 1, "exclude": "a"}', "exclude: must be an array"),
    ("members.{u}", b'{"op": "merge", "users": []}', 'op: must be "set", "add" or "remove"'),
    ("members.{u}", b'{"op": "add"}', "users: missing"),
    ("members.{u}", b'{"op": "add", "users": ["has space"]}', "users[0]: character ' '"),
    ("members.{u}", b'{"op": "add", "users": [1]}', "users[0]: must be a string"),
    ("control.{u}", b'{"op": "explode"}', 'op: must be "disconnect" or "revoke"'),
    ("control.{u}", b'{"op": "revoke", "before": 4000000000}', "before: more than a day in the"),
    ("control.{u}", b'{"op": "revoke", "before": "soon"}', "before: must be unix seconds"),
    ("control.{u}", b'{"op": "disconnect", "reason": ""}', "reason: must be a string of 1-128"),
    ("user.{u}", b'{"event": "x", "data": 1, "ephemeral": true, "receipt": true}', "receipt:"),
    ("user.", b'{"event": "x", "data": 1}', "routing key user.<id>: must be 1-128 bytes"),
    ("user", b'{"event": "x", "data": 1}', "routing key 'user': expected"),
    ("order.{u}", b'{"event": "x", "data": 1}', "routing key 'order."),
    ("user.{u}", b'{"event": "x", "data": ' + b"[" * 2000 + b"]" * 2000 + b"}", "body: nested too"),
    (
        "user.{u}",
        b'{"event": "x", "data": "' + b"y" * (256 * 1024) + b'"}',
        "exceeds the limit of 262144",
    ),
    ("user.{u}", b'{"event": "x", "data": NaN}', "body: not valid"),
    (
        "user.{u}",
        b'{"event": "x", "data": ['
        + b"[" * 5000
        + b"1"
        + b"]" * 5000
        + b", 123456789012345678901]}",
        "body: nested too deep",
    ),
    ("user.{u}", b'{"event": "x", "data": 1} trailing', "body: not valid"),
]


async def test_every_bad_message_is_dead_lettered_with_its_reason(stack: Stack) -> None:
    user = uid()
    async with (
        dead_letter_queue(stack.settings.rabbitmq_url) as dead,
        open_stream(stack.edge, stack.token(user)) as (_, client),
    ):
        await client.next()
        # interleave good and bad: every good one must still flow, in order
        for i, (rk, body, _) in enumerate(BAD):
            await raw_publish(
                stack.settings.rabbitmq_url, rk.format(u=user), body, message_id=f"bad-{user}-{i}"
            )
            await stack.publisher.send_event_to_user(user, "good", i)
        got = await client.take(len(BAD))
        assert [(e.seq, e.json) for e in got] == [(i + 1, i) for i in range(len(BAD))]
        reasons: dict[str, str] = {}
        async with asyncio.timeout(10):
            while len(reasons) < len(BAD):
                msg = await dead.get()
                if msg.message_id and msg.message_id.startswith(f"bad-{user}-"):
                    reasons[msg.message_id] = str((msg.headers or {})["x-ssehub-error"])
        for i, (rk, _body, reason) in enumerate(BAD):
            got_reason = reasons[f"bad-{user}-{i}"]
            assert reason in got_reason, (rk, got_reason)


async def test_dead_letter_keeps_body_and_routing_key(stack: Stack) -> None:
    user = uid()
    async with dead_letter_queue(stack.settings.rabbitmq_url) as dead:
        await raw_publish(
            stack.settings.rabbitmq_url,
            f"user.{user}",
            b"{oops",
            message_id=f"keep-{user}",
            headers={"x-mine": "1"},
        )
        async with asyncio.timeout(10):
            while True:
                msg = await dead.get()
                if msg.message_id == f"keep-{user}":
                    break
        assert msg.body == b"{oops"
        assert msg.headers["x-ssehub-routing-key"] == f"user.{user}"
        assert msg.headers["x-mine"] == "1"


async def test_big_integers_and_unicode_reach_clients_exactly(stack: Stack) -> None:
    user = uid()
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await client.next()
        body = (
            '{"event": "n", "data": {"big": 123456789012345678901234567890, "s": "h\u00e9\u2028"}}'
        )
        await raw_publish(stack.settings.rabbitmq_url, f"user.{user}", body.encode())
        ev = await client.next()
        # exact digits; U+2028 escaped so line-splitting clients keep one data line
        assert ev.data == '{"big":123456789012345678901234567890,"s":"hé\\u2028"}'
        assert json.loads(ev.data) == {"big": 123456789012345678901234567890, "s": "hé\u2028"}


async def test_retries_with_one_key_make_one_event(stack: Stack) -> None:
    user = uid()
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await client.next()
        for _ in range(3):  # a publisher retrying after lost confirms
            await stack.publisher.send_event_to_user(user, "once", 1, key=f"k-{user}")
        # the AMQP message_id is the key when the body has none
        for _ in range(2):
            await raw_publish(
                stack.settings.rabbitmq_url,
                f"user.{user}",
                b'{"event": "mid", "data": 2}',
                message_id=f"m-{user}",
            )
        await stack.publisher.send_event_to_user(user, "end", 3)
        got = await client.until(lambda e: e.event == "end")
        assert [(e.event, e.seq) for e in got] == [("once", 1), ("mid", 2), ("end", 3)]


async def test_conversation_key_dedupes_the_whole_fanout(stack: Stack) -> None:
    conv, a, b = uid("conv"), uid("a"), uid("b")
    await stack.publisher.set_members(conv, [a, b])
    async with open_stream(stack.edge, stack.token(a)) as (_, client):
        await client.next()
        for _ in range(2):
            await stack.publisher.broadcast_to_conversation(conv, "m", 1, key=f"k-{conv}")
        await stack.publisher.send_event_to_user(a, "end", None)
        got = await client.until(lambda e: e.event == "end")
        assert [(e.event, e.seq) for e in got] == [("m", 1), ("end", 2)]


def _amqp_publish_args(url: str, routing_key: str, body: str, message_id: str) -> list[str]:
    parts = urlsplit(url)
    vhost = parts.path[1:] or "/"
    return [
        "amqp-publish",
        "--server",
        parts.hostname or "127.0.0.1",
        "--port",
        str(parts.port or 5672),
        "--vhost",
        vhost,
        "--username",
        parts.username or "guest",
        "--password",
        parts.password or "guest",
        "--exchange",
        "sse.events",
        "--routing-key",
        routing_key,
        "--persistent",
        "--content-type",
        "application/json",
        "--body",
        body,
    ]


@pytest.mark.skipif(shutil.which("amqp-publish") is None, reason="amqp-tools not installed")
async def test_non_python_amqp_client_delivers(stack: Stack) -> None:
    user = uid()
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await client.next()
        body = orjson.dumps({"event": "message:new", "data": {"via": "amqp-publish"}, "id": uid()})
        args = _amqp_publish_args(stack.settings.rabbitmq_url, f"user.{user}", body.decode(), "")
        proc = await asyncio.create_subprocess_exec(*args)
        assert await proc.wait() == 0
        ev = await client.next()
        assert (ev.event, ev.seq, ev.json) == ("message:new", 1, {"via": "amqp-publish"})


async def test_ssehub_publish_cli_delivers(stack: Stack) -> None:
    conv, user = uid("conv"), uid()
    env = {
        "SSEHUB_RABBITMQ_URL": stack.settings.rabbitmq_url,
        "SSEHUB_QUEUE_TYPE": stack.settings.queue_type,
        "PATH": "/usr/bin:/bin",
    }
    cli = [sys.executable, "-m", "ssehub.cli"]

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *cli, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await client.next()
        await run("publish", "members", conv, "set", user)
        await run("publish", "conversation", conv, "message:new", '{"text": "hi"}')
        said = await run("publish", "user", user, "note", "42", "--key", f"k-{user}")
        assert said == f"published user.{user}: note (idempotency key k-{user})"
        got = await client.take(2)
        assert [(e.event, e.json) for e in got] == [("message:new", {"text": "hi"}), ("note", 42)]
    # bad input: a clear one-line error, non-zero exit
    proc = await asyncio.create_subprocess_exec(
        *cli,
        "publish",
        "user",
        user,
        "bad name!",
        "1",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().startswith("ssehub: event: must be 1-64 characters")
