from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from ssehub.dispatcher.main import running_dispatcher
from ssehub.fastpath import receiver
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

# The in-process services read frames as the `ssehub` command makes them
# (cli/serve.py): the hand-made delivery decoding is what meets hostile bytes.
receiver.install()


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


def _listeners(services: dict[str, tuple[str, int]]) -> dict[str, psutil.Process]:
    """The local process listening on each service's port (the oldest one, i.e.
    the postmaster rather than a backend); services not local or not visible to
    us are left out."""
    ports: dict[int, str] = {}
    for name, (url, default_port) in services.items():
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost", "::1"):
            ports[parts.port or default_port] = name
    try:
        conns = psutil.net_connections("tcp")
    except psutil.Error:
        return {}
    found: dict[str, psutil.Process] = {}
    for c in conns:
        name = ports.get(c.laddr.port) if c.status == psutil.CONN_LISTEN else None
        if name is None or c.pid is None:
            continue
        try:
            proc = psutil.Process(c.pid)
            if name not in found or proc.create_time() < found[name].create_time():
                found[name] = proc
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def machine_services_untouched() -> Iterator[None]:
    """Fails the session when the machine's own RabbitMQ or PostgreSQL is not the
    same process at the end as at the start: tests restart only private ones."""
    services = {
        "RabbitMQ": (env("SSEHUB_TEST_RABBITMQ_URL", DEFAULT_AMQP), 5672),
        "PostgreSQL": (env("SSEHUB_TEST_DATABASE_URL", DEFAULT_PG), 5432),
    }
    before = _listeners(services)
    yield
    after = _listeners(services)
    changed = [
        f"{name} on port {urlsplit(url).port or port} was pid {before[name].pid}, is now "
        + (f"pid {after[name].pid}" if name in after else "not running")
        for name, (url, port) in services.items()
        if name in before and after.get(name) != before[name]  # psutil: pid and start time
    ]
    if changed:
        pytest.fail(
            "the machine's own services were restarted or killed during this test session "
            "(tests that fault a service must use tests/faults/services.py): " + "; ".join(changed),
            pytrace=False,
        )


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
