"""Processes that start together on a new store: five ``ssehub dispatcher`` and
``ssehub edge`` processes started at once on a new SQLite file, and on a new
PostgreSQL database, twenty times in a row: none exits or prints a traceback,
and all become ready. (Before: one in ~10 starts lost the race for the schema,
``database is locked`` on SQLite, a duplicate catalog row on PostgreSQL.) And
one that must give up says so in one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
from ssehub.config import normalize_database_url
from ssehub.errors import StoreUnavailable
from ssehub.storage.db import SCHEMA_LOCK, TABLES, create_engine, create_schema
from ssehub.storage.identity import MARKER

from tests.startup import Child
from tests.support import postgres_database, rabbitmq_vhost

ROUNDS = 20
PROCESSES = 5  # dispatchers and edges, alternately


@pytest.fixture
def vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def forget_the_store(vhost: str) -> None:
    """The next round brings a new store to the same vhost: give the deployment
    another store on purpose, as the operator would (ssehub.storage.identity)."""
    connection = await aio_pika.connect(vhost)
    try:
        await (await connection.channel()).queue_delete(MARKER)
    finally:
        await connection.close()


async def start_together(vhost: str, database_url: str, workdir: Path) -> None:
    """Five processes on one new store, started at once; each must answer
    /readyz with 200, without exiting or printing a traceback."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SSEHUB_RABBITMQ_URL": vhost,
        "SSEHUB_DATABASE_URL": database_url,
        "SSEHUB_JWT_SECRET": "start-together-" * 3,
        "SSEHUB_LOG_FORMAT": "text",
        "SSEHUB_PRESENCE": "false",
        "SSEHUB_RECONNECT_MAX_DELAY": "1",
    }
    children: list[tuple[Child, int]] = []
    try:
        for i in range(PROCESSES):
            port = free_port()
            kind = ["dispatcher", "--host", "127.0.0.1"] if i % 2 == 0 else ["edge"]
            folder = workdir / f"p{i}"
            folder.mkdir()
            children.append(
                (Child.start([*kind, "--port", str(port)], env, folder, folder / "log"), port)
            )
        async with httpx.AsyncClient(timeout=2) as http:
            await asyncio.gather(*(ready(http, child, port) for child, port in children))
        for child, _ in children:
            assert "Traceback" not in child.output(), child.output()
    finally:
        for child, _ in children:
            child.kill()


async def ready(http: httpx.AsyncClient, child: Child, port: int) -> None:
    async with asyncio.timeout(60):
        while True:
            assert child.exitcode is None, f"exited {child.exitcode}:\n{child.output()}"
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)  # wait-ok: polling a child process's readiness probe


async def test_five_processes_start_together_on_a_new_sqlite_file(
    vhost: str, tmp_path: Path
) -> None:
    for n in range(ROUNDS):
        workdir = tmp_path / f"round-{n}"
        workdir.mkdir()
        await start_together(vhost, f"sqlite:///{workdir / 'ssehub.db'}", workdir)
        await forget_the_store(vhost)


@pytest.mark.postgres
async def test_five_processes_start_together_on_a_new_postgres_database(
    vhost: str, tmp_path: Path, pg_server_url: str
) -> None:
    for n in range(ROUNDS):
        workdir = tmp_path / f"round-{n}"
        workdir.mkdir()
        async with postgres_database(pg_server_url) as database_url:
            await start_together(vhost, database_url, workdir)
        await forget_the_store(vhost)


@pytest.mark.postgres
async def test_a_process_that_must_give_up_says_so_in_one_line(pg_server_url: str) -> None:
    """The schema's creator holds its lock too long (stuck): the others give up
    at their deadline with one line, and the schema is made once it lets go."""
    async with postgres_database(pg_server_url) as url:
        holder = await asyncpg.connect(url)
        engine = create_engine(normalize_database_url(url))
        try:
            await holder.execute(f"SELECT pg_advisory_lock({SCHEMA_LOCK})")
            with pytest.raises(StoreUnavailable) as gave_up:
                await create_schema(engine, deadline=1.0)
            assert str(gave_up.value) == (
                "store: LockNotAvailableError: canceling statement due to lock timeout "
                "(creating the schema: other processes held it for 1 s)"
            )
            await holder.execute(f"SELECT pg_advisory_unlock({SCHEMA_LOCK})")
            await create_schema(engine, deadline=1.0)
            tables = await holder.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ssehub_%'"
            )
            assert tables == len(TABLES)
        finally:
            await engine.dispose()
            await holder.close()
