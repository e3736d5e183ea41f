"""SSEHUB_OPS_PORT: the edge's ops endpoints on a port of their own, off the
public one; and /readyz on the public port never names the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from ssehub.dispatcher.main import running_dispatcher
from ssehub.edge.app import create_app
from ssehub.edge.lifecycle import close_all
from ssehub.edge.server import listen
from ssehub.errors import ConfigError

from tests.sse import open_stream
from tests.support import (
    Stack,
    make_settings,
    postgres_database,
    rabbitmq_vhost,
    signed,
    started,
    uid,
)

OPS_ONLY = ["/metrics", "/readyz", "/openapi.json", "/docs"]


@contextlib.asynccontextmanager
async def ops_edge(
    amqp_url: str, database_url: str, **overrides: object
) -> AsyncIterator[tuple[str, str, FastAPI]]:
    """An edge served as ``ssehub edge`` serves it (edge/server.py ``listen``):
    (public URL, ops URL, app), ready."""
    settings = make_settings(amqp_url, database_url, **{"ops_port": 0, **overrides})
    app = create_app(settings)
    socks = listen(settings, "127.0.0.1", 0)
    if len(socks) > 1:
        app.state.ops_port = socks[1].getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", http="httptools")
    )
    task = asyncio.create_task(server.serve(sockets=socks))
    try:
        await started(server, task)
        async with asyncio.timeout(15):
            await app.state.edge.node.link.supervisor.ready.wait()
        urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in socks]
        yield urls[0], urls[-1], app
    finally:
        close_all(app.state.edge)
        server.should_exit = True
        await task
        for sock in socks:
            sock.close()


async def test_the_ops_endpoints_are_on_the_ops_port_only(stack: Stack) -> None:
    user = uid()
    async with (
        ops_edge(stack.settings.rabbitmq_url, stack.settings.database_url) as (public, ops, _),
        httpx.AsyncClient(base_url=public) as pub,
        httpx.AsyncClient(base_url=ops) as op,
    ):
        assert public != ops
        for path in OPS_ONLY:
            assert (await pub.get(path)).status_code == 404, path
        # the load balancer's check stays on the port it sends traffic to
        assert (await pub.get("/healthz")).json() == {"status": "ok"}
        assert (await pub.get("/ssehub.js")).status_code == 200
        async with open_stream(public, signed({"sub": user})) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).json["userId"] == user
            metrics = (await op.get("/metrics")).text
        assert "ssehub_connections_open" in metrics
        assert (await op.get("/readyz")).json()["status"] == "ready"
        assert (await op.get("/healthz")).json() == {"status": "ok"}
        assert (await op.get("/openapi.json")).json()["info"]["title"] == "ssehub edge"
        docs = await op.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        # and nothing else: no streams, no helper
        for path in ("/sse/connect", "/ssehub.js", "/"):
            assert (await op.get(path, params={"token": signed({"sub": user})})).status_code == 404


async def test_without_an_ops_port_the_public_port_serves_them_as_before(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.edge) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 200
        assert (await http.get("/docs")).status_code == 404  # as before: no docs page


async def test_the_same_port_twice_is_one_line() -> None:
    settings = make_settings("amqp://guest:guest@127.0.0.1:1/", "sqlite:///x.db", ops_port=8123)
    with pytest.raises(ConfigError) as info:
        listen(settings, "127.0.0.1", 8123)
    assert str(info.value) == (
        "SSEHUB_OPS_PORT=8123 is the port of the streams (--port): choose another"
    )


@pytest.mark.postgres
async def test_readiness_names_the_store_on_the_ops_port_only(
    broker_url: str, pg_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database goes away under two edges: the one without an ops port says
    "store: unavailable" on its public /readyz; the one with an ops port says
    which store there (and the log says it on both)."""
    with rabbitmq_vhost(broker_url) as amqp:  # a deployment of its own: its own store
        async with (
            postgres_database(pg_server_url) as db,
            running_dispatcher(make_settings(amqp, db)),
        ):
            await dropped_under_two_edges(amqp, db, pg_server_url)
    assert any(
        "the store is unavailable" in r.getMessage() and "ssehub_test_" in r.getMessage()
        for r in caplog.records
    )


async def dropped_under_two_edges(amqp: str, db: str, server_url: str) -> None:
    name = db.rsplit("/", 1)[1]
    async with (
        ops_edge(amqp, db, ops_port=None) as (plain, _, _),
        ops_edge(amqp, db) as (public, ops, _),
        httpx.AsyncClient() as http,
    ):
        assert (await http.get(f"{plain}/readyz")).status_code == 200
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        said = await http.get(f"{plain}/readyz")
        assert said.status_code == 503
        assert said.json() == {"status": "unavailable", "problems": ["store: unavailable"]}
        assert name not in said.text and "127.0.0.1" not in said.text
        assert "postgres" not in said.text.lower()
        assert (await http.get(f"{public}/readyz")).status_code == 404
        detailed = await http.get(f"{ops}/readyz")
        assert detailed.status_code == 503
        (problem,) = detailed.json()["problems"]
        assert problem.startswith("store: ") and name in problem
