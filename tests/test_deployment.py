"""One deployment, one store (docs/contract.md, "Delivery guarantees"), on the real
broker and stores: a process whose store is not its vhost's refuses to start with
one line naming both, as ``ssehub dispatcher``, ``ssehub edge`` and ``ssehub dev``,
on SQLite and on PostgreSQL; the deployment's own processes go on as if nothing
happened (the next event of a user still carries the next id)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest
from ssehub.config import Settings
from ssehub.dispatcher.main import running_dispatcher
from ssehub.edge.auth import mint_token
from ssehub.storage.db import create_engine, create_schema
from ssehub.storage.identity import (
    MARKER,
    StoreIdentity,
    WrongStore,
    check_deployment,
    marker_arguments,
    store_identity,
)

from tests.sse import open_stream
from tests.support import (
    make_settings,
    postgres_database,
    rabbitmq_vhost,
    run_cli,
    running_edge,
    uid,
)


@pytest.fixture
def vhost(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:  # a deployment of this test's own
        yield url


async def identity_of(database_url: str) -> StoreIdentity:
    """The store's deployment id (made on a new store)."""
    engine = create_engine(make_settings("amqp://x/", database_url).database_url)
    try:
        await create_schema(engine)
        return await store_identity(engine, database_url)
    finally:
        await engine.dispose()


# -- the broker's side ---------------------------------------------------------
async def test_rabbitmq_refuses_another_id_in_the_words_we_read(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    try:
        channel = await connection.channel()
        await channel.declare_queue(MARKER, durable=True, arguments=marker_arguments("aaaa"))  # type: ignore[arg-type]
        await channel.declare_queue(MARKER, durable=True, arguments=marker_arguments("aaaa"))  # type: ignore[arg-type]
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as refused:
            await channel.declare_queue(MARKER, durable=True, arguments=marker_arguments("bbbb"))  # type: ignore[arg-type]
    finally:
        await connection.close()
    name = urlsplit(vhost).path[1:]
    assert str(refused.value) == (
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue "
        f"'ssehub.deployment' in vhost '{name}': received 'bbbb' but current is 'aaaa'"
    )


async def test_of_stores_declaring_at_once_the_first_one_wins(vhost: str) -> None:
    stores = [StoreIdentity(f"{i:016x}", f"store {i}") for i in range(6)]
    connections = [await aio_pika.connect(vhost) for _ in stores]
    try:
        results = await asyncio.gather(
            *(check_deployment(c, s) for c, s in zip(connections, stores, strict=True)),
            return_exceptions=True,
        )
        winners = [s for s, r in zip(stores, results, strict=True) if r is None]
        assert len(winners) == 1
        refused = [r for r in results if r is not None]
        assert all(isinstance(r, WrongStore) for r in refused)
        assert all(f"belongs to deployment {winners[0].deployment}" in str(r) for r in refused)
        await check_deployment(connections[0], winners[0])  # and it keeps agreeing
    finally:
        for c in connections:
            await c.close()


# -- the store's side ----------------------------------------------------------
@pytest.mark.postgres
async def test_processes_racing_on_a_new_store_read_one_id(
    tmp_path: Path, pg_server_url: str
) -> None:
    async with postgres_database(pg_server_url) as pg:
        for url in (f"sqlite:///{tmp_path / 'new.db'}", pg):
            ids = await asyncio.gather(*(identity_of(url) for _ in range(6)))
            assert len({i.deployment for i in ids}) == 1, url
            assert (await identity_of(url)).deployment == ids[0].deployment  # made once


# -- two stores on one vhost -----------------------------------------------------
def assert_refused_in_one_line(
    returncode: int, output: str, ours: StoreIdentity, theirs: StoreIdentity
) -> None:
    assert returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("ssehub: ")]
    assert len(lines) == 1, output
    assert lines[0].startswith("ssehub: SSEHUB_DATABASE_URL: ")
    assert f"{ours.store} is the store of deployment {ours.deployment}" in lines[0]
    assert f"belongs to deployment {theirs.deployment}" in lines[0]
    assert "ssehub-secret" not in output  # a database password never shows


@contextlib.asynccontextmanager
async def first_deployment(vhost: str, tmp_path: Path) -> AsyncIterator[tuple[Settings, str]]:
    """The vhost's deployment: a dispatcher and an edge on its store; yields the
    settings and the edge's URL."""
    settings = make_settings(vhost, f"sqlite:///{tmp_path / 'first.db'}")
    async with running_dispatcher(settings), running_edge(settings) as (edge, _):
        yield settings, edge


@pytest.mark.postgres
async def test_a_second_store_on_the_vhost_is_refused_and_the_first_goes_on(
    vhost: str, tmp_path: Path, pg_server_url: str
) -> None:
    async with first_deployment(vhost, tmp_path) as (settings, edge):
        theirs = await identity_of(settings.database_url)
        user = uid()
        async with open_stream(edge, mint_token(settings, user)) as (_, client):
            assert (await client.next()).event == "connected"
            async with aio_pika_publisher(vhost) as publish:
                await publish(user, 1)
                assert (await client.next()).seq == 1

                other = tmp_path / "other"
                other.mkdir()
                sqlite = f"sqlite:///{other / 'second.db'}"
                env = {"SSEHUB_RABBITMQ_URL": vhost, "SSEHUB_JWT_SECRET": "x" * 40}
                for args in (["dispatcher"], ["edge", "--port", str(free_port())]):
                    code, out = await run_cli(
                        *args, env=env | {"SSEHUB_DATABASE_URL": sqlite}, cwd=other
                    )
                    assert_refused_in_one_line(code, out, await identity_of(sqlite), theirs)

                # `ssehub dev` in a folder of its own: its default store, ./ssehub.db
                dev = tmp_path / "dev"
                dev.mkdir()
                code, out = await run_cli(
                    "dev", "--port", str(free_port()), env={"SSEHUB_RABBITMQ_URL": vhost}, cwd=dev
                )
                mine = await identity_of(f"sqlite:///{dev / 'ssehub.db'}")
                assert_refused_in_one_line(code, out, mine, theirs)

                async with postgres_database(pg_server_url) as pg:
                    secret = urlunsplit(urlsplit(pg)._replace(netloc=with_password(pg)))
                    code, out = await run_cli(
                        "dispatcher", env=env | {"SSEHUB_DATABASE_URL": secret}, cwd=other
                    )
                    assert_refused_in_one_line(code, out, await identity_of(pg), theirs)

                # in-process, the same refusal, as an error
                with pytest.raises(WrongStore):
                    async with running_dispatcher(make_settings(vhost, sqlite)) as refused:
                        assert refused.running is not None
                        async with asyncio.timeout(30):  # it ends by itself, at once
                            await asyncio.wait([refused.running])

                # the deployment's own dispatcher numbered nothing twice and goes on
                await publish(user, 2)
                event = await client.next()
                assert (event.seq, event.json) == (2, 2)


async def test_refused_later_when_the_broker_answers_late(vhost: str, tmp_path: Path) -> None:
    """A dispatcher that could not reach RabbitMQ at start does not consume until it
    can; told then that its store is not the deployment's, it ends by itself."""
    async with first_deployment(vhost, tmp_path):
        port = free_port()
        parts = urlsplit(vhost)
        late = urlunsplit(parts._replace(netloc=f"guest:guest@127.0.0.1:{port}"))
        settings = make_settings(late, f"sqlite:///{tmp_path / 'second.db'}")
        with pytest.raises(WrongStore):
            async with running_dispatcher(settings) as dispatcher:
                # nothing listens there yet: it started, and waits for the broker
                assert dispatcher.running is not None
                async with forwarding(port, parts.hostname or "127.0.0.1", parts.port or 5672):
                    async with asyncio.timeout(30):  # then it ends by itself
                        await asyncio.wait([dispatcher.running])
                assert dispatcher.supervisor.connects == 0  # never consumed


# -- helpers -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_password(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.username or 'postgres'}:ssehub-secret@{parts.hostname}:{parts.port or 5432}"


@contextlib.asynccontextmanager
async def aio_pika_publisher(url: str):  # type: ignore[no-untyped-def]
    """publish(user, n): a confirmed event ``n`` to ``user``, as a backend would."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange("sse.events")

        async def publish(user: str, n: int) -> None:
            body = f'{{"event": "n", "data": {n}, "id": "{user}-{n}"}}'.encode()
            await events.publish(aio_pika.Message(body), f"user.{user}")

        yield publish
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def forwarding(port: int, host: str, target: int) -> AsyncIterator[None]:
    """A TCP port that forwards to ``host:target`` while the block runs."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, target)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
