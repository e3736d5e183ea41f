"""Running a dispatcher: engine, schema, the deployment's store, signals, and its HTTP port."""

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
from ssehub.storage.db import create_engine, create_schema
from ssehub.storage.identity import admit, once_admitted, store_identity


@asynccontextmanager
async def running_dispatcher(
    settings: Settings,
    name: str = "dispatcher",
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    ended: asyncio.Event | None = None,
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in the background of the caller's event loop.
    ``port``: serve /healthz, /readyz and /metrics there (0: any free port; the
    bound one is ``dispatcher.http_port``); None: no HTTP port.

    It numbers nothing until RabbitMQ has agreed that its store is the
    deployment's (ssehub.storage.identity): a store that is not raises
    WrongStore here when the broker says so at once; when the broker could not
    be reached at start and says so later, the dispatcher ends by itself,
    ``ended`` is set, and leaving the block raises the WrongStore."""
    engine = create_engine(settings.database_url, writer=True)
    try:
        await create_schema(engine)
        identity = await store_identity(engine, settings.database_url)
        admitted = await admit(
            settings.rabbitmq_url,
            identity,
            name=f"ssehub-{name}",
            max_delay=settings.reconnect_max_delay,
        )
        store = DispatchStore(
            engine, settings.dedupe_window, presence_cap=settings.presence_max_members
        )
        dispatcher = Dispatcher(settings, store, name)
        task = asyncio.create_task(once_admitted(admitted, dispatcher.run), name=name)
        if ended is not None:
            task.add_done_callback(lambda _: ended.set())
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
            admitted.cancel()  # still asking: the broker has not answered yet
            try:
                await task  # raises a late WrongStore
            finally:
                store.close()
    finally:
        await engine.dispose()


async def serve(settings: Settings, port: int | None = None, host: str = "127.0.0.1") -> None:
    """``ssehub dispatcher``: until SIGTERM/SIGINT, then finish the batch in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # ``stop`` is also set when the dispatcher ends by itself: refused by the broker
    async with running_dispatcher(settings, port=port, host=host, ended=stop):
        await stop.wait()
