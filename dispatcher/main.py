"""Running a dispatcher: engine, schema, signals, and its HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from ssehub.config import Settings
from ssehub.dispatcher.http import serving
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.service import Dispatcher
from ssehub.storage.db import create_engine
from ssehub.storage.reach import open_store


@asynccontextmanager
async def running_dispatcher(
    settings: Settings,
    name: str = "dispatcher",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in the background of the caller's event loop, once
    the store answers (until then each failed attempt logs one line).
    ``port``: serve /healthz, /readyz and /metrics there (0: any free port; the
    bound one is ``dispatcher.http_port``), from the start, so that probes see
    a dispatcher that waits for its store; None: no HTTP port."""
    engine = create_engine(settings.database_url, writer=True)
    store = DispatchStore(
        engine, settings.dedupe_window, presence_cap=settings.presence_max_members
    )
    try:
        dispatcher = Dispatcher(settings, store, name)
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
            await open_store(engine, name=f"ssehub-{name}", max_delay=settings.reconnect_max_delay)
            task = asyncio.create_task(dispatcher.run(), name=name)
            try:
                yield dispatcher
            finally:
                dispatcher.stop()
                await task
    finally:
        store.close()
        await engine.dispose()


async def serve(settings: Settings, port: int | None = None, host: str = "127.0.0.1") -> None:
    """``ssehub dispatcher``: until SIGTERM/SIGINT, then finish the batch in hand
    (a signal while it still waits for the store ends the wait)."""
    stop = asyncio.Event()
    waiting = True

    async def run() -> None:
        nonlocal waiting
        async with running_dispatcher(settings, port=port, host=host):
            waiting = False
            await stop.wait()

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
