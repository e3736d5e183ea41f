from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from ssehub.publisher import Publisher

from tests.faults.procs import (
    Cluster,
    can_control_services,
    postgres_ensure_running,
    process_env,
    rabbitmq_ensure_running,
)
from tests.support import postgres_database, rabbitmq_vhost

MEASUREMENTS: dict[str, float] = {}
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "fault-measurements.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            if not can_control_services():
                item.add_marker(
                    pytest.mark.skip(reason="needs local rabbitmqctl and pg_ctlcluster")
                )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("fault measurements (seconds)")
        for name, value in sorted(MEASUREMENTS.items()):
            terminalreporter.write_line(f"{name:45s} {value:8.2f}")
        RESULTS.write_text(json.dumps(MEASUREMENTS, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def measure() -> dict[str, float]:
    return MEASUREMENTS


@pytest.fixture(autouse=True)
def services_left_running() -> Iterator[None]:
    """Whatever a test did to RabbitMQ or PostgreSQL, both run again afterwards."""
    yield
    rabbitmq_ensure_running()
    postgres_ensure_running()


@pytest.fixture
def fault_vhost(broker_url: str) -> Iterator[str]:
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
async def pg_cluster_db(pg_server_url: str) -> AsyncIterator[str]:
    async with postgres_database(pg_server_url) as url:
        yield url


@pytest.fixture
async def publisher(fault_vhost: str) -> AsyncIterator[Publisher]:
    h = Publisher(fault_vhost)
    yield h
    await h.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
