"""Running a dispatcher: engine, schema, signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ssehub.config import Settings
from ssehub.db import create_engine, create_schema
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.service import Dispatcher


@asynccontextmanager
async def running_dispatcher(
    settings: Settings, name: str = "dispatcher"
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in the background of the caller's event loop."""
    engine = create_engine(settings.database_url, writer=True)
    try:
        await create_schema(engine)
        store = DispatchStore(
            engine, settings.dedupe_window, presence_cap=settings.presence_max_members
        )
        dispatcher = Dispatcher(settings, store, name)
        task = asyncio.create_task(dispatcher.run(), name=name)
        try:
            yield dispatcher
        finally:
            dispatcher.stop()
            await task
            store.close()
    finally:
        await engine.dispose()


async def serve(settings: Settings) -> None:
    """``ssehub dispatcher``: until SIGTERM/SIGINT, then finish the batch in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_dispatcher(settings):
        await stop.wait()
