"""Running a dispatcher: engine, schema, signals, and its HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from ssehub.config import Settings
from ssehub.dispatcher.http import serving
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.service import Dispatcher
from ssehub.errors import unwrap
from ssehub.storage.db import create_engine, create_schema

log = logging.getLogger("ssehub.dispatcher")


@asynccontextmanager
async def running_dispatcher(
    settings: Settings,
    name: str = "dispatcher",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    pinned: frozenset[int] | None = None,
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in the background of the caller's event loop.
    ``port``: serve /healthz, /readyz and /metrics there (0: any free port; the
    bound one is ``dispatcher.http_port``); None: no HTTP port. ``pinned``:
    the partitions it works on (None: its fair share of all)."""
    engine = create_engine(settings.database_url, writer=True)
    try:
        await create_schema(engine)
        if settings.partitions > 1 and engine.dialect.name == "sqlite":
            log.warning(SQLITE_PARTITIONS, settings.partitions)
        store = DispatchStore(
            engine,
            settings.dedupe_window,
            presence_cap=settings.presence_max_members,
            partitions=settings.partitions,
        )
        dispatcher = Dispatcher(settings, store, name, pinned)
        task = dispatcher.running = asyncio.create_task(dispatcher.run(), name=name)
        try:
            async with contextlib.AsyncExitStack() as http:
                if port is not None:
                    # Readiness pings through an engine of its own, opening a fresh
                    # connection each time (a pooled one says little about the store
                    # now), and not the writer's, whose connections take SQLite's
                    # write lock (ssehub.storage.db).
                    reader = create_async_engine(settings.database_url, poolclass=NullPool)
                    http.push_async_callback(reader.dispose)
                    served = serving(dispatcher, reader, host, port)
                    dispatcher.http_port = await http.enter_async_context(served)
                yield dispatcher
        finally:
            dispatcher.stop()
            try:
                await task  # raises what ended it, if anything but stop() did
            except BaseExceptionGroup as failure:
                raise unwrap(failure) from None
            finally:
                store.close()
    finally:
        await engine.dispose()


async def serve(
    settings: Settings,
    port: int | None = None,
    host: str = "127.0.0.1",
    pinned: frozenset[int] | None = None,
) -> None:
    """``ssehub dispatcher``: until SIGTERM/SIGINT, then finish the batches in
    hand. Raises what ended the dispatcher if it ended by itself (a bug, or a
    setting the broker refused)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_dispatcher(settings, port=port, host=host, pinned=pinned) as dispatcher:
        assert dispatcher.running is not None
        stopped: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        ended: asyncio.Future[object] = asyncio.shield(dispatcher.running)
        await asyncio.wait((stopped, ended), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()


# Said once at start: SQLite has one writer at a time, so partitions work but
# do not add throughput, and several processes on one file wait for each other.
SQLITE_PARTITIONS = (
    "SSEHUB_PARTITIONS=%d on SQLite: partitions work, but SQLite writes one "
    "transaction at a time, so they add no throughput and dispatcher processes "
    "sharing the file wait for each other's writes; use PostgreSQL to scale out"
)
