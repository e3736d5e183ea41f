"""Running a dispatcher: engine, schema, the deployment's store, signals, and its HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ssehub.config import Settings
from ssehub.dispatcher.http import serving
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.service import Dispatcher
from ssehub.errors import unwrap
from ssehub.storage.db import create_engine
from ssehub.storage.identity import store_identity
from ssehub.storage.reach import open_store

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
    """A dispatcher running in the background of the caller's event loop, once
    the store answers (until then each failed attempt logs one line).
    ``port``: serve /healthz, /readyz and /metrics there (0: any free port; the
    bound one is ``dispatcher.http_port``), from the start, so that probes see
    a dispatcher that waits for its store; None: no HTTP port. ``pinned``: the
    partitions it works on (None: its fair share of all). Raises what ended
    the dispatcher, if anything but leaving did (a bug, a setting the broker
    refused, or WrongStore: its store is not the deployment's)."""
    engine = create_engine(settings.database_url, writer=True)
    store = DispatchStore(
        engine,
        settings.dedupe_window,
        presence_cap=settings.presence_max_members,
        partitions=settings.partitions,
        max_members=settings.max_members,
    )
    try:
        dispatcher = Dispatcher(settings, store, name, pinned)
        async with contextlib.AsyncExitStack() as http:
            if port is not None:
                # Readiness pings through an engine of its own, opening a fresh
                # connection each time (a pooled one says little about the store
                # now), and not the writer's, whose connections take SQLite's
                # write lock (ssehub.storage.db).
                reader = create_engine(settings.database_url, pooled=False)
                http.push_async_callback(reader.dispose)
                served = serving(dispatcher, reader, host, port)
                dispatcher.http_port = await http.enter_async_context(served)
            await open_store(engine, name=f"ssehub-{name}", max_delay=settings.reconnect_max_delay)
            # RabbitMQ agrees that this store is the deployment's before anything
            # is consumed, on every link (ssehub.storage.identity): else it ends
            dispatcher.identity = await store_identity(engine, settings.database_url)
            if settings.partitions > 1 and engine.dialect.name == "sqlite":
                log.warning(SQLITE_PARTITIONS, settings.partitions)
            task = dispatcher.running = asyncio.create_task(dispatcher.run(), name=name)
            try:
                yield dispatcher
            finally:
                dispatcher.stop()
                try:
                    await task
                except BaseExceptionGroup as failure:
                    raise unwrap(failure) from None
    finally:
        store.close()
        await engine.dispose()


async def serve(
    settings: Settings,
    port: int | None = None,
    host: str = "127.0.0.1",
    pinned: frozenset[int] | None = None,
) -> None:
    """``ssehub dispatcher``: until SIGTERM/SIGINT, then finish the batches in
    hand (a signal while it still waits for the store ends the wait). Raises
    what ended the dispatcher if it ended by itself."""
    stop = asyncio.Event()
    waiting = True

    async def run() -> None:
        nonlocal waiting
        async with running_dispatcher(settings, port=port, host=host, pinned=pinned) as d:
            waiting = False
            assert d.running is not None
            stopped = asyncio.ensure_future(stop.wait())
            # leaving raises what ended the dispatcher, if it ended by itself
            await asyncio.wait((stopped, d.running), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()

    task = asyncio.create_task(run(), name="dispatcher-main")

    def on_signal() -> None:
        if waiting:
            task.cancel()  # nothing taken up yet: nothing to finish
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()


# Said once at start: SQLite has one writer at a time, so partitions work but
# do not add throughput, and several processes on one file wait for each other.
SQLITE_PARTITIONS = (
    "SSEHUB_PARTITIONS=%d on SQLite: partitions work, but SQLite writes one "
    "transaction at a time, so they add no throughput and dispatcher processes "
    "sharing the file wait for each other's writes; use PostgreSQL to scale out"
)
