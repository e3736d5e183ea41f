"""Test plumbing: real brokers, databases and uvicorn servers on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import jwt
import uvicorn
from fastapi import FastAPI
from ssehub.config import Settings
from ssehub.edge.app import create_app
from ssehub.edge.auth import mint_token
from ssehub.publisher import Publisher

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def signed(
    claims: dict[str, object], key: object = SECRET, alg: str = "HS256", *, expiring: bool = True
) -> str:
    """``claims`` signed as an identity provider would: with an ``exp`` an hour
    from now unless they have one (``expiring=False``: none, which edges refuse)."""
    if expiring and "exp" not in claims:
        claims = {**claims, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, key, alg)  # type: ignore[arg-type]


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def uid(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- RabbitMQ: one throwaway vhost per test session --------------------------
@contextlib.contextmanager
def rabbitmq_vhost(base_url: str) -> Iterator[str]:
    """A fresh vhost (so exchange and queue names never collide between runs),
    deleted afterwards. Needs rabbitmqctl for a local broker."""
    ctl = shutil.which("rabbitmqctl")
    parts = urlsplit(base_url)
    if ctl is None or parts.hostname not in ("127.0.0.1", "localhost"):
        yield base_url  # remote/containerised broker: it is ours alone already
        return
    vhost = f"ssehub-test-{uuid.uuid4().hex[:8]}"
    user = parts.username or "guest"
    subprocess.run([ctl, "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True)


# -- PostgreSQL: one throwaway database per test session ---------------------
@contextlib.asynccontextmanager
async def postgres_database(base_url: str) -> AsyncIterator[str]:
    import asyncpg

    name = f"ssehub_test_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(base_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(base_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def make_settings(amqp_url: str, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "rabbitmq_url": amqp_url,
        "database_url": database_url,
        "jwt_secret": SECRET,
        "reconnect_max_delay": 1.0,
        # presence events would interleave with what most tests assert exactly;
        # tests/test_presence.py turns it on
        "presence": False,
        # SSEHUB_TEST_QUEUE_TYPE=quorum runs a suite on quorum queues
        "queue_type": env("SSEHUB_TEST_QUEUE_TYPE", "classic"),
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# -- uvicorn on a real socket, in the test's loop ------------------------------
async def started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Until uvicorn has started ``server`` (running as ``task``); what ended
    the task instead, raised."""
    async with asyncio.timeout(15):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # wait-ok: polling uvicorn's started flag


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", http="httptools", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    app.state.uvicorn = server  # its connections, for tests that look at their buffers
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await started(server, task)
        yield f"http://127.0.0.1:{port}"
    finally:
        edge = getattr(app.state, "edge", None)
        if edge is not None:
            from ssehub.edge.lifecycle import close_all

            close_all(edge)
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def publisher_of(settings: Settings) -> AsyncIterator[Publisher]:
    """The bundled publisher on the settings' broker, closed afterwards."""
    publisher = Publisher(settings.rabbitmq_url)
    try:
        yield publisher
    finally:
        await publisher.close()


async def declare_topology(settings: Settings) -> None:
    """What a dispatcher of ``settings`` declares (edges and publishers declare
    none of it: they wait, or fail, until a dispatcher has)."""
    from ssehub import topology

    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        await topology.declare_deployment(
            await connection.channel(),
            settings.queue_type,
            settings.partitions,
            settings.dead_letter_max,
        )
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_edge(
    settings: Settings, *, declare: bool = True
) -> AsyncIterator[tuple[str, FastAPI]]:
    """An edge app served on a socket, ready (bound to RabbitMQ) when yielded.
    ``declare``: the topology first, as a dispatcher would (an edge waits for it)."""
    if declare:
        await declare_topology(settings)
    app = create_app(settings)
    async with serve(app) as url:
        async with asyncio.timeout(15):
            await app.state.edge.node.link.supervisor.ready.wait()
        yield url, app


@dataclass
class Stack:
    settings: Settings
    edges: list[str]
    apps: list[FastAPI]
    publisher: Publisher
    users: list[str] = field(default_factory=list)

    def token(self, user: str, **kw: object) -> str:
        return mint_token(self.settings, user, **kw)  # type: ignore[arg-type]

    @property
    def edge(self) -> str:
        return self.edges[0]


@contextlib.asynccontextmanager
async def dead_letter_queue(
    amqp_url: str,
) -> AsyncIterator[asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]]:
    """Consume ``sse.dead``; dead letters arrive on the yielded queue."""
    got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    conn = await aio_pika.connect(amqp_url)
    try:
        ch = await conn.channel()
        q = await ch.get_queue("sse.dead")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await got.put(message)

        await q.consume(on_message, no_ack=True)
        yield got
    finally:
        await conn.close()


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


CLI = [sys.executable, "-m", "ssehub.cli"]


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """``ssehub ARGS`` in a process of its own, with ``env`` over the
    environment less its SSEHUB_ variables: (exit code, what it printed)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=base | env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def list_queues(amqp_url: str, *columns: str) -> list[list[str]]:
    """``rabbitmqctl list_queues`` of the URL's vhost: one row per queue, the
    name first, then ``columns``."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None, "needs rabbitmqctl to ask the broker"
    vhost = unquote(urlsplit(amqp_url).path[1:]) or "/"
    out = subprocess.run(
        [ctl, "-q", "list_queues", "-p", vhost, "name", *columns, "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if "\t" in line]


def queue_depth(url: str, queue: str) -> int:
    """Messages in ``queue``, ready and unacknowledged (rabbitmqctl)."""
    depths = {name: int(count) for name, count in list_queues(url, "messages")}
    return depths[queue]
