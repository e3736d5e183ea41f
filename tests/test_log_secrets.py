"""No token in any log line: a real edge and dispatcher, as processes, with JSON
logs at DEBUG, see tokens by every method, good, bad and expired; then every
line both wrote is read back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from ssehub.edge.auth import mint_token
from ssehub.publisher import Publisher

from tests.faults.procs import process_env
from tests.sse import open_stream
from tests.support import SECRET, make_settings, rabbitmq_vhost, uid

FIELDS = ("time", "level", "logger", "message")


@dataclass
class Child:
    """``python -m ssehub.cli ...``, stdout and stderr into one log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, args: list[str], env: dict[str, str], log: Path) -> Child:
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ssehub.cli", *args], env=env, stdout=out, stderr=out
            )
        return cls(popen, log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_log(self, needle: str, count: int = 1, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while self.text().count(needle) < count:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.log.name}: exited:\n{self.text()[-3000:]}")
                await asyncio.sleep(0.05)  # wait-ok: polling the child's log file

    async def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            while self.popen.poll() is None:
                await asyncio.sleep(0.05)  # wait-ok: polling a child's exit
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until_ready(url: str, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)  # wait-ok: polling the readiness probe


@pytest.fixture
def vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:  # ours alone: no other dispatcher in it
        yield url


@dataclass
class Services:
    amqp: str
    edge_url: str
    edge: Child
    dispatcher: Child


@pytest.fixture
async def services(vhost: str, tmp_path: Path) -> AsyncIterator[Services]:
    env = process_env(
        vhost,
        f"sqlite:///{tmp_path / 'ssehub.db'}",
        log_level="DEBUG",
        log_format="json",
        drain_seconds="1",
        reconnect_max_delay="1",
    )
    port = free_port()
    dispatcher = Child.start(["dispatcher"], env, tmp_path / "dispatcher.log")
    edge = Child.start(
        ["edge", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "edge.log"
    )
    try:
        await dispatcher.wait_log("connected to RabbitMQ")
        await until_ready(f"http://127.0.0.1:{port}")
        yield Services(vhost, f"http://127.0.0.1:{port}", edge, dispatcher)
    finally:
        edge.kill()
        dispatcher.kill()


def parse_lines(child: Child) -> list[dict[str, Any]]:
    objects = []
    for number, line in enumerate(child.text().split("\n"), 1):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"{child.log.name}:{number} is not JSON: {line!r}")
        assert isinstance(obj, dict), line
        assert all(isinstance(obj.get(f), str) for f in FIELDS), line
        objects.append(obj)
    return objects


async def test_no_token_material_in_any_log_line(services: Services) -> None:
    settings = make_settings(services.amqp, "sqlite://")
    users = [uid("q"), uid("b"), uid("x")]
    good = [mint_token(settings, u) for u in users]
    bad = jwt.encode({"sub": uid()}, "not-the-secret-" * 4, algorithm="HS256")
    expired = jwt.encode({"sub": users[0], "exp": int(time.time()) - 600}, SECRET, "HS256")
    tokens = [*good, bad, expired]

    refused = {}
    for name, token, how in (
        ("bad", bad, "bearer"),
        ("expired", expired, "query"),
        ("missing", None, "query"),
        ("garbage", "opaque-not-a-jwt-secret", "x-auth-token"),
    ):
        async with open_stream(services.edge_url, token, how=how) as (resp, _):
            assert resp.status_code == 401
            refused[name] = json.loads(await resp.aread())["error"]
    assert refused == {
        "bad": "invalid_token",
        "expired": "token_expired",
        "missing": "missing_token",
        "garbage": "invalid_token",
    }

    async with contextlib.AsyncExitStack() as streams:
        clients = []
        for token, how in zip(good, ("query", "bearer", "x-auth-token"), strict=True):
            resp, client = await streams.enter_async_context(
                open_stream(services.edge_url, token, how=how)
            )
            assert resp.status_code == 200
            assert (await client.next()).event == "connected"
            clients.append(client)
        async with Publisher(services.amqp) as publisher:
            for user in users:
                for i in range(3):
                    await publisher.send_event_to_user(user, "note", {"i": i, "token": "no"})
            await publisher.publish(f"user.{users[0]}", b"{not json")  # a dead letter
        for client in clients:
            got = await client.take(3, timeout=30, events="note")
            assert [e.json["i"] for e in got] == [0, 1, 2]
    await services.dispatcher.wait_log("dead-lettering")
    await services.edge.wait_log("closed (disconnect)", count=len(users))
    # uvicorn re-raises the SIGTERM it caught once it has shut down
    assert await services.edge.stop() in (0, -signal.SIGTERM)
    assert await services.dispatcher.stop() == 0

    edge_lines, dispatcher_lines = parse_lines(services.edge), parse_lines(services.dispatcher)
    everything = services.edge.text() + services.dispatcher.text()
    assert "eyJ" not in everything  # no JWT (their header segment), whichever
    assert SECRET not in everything
    assert "opaque-not-a-jwt-secret" not in everything
    for token in tokens:
        assert token not in everything
        _header, payload, signature = token.split(".")
        assert payload not in everything
        assert signature not in everything

    # and the lines that matter say what happened, with their fields
    ours = [o for o in edge_lines if o["logger"] == "ssehub.edge"]
    reasons = sorted(o["reason"] for o in ours if o.get("status") == 401)
    assert reasons == ["invalid_token", "invalid_token", "missing_token", "token_expired"]
    opened = {o["user"] for o in ours if " opened for " in o["message"]}
    assert opened == set(users)
    closed = [o for o in ours if o.get("reason") == "disconnect"]
    assert {o["user"] for o in closed} == set(users) and all(o["stream"] for o in closed)
    access = [o for o in edge_lines if o["logger"] == "uvicorn.access"]
    assert any("token=REDACTED" in o["path"] for o in access)
    assert sorted(o["status"] for o in access if o["status"] == 401) == [401] * 4
    [dead] = [o for o in dispatcher_lines if o["message"].startswith("dead-lettering")]
    assert dead["routing_key"] == f"user.{users[0]}"
    assert dead["level"] == "WARNING" and "not valid" in dead["reason"]
    assert any(o["level"] == "DEBUG" for o in dispatcher_lines)  # DEBUG really was on
