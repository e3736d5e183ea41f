"""The dispatcher's HTTP port: ``/healthz``, ``/readyz``, ``/metrics``.

A minimal HTTP/1.1 responder on ``asyncio.start_server``, in the dispatcher's
own event loop: three GET routes, one request per connection (``Connection:
close``), which is all that probes and Prometheus need. No web framework and
no second server loop: uvicorn's ``Server.serve`` would also take over the
process's signal handlers, which belong to ``ssehub dispatcher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub.amqp import BROKER_ERRORS
from ssehub.dispatcher.service import Dispatcher
from ssehub.errors import StoreUnavailable
from ssehub.listen import bind
from ssehub.storage.db import store_errors
from ssehub.storage.reach import describe

log = logging.getLogger("ssehub.dispatcher")

READ_TIMEOUT = 5.0  # a client that sends no complete request head in this time is dropped
CHECK_TIMEOUT = 2.0  # store ping, queue declare: a probe must answer in time
MAX_HEAD = 8192
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class DispatcherHttp:
    def __init__(self, dispatcher: Dispatcher, engine: AsyncEngine) -> None:
        self._dispatcher = dispatcher
        self._engine = engine

    # -- routes ------------------------------------------------------------------
    async def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, JSON, b'{"status":"method not allowed"}'
        path = path.partition("?")[0]
        if path == "/healthz":
            return 200, JSON, b'{"status":"ok"}'
        if path == "/readyz":
            return await self._readyz()
        if path == "/metrics":
            return 200, PROMETHEUS, await self._metrics()
        return 404, JSON, b'{"status":"not found"}'

    async def _readyz(self) -> tuple[int, str, bytes]:
        problems = []
        if not self._dispatcher.supervisor.ready.is_set():
            problems.append("rabbitmq: not connected")
        try:
            await self._ping_store()
        except StoreUnavailable as exc:
            problems.append(f"store: {describe(exc, self._engine.url)}")
        if problems:
            body = {"status": "unavailable", "problems": problems}
            return 503, JSON, orjson.dumps(body)
        partitions = self._dispatcher.partitions
        role = "active" if partitions else "standby"
        return 200, JSON, orjson.dumps({"status": role, "partitions": partitions})

    async def _ping_store(self) -> None:
        with store_errors():
            async with asyncio.timeout(CHECK_TIMEOUT), self._engine.connect() as db:
                await db.execute(text("SELECT 1"))

    async def _metrics(self) -> bytes:
        d, m = self._dispatcher, self._dispatcher.metrics
        held = set(d.partitions)
        m.active.set(1 if held else 0)
        tables = [w.outbound.table for w in d.workers.values() if w.partition in held]
        m.routed_users.set(sum(len(t) for t in tables if t is not None))
        m.edges.set(max((t.edges for t in tables if t is not None), default=0))
        for p in d.workers:
            m.partition_active.labels(str(p)).set(1 if p in held else 0)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                ready = await d.queue_ready()
        except BROKER_ERRORS as exc:  # the link is going: its supervisor knows
            log.debug("queue depth not read: %r", exc)
            ready = None
        if ready is not None:
            m.queue_ready.set(ready)
        return m.render()

    # -- HTTP ----------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, path, _version = request_line.split(" ", 2)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            return
        except OSError:
            writer.close()
            return
        try:
            status, content_type, body = await self.respond(method, path)
        except Exception:
            log.exception("%s %s failed", method, path)
            status, content_type, body = 503, JSON, b'{"status":"error"}'
        head_out = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            writer.write(head_out if method == "HEAD" else head_out + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(
    dispatcher: Dispatcher, engine: AsyncEngine, host: str, port: int
) -> AsyncIterator[int]:
    """Serve the port (0: any free one) while inside; yields the bound port."""
    http = DispatcherHttp(dispatcher, engine)
    sock = bind(host, port)  # a port in use: one line (PortUnavailable), before anything runs
    try:
        server = await asyncio.start_server(http.handle, sock=sock, limit=MAX_HEAD)
    except BaseException:
        sock.close()
        raise
    bound = int(server.sockets[0].getsockname()[1])
    dispatcher.probing = True  # /readyz tells which partitions it is active for
    log.info("dispatcher HTTP port on %s:%d (/healthz /readyz /metrics)", host, bound)
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()
