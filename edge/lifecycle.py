"""Node-wide timers: pings for every stream, and the drain of a stopping edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from edge.stream import Hub

log = logging.getLogger("ssehub.edge")

DRAIN_STEPS = 10


async def pinger(hub: Hub) -> None:
    """One timer for all streams instead of one per stream."""
    while True:
        await asyncio.sleep(hub.settings.ping_interval)
        for conn in hub.registry.connections():
            conn.ping()


async def drain(hub: Hub, period: float) -> None:
    """Leave the pool gently (a rolling deploy): readiness turns 503 and new
    streams are sent away first, then open streams are closed in shuffled,
    staggered batches over ``period`` so their reconnects spread over the other
    edges, then the node queue goes away with the connection."""
    hub.draining = True
    conns = list(hub.registry.connections())
    random.shuffle(conns)
    log.info("draining %d streams over %.1fs", len(conns), period)
    step = max(1, -(-len(conns) // DRAIN_STEPS))
    pause = period / DRAIN_STEPS
    for i in range(0, len(conns), step):
        for conn in conns[i : i + step]:
            conn.close("drain")
        if i + step < len(conns):
            await asyncio.sleep(pause)
    for conn in hub.registry.connections():  # any that arrived meanwhile
        conn.close("drain")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await hub.node.idle()
    # Closing the connection deletes the exclusive node queue and its bindings.
    await hub.node.supervisor.close()


def close_all(hub: Hub) -> None:
    """The immediate variant, for a second signal or an in-process shutdown."""
    hub.draining = True
    for conn in hub.registry.connections():
        conn.close("drain")
