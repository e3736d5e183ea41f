"""The dispatcher's HTTP port: probes, active/standby, exact metric values."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ssehub.batch import ItemError, parse_batch
from ssehub.config import Settings
from ssehub.dispatcher.activity import PROBE_EVERY, WINDOW, Activity
from ssehub.dispatcher.main import running_dispatcher
from ssehub.dispatcher.metrics import DEAD_REASONS, dead_letter_reason
from ssehub.dispatcher.service import Dispatcher
from ssehub.errors import InvalidMessage
from ssehub.schema import parse_message

from tests.support import make_settings, rabbitmq_vhost, uid


@pytest.fixture
def own_amqp(broker_url: str) -> Iterator[str]:
    """A vhost of this test's own: the session's stack has a dispatcher of its
    own, which would be the active consumer of the shared vhost's queue, and
    each test here has a store of its own (one deployment, one store)."""
    with rabbitmq_vhost(broker_url) as url:
        yield url


@pytest.fixture
def settings(own_amqp: str, tmp_path: Path) -> Settings:
    return make_settings(own_amqp, f"sqlite:///{tmp_path / 'd.db'}")


@contextlib.asynccontextmanager
async def dispatcher_at(settings: Settings, name: str) -> AsyncIterator[tuple[Dispatcher, str]]:
    async with running_dispatcher(settings, name, port=0) as d:
        async with asyncio.timeout(15):
            await d.supervisor.ready.wait()
        yield d, f"http://127.0.0.1:{d.http_port}"


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


async def scrape(base: str) -> dict[str, float]:
    """``name{label="v"}`` → value, from /metrics."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families((await get(base + "/metrics")).text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def until_role(base: str, role: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            r = await get(base + "/readyz")
            if r.status_code == 200 and r.json()["status"] == role:
                return
            await asyncio.sleep(0.2)  # wait-ok: the role is learnt from a probe's delivery


async def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange("sse.events")
        for routing_key, body in messages:
            await ex.publish(aio_pika.Message(body), routing_key)
    finally:
        await conn.close()


async def test_healthz_readyz_metrics_answer(settings: Settings) -> None:
    async with dispatcher_at(settings, "one") as (_, base):
        health = await get(base + "/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        await until_role(base, "active")  # alone: its own probe reaches it
        metrics = await get(base + "/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        values = await scrape(base)
        assert values["ssehub_dispatcher_active"] == 1
        assert values["ssehub_dispatcher_queue_ready"] == 0
        missing = await get(base + "/nope")
        assert missing.status_code == 404


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_one_active_one_standby_then_failover(
    broker_url: str, tmp_path: Path, queue_type: str
) -> None:
    # a vhost per queue type: a queue keeps the type it was declared with
    with rabbitmq_vhost(broker_url) as amqp:
        settings = make_settings(amqp, f"sqlite:///{tmp_path / 'd.db'}", queue_type=queue_type)
        await _active_standby_failover(settings)


async def _active_standby_failover(settings: Settings) -> None:
    async with contextlib.AsyncExitStack() as first_alive:
        _, first = await first_alive.enter_async_context(dispatcher_at(settings, "first"))
        await until_role(first, "active")
        async with dispatcher_at(settings, "second") as (second_d, second):
            await publish(settings.rabbitmq_url, [(f"user.{uid()}", b'{"event":"x","data":1}')])
            await until_role(first, "active")
            # The standby probed at start; the probe, like everything, went to the active one.
            assert (await get(second + "/readyz")).json() == {"status": "standby", "partitions": []}
            assert (await get(first + "/readyz")).json() == {"status": "active", "partitions": [0]}
            assert (await scrape(second))["ssehub_dispatcher_active"] == 0
            assert (await scrape(first))["ssehub_dispatcher_active"] == 1
            await first_alive.aclose()  # the active one leaves: RabbitMQ promotes the standby
            await until_role(second, "active")
            assert (await scrape(second))["ssehub_dispatcher_active"] == 1
            assert second_d.batches == 0  # learnt from its own probe, not from traffic


async def test_readyz_503_when_rabbitmq_is_unreachable(settings: Settings) -> None:
    wrong = settings.model_copy(update={"rabbitmq_url": "amqp://guest:guest@127.0.0.1:1/"})
    async with running_dispatcher(wrong, "cut-off", port=0) as d:
        base = f"http://127.0.0.1:{d.http_port}"
        assert (await get(base + "/healthz")).status_code == 200
        ready = await get(base + "/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "problems": ["rabbitmq: not connected"]}
        values = await scrape(base)  # still answers, without the queue depth
        assert values["ssehub_dispatcher_active"] == 0


async def test_readyz_503_when_the_store_is_unreachable(own_amqp: str, tmp_path: Path) -> None:
    good = make_settings(own_amqp, f"sqlite:///{tmp_path / 'd.db'}")
    async with dispatcher_at(good, "store-gone") as (_, base):
        await until_role(base, "active")
        (tmp_path / "d.db").rename(tmp_path / "moved.db")
        (tmp_path / "d.db").mkdir()  # the path is now a directory: no database opens there
        ready = await get(base + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["problems"] == [
            f"store: cannot open the SQLite database '{tmp_path / 'd.db'}' "
            "(unable to open database file)"
        ]


async def test_exact_values_after_3_good_and_1_bad(settings: Settings) -> None:
    user = uid()
    good = (f"user.{user}", b'{"event":"x","data":1}')
    async with dispatcher_at(settings, "counted") as (_, base):
        await until_role(base, "active")
        await publish(settings.rabbitmq_url, [good, good, good, (f"user.{user}", b'{"data":1}')])
        async with asyncio.timeout(20):
            while True:  # until all 4 messages were taken up, and every batch acked
                values = await scrape(base)
                taken = values["ssehub_dispatcher_batch_messages_sum"]
                acked = values["ssehub_dispatcher_batches_total"]
                if taken == 4 and acked == values["ssehub_dispatcher_batch_messages_count"]:
                    break
                await asyncio.sleep(0.1)  # wait-ok: batches are acked in the background
        assert values["ssehub_dispatcher_events_accepted_total"] == 3
        dead = {
            k: v for k, v in values.items() if k.startswith("ssehub_dispatcher_dead_letters_total")
        }
        assert dead == {
            f'ssehub_dispatcher_dead_letters_total{{reason="{r}"}}': (1 if r == "event" else 0)
            for r in DEAD_REASONS
        }
        assert 1 <= acked <= 4
        for name in ("commit", "publish", "ack"):
            assert values[f"ssehub_dispatcher_{name}_seconds_count"] == acked
        assert values["ssehub_dispatcher_queue_ready"] == 0
        assert values["ssehub_dispatcher_active"] == 1


async def test_bad_requests_are_answered_or_dropped(settings: Settings) -> None:
    async with dispatcher_at(settings, "hostile") as (d, _):
        assert d.http_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", d.http_port)
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 405 ")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", d.http_port)
        writer.write(b"garbage\r\n\r\n")
        assert await reader.read() == b""  # not HTTP: closed without an answer
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", d.http_port)
        writer.write(b"GET /" + b"x" * 20000)
        assert await reader.read() == b""  # a head beyond the limit: closed
        writer.close()


BAD_BODIES = [
    ("user.u", b"not json", "json"),
    ("user.u", b"[1]", "json"),
    ("user.u", b'{"data": 1}', "event"),
    ("user.u", b'{"event": "bad name!", "data": 1}', "event"),
    ("user.u", b'{"event": "x"}', "data"),
    ("user.u", b'{"event": "x", "data": 1, "id": ""}', "id"),
    ("user.u", b'{"event": "x", "data": 1, "extra": 1}', "field"),
    ("user.u", b'{"event": "x", "data": 1, "ephemeral": 1}', "field"),
    ("user.u", b'{"event": "x", "data": 1, "receipt": true, "ephemeral": true}', "field"),
    ("user.u", b'{"event": "x", "data": 1, "exclude": ["a"]}', "members"),
    ("user.u", b'{"event": "x", "data": "' + b"y" * 2000 + b'"}', "size"),
    ("user", b'{"event": "x", "data": 1}', "routing_key"),
    ("user.", b'{"event": "x", "data": 1}', "routing_key"),
    ("order:x.y", b'{"event": "x", "data": 1}', "routing_key"),
    ("members.c", b'{"op": "merge", "users": []}', "members"),
    ("members.c", b'{"op": "add"}', "members"),
    ("members.c", b'{"op": "add", "users": [1]}', "members"),
    ("control.u", b'{"op": "explode"}', "control"),
    ("control.u", b'{"op": "revoke", "before": "soon"}', "control"),
    ("control.u", b'{"op": "disconnect", "reason": ""}', "control"),
]


@pytest.mark.parametrize(("routing_key", "body", "reason"), BAD_BODIES)
def test_dead_letter_reason_is_the_field_named(routing_key: str, body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as exc:
        parse_message(routing_key, body, None, 1024, time.time())
    assert dead_letter_reason(str(exc.value)) == reason


def test_dead_letter_reason_of_a_batch_item_is_its_field() -> None:
    body = b'[{"user": "a", "data": 1}, {"user": "b", "event": "x"}, {"event": "x", "data": 1}]'
    items = parse_batch(body, None, 4096, 0)
    errors = [i for i in items if isinstance(i, ItemError)]
    assert [dead_letter_reason(e.reason) for e in errors] == ["event", "data", "routing_key"]
    with pytest.raises(InvalidMessage) as exc:
        parse_batch(b"[" + b"1," * 3000 + b"1]", None, 1024, 0)
    assert dead_letter_reason(str(exc.value)) == "size"


def test_dead_letter_reason_of_anything_else_is_other() -> None:
    assert dead_letter_reason("presence: malformed (x)") == "other"
    assert dead_letter_reason("no colon at all") == "other"
    assert {dead_letter_reason(f"{w}: x") for w in ("a", "b[0]", "")} == {"other"}


def test_activity_rule_with_a_clock() -> None:
    now = [100.0]
    activity = Activity(clock=lambda: now[0])
    assert activity.tick() is True  # nothing delivered yet: probe
    assert activity.active(holding=False) is False
    assert activity.active(holding=True) is True  # unacked deliveries in hand
    activity.seen = True  # a delivery (a probe or traffic) arrived
    assert activity.active(holding=False) is True
    assert activity.tick() is False  # just heard from the broker: no probe due
    now[0] += PROBE_EVERY
    assert activity.tick() is True  # quiet for PROBE_EVERY: probe again
    now[0] += WINDOW - PROBE_EVERY - 0.1
    assert activity.active(holding=False) is True
    now[0] += 0.2
    assert activity.active(holding=False) is False  # no delivery within WINDOW: standby
    activity.seen = True
    assert activity.active(holding=False) is True
    activity.lost()  # a new connection: what the old one received says nothing
    assert activity.active(holding=False) is False


async def test_cli_dispatcher_port(own_amqp: str, tmp_path: Path) -> None:
    """``ssehub dispatcher --port N`` serves the port; SIGTERM ends it cleanly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")} | {
        "SSEHUB_RABBITMQ_URL": own_amqp,
        "SSEHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SSEHUB_PRESENCE": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ssehub.cli", "dispatcher", "--port", str(port), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await get(base + "/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.2)  # wait-ok: the process is starting up
        assert (await get(base + "/healthz")).json() == {"status": "ok"}
        assert "ssehub_dispatcher_active" in (await get(base + "/metrics")).text
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
