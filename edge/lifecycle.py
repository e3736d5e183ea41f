"""Node-wide timers: pings for every stream, token lifetimes (to the
millisecond) and stream-cap notices (a ~1 s tick), and the drain of a stopping
edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from ssehub.edge.context import EdgeContext
from ssehub.edge.stream import CloseReason

log = logging.getLogger("ssehub.edge")

DRAIN_STEPS = 10
TICK = 1.0  # seconds: at least this often, the node's wheels tick


async def pinger(ctx: EdgeContext) -> None:
    """One timer for all streams instead of one per stream: a ping every
    ``ping_interval``, and a tick for the node's wheels about every second and
    whenever a token deadline falls (edge/expiry.py: ``next_due``; an empty
    tick costs a few attribute reads)."""
    loop = asyncio.get_running_loop()
    interval = ctx.settings.ping_interval
    next_ping = loop.time() + interval
    sooner = asyncio.Event()  # a deadline earlier than the one slept for was filed
    ctx.tokens.on_sooner = sooner.set
    while True:
        due = ctx.tokens.next_due()
        # a millisecond late rather than early: uvloop's timers count whole ones
        until_due = TICK if due is None else due - time.time() + 0.001
        sooner.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(TICK, next_ping - loop.time(), until_due))):
                await sooner.wait()
        # a bug in a wheel raises: the node's task group fails, and the edge
        # with it (its traceback once), not a log line every second
        ctx.tokens.tick(time.time())
        ctx.caps.tick(time.monotonic())
        if loop.time() >= next_ping:
            next_ping = loop.time() + interval
            for stream in ctx.registry.streams():
                stream.ping()


async def drain(ctx: EdgeContext, period: float) -> None:
    """Leave the pool gently (a rolling deploy): readiness turns 503 and new
    streams are sent away first, then open streams are closed in shuffled,
    staggered batches over ``period`` so their reconnects spread over the other
    edges, then the node queue goes away with the connection."""
    ctx.draining = True
    streams = list(ctx.registry.streams())
    random.shuffle(streams)
    log.info("draining %d streams over %.1fs", len(streams), period)
    step = max(1, -(-len(streams) // DRAIN_STEPS))
    pause = period / DRAIN_STEPS
    for i in range(0, len(streams), step):
        for stream in streams[i : i + step]:
            stream.close(CloseReason.DRAIN)
        if i + step < len(streams):
            await asyncio.sleep(pause)
    for stream in ctx.registry.streams():  # any that arrived meanwhile
        stream.close(CloseReason.DRAIN)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await ctx.node.seam.idle()
    # Closing the connection deletes the exclusive node queue and its bindings.
    await ctx.node.link.supervisor.close()


def close_all(ctx: EdgeContext) -> None:
    """The immediate variant, for a second signal or an in-process shutdown."""
    ctx.draining = True
    for stream in ctx.registry.streams():
        stream.close(CloseReason.DRAIN)
