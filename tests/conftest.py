from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from ssehub.dispatcher.main import running_dispatcher
from ssehub.publisher import Publisher

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


@contextlib.contextmanager
def local_or_container(
    env_var: str, default: str, port: int, container: Callable[[], Iterator[str]]
) -> Iterator[str]:
    """The service at $env_var (or the local default) when it answers, else a
    testcontainers container where Docker runs."""
    url = env(env_var, default)
    if reachable(url, port):
        yield url
        return
    try:
        yield from container()
    except ImportError:  # pragma: no cover
        pytest.fail(f"{url} not reachable and testcontainers unavailable")


def _rabbitmq_container() -> Iterator[str]:  # pragma: no cover - needs Docker
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13") as rmq:
        params = rmq.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


def _postgres_container() -> Iterator[str]:  # pragma: no cover - needs Docker
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16", driver=None) as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    with local_or_container(
        "SSEHUB_TEST_RABBITMQ_URL", DEFAULT_AMQP, 5672, _rabbitmq_container
    ) as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:
        yield url


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with local_or_container(
        "SSEHUB_TEST_DATABASE_URL", DEFAULT_PG, 5432, _postgres_container
    ) as url:
        yield url


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
        publisher = Publisher(amqp, queue_type=settings.queue_type)
        stack.push_async_callback(publisher.close)
        yield Stack(settings, [u for u, _ in served], [a for _, a in served], publisher)


@pytest.fixture(scope="session")
async def stack(amqp_url: str, sqlite_url: str) -> AsyncIterator[Stack]:
    """Dispatcher + two edges on SQLite, shared by the tests of a session: each
    test uses its own user and conversation ids."""
    async with make_stack(amqp_url, sqlite_url) as s:
        yield s
