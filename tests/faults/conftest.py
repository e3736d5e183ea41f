"""Fixtures of the fault tests.

A test that restarts, stops or administers RabbitMQ or PostgreSQL uses the
session's private instances (``private_broker``/``private_vhost``,
``private_database``/``private_pg_db``; tests/faults/services.py); tests that
only kill ssehub processes run on the machine's broker in a throwaway vhost
(``fault_vhost``), which no test here restarts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster, process_env, queue_type_under_test
from tests.faults.services import PrivateBroker, PrivateDatabase
from tests.support import postgres_database, rabbitmq_vhost

MEASUREMENTS: dict[str, float] = {}
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "fault-measurements.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("fault measurements (seconds)")
        for name, value in sorted(MEASUREMENTS.items()):
            terminalreporter.write_line(f"{name:45s} {value:8.2f}")
        RESULTS.write_text(json.dumps(MEASUREMENTS, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def measure() -> dict[str, float]:
    return MEASUREMENTS


# -- services: a test that restarts, stops or administers one uses a private one
@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    """A RabbitMQ node of this session's own (tests/faults/services.py)."""
    try:
        broker = PrivateBroker.create()
    except FileNotFoundError as e:
        pytest.skip(f"private RabbitMQ: {e}")
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def private_vhost(private_broker: PrivateBroker) -> Iterator[str]:
    """A fresh vhost of the private broker, which is running when the test starts."""
    private_broker.ensure_running()
    with private_broker.vhost() as url:
        yield url


@pytest.fixture(scope="session")
def private_database() -> Iterator[PrivateDatabase]:
    """A PostgreSQL cluster of this session's own (tests/faults/services.py)."""
    try:
        db = PrivateDatabase.create()
    except FileNotFoundError as e:
        pytest.skip(f"private PostgreSQL: {e}")
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
async def private_pg_db(private_database: PrivateDatabase) -> AsyncIterator[str]:
    """A fresh database of the private cluster, running at the start and end of the test."""
    private_database.ensure_running()
    async with postgres_database(private_database.url) as url:
        yield url
        private_database.ensure_running()  # for the DROP, whatever the test did


@pytest.fixture
def fault_vhost(broker_url: str) -> Iterator[str]:
    """A throwaway vhost of the machine's broker, for tests that only kill ssehub
    processes; tests/faults/test_broker.py overrides it with ``private_vhost``."""
    with rabbitmq_vhost(broker_url) as url:
        yield url


@pytest.fixture
def fault_db(tmp_path: Path) -> str:
    """SQLite by default; a test that needs PostgreSQL overrides this fixture."""
    return f"sqlite:///{tmp_path / 'ssehub.db'}"


@pytest.fixture
async def cluster(
    fault_vhost: str, fault_db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Cluster]:
    env = process_env(
        fault_vhost, fault_db, reconnect_max_delay="1", drain_seconds="1", log_level="INFO"
    )
    c = Cluster(env, tmp_path)
    try:
        yield c
    finally:
        c.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(c.logs())


@pytest.fixture
async def publisher(fault_vhost: str) -> AsyncIterator[Publisher]:
    h = Publisher(fault_vhost, queue_type=queue_type_under_test())
    yield h
    await h.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
