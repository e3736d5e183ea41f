from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dispatcher.main import running_dispatcher
from shared.publisher import Hub
from tests.support import (
    DEFAULT_AMQP,
    DEFAULT_PG,
    Stack,
    env,
    make_settings,
    postgres_database,
    rabbitmq_vhost,
    reachable,
    running_edge,
)


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """The test RabbitMQ: $SSEHUB_TEST_RABBITMQ_URL, the local one, or a container."""
    url = env("SSEHUB_TEST_RABBITMQ_URL", DEFAULT_AMQP)
    if reachable(url, 5672):
        yield url
        return
    try:
        from testcontainers.rabbitmq import RabbitMqContainer
    except ImportError:  # pragma: no cover
        pytest.fail(f"RabbitMQ not reachable at {url} and testcontainers unavailable")
    with RabbitMqContainer("rabbitmq:3.13") as rmq:  # pragma: no cover - needs Docker
        params = rmq.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
def amqp_url(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = env("SSEHUB_TEST_DATABASE_URL", DEFAULT_PG)
    if reachable(url, 5432):
        yield url
        return
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:  # pragma: no cover
        pytest.fail(f"PostgreSQL not reachable at {url} and testcontainers unavailable")
    with PostgresContainer("postgres:16", driver=None) as pg:  # pragma: no cover - needs Docker
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    async with postgres_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("db") / "ssehub.db"
    return f"sqlite:///{path}"


@contextlib.asynccontextmanager
async def make_stack(
    amqp: str, db: str, edges: int = 2, **overrides: object
) -> AsyncIterator[Stack]:
    settings = make_settings(amqp, db, **overrides)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_dispatcher(settings))
        served = [await stack.enter_async_context(running_edge(settings)) for _ in range(edges)]
        hub = Hub(amqp)
        stack.push_async_callback(hub.close)
        yield Stack(settings, [u for u, _ in served], [a for _, a in served], hub)


@pytest.fixture(scope="session")
async def stack(amqp_url: str, sqlite_url: str) -> AsyncIterator[Stack]:
    """Dispatcher + two edges on SQLite, shared by the tests of a session: each
    test uses its own user and conversation ids."""
    async with make_stack(amqp_url, sqlite_url) as s:
        yield s
