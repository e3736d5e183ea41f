"""One edge process's background side, wired once: the broker link
(edge/link.py), the delivery design's routing (edge/routing.py), the seam that
routes users and keeps every stream exact (edge/seam.py), the inbox of the
node queue (edge/inbox.py), stream caps across edges (edge/caps.py),
receipts (edge/receipts.py) and heartbeats.

``run`` owns every task the edge starts in the background: the link's
supervisor, heartbeats, the node-wide timers, each route change and receipt
confirmation, all in one task group. An unexpected exception in any of them
is a bug: it ends ``run`` with that exception, and the edge process with it
(edge/app.py), instead of being logged and retried forever. Expected
outcomes (the broker going away, a store read failing) are handled where they
happen.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson
from ssehub import topology
from ssehub.config import Settings
from ssehub.edge.caps import StreamCaps
from ssehub.edge.inbox import Inbox
from ssehub.edge.link import EdgeLink
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.receipts import Receipts
from ssehub.edge.registry import Registry
from ssehub.edge.routing import routing_for
from ssehub.edge.seam import Seam
from ssehub.fastpath.marshal import Publish
from ssehub.partition import partition_of
from ssehub.sse import render_event
from ssehub.storage.identity import StoreIdentity
from ssehub.storage.store import EventStore, Position
from ssehub.topology import Notice

log = logging.getLogger("ssehub.edge")
T = TypeVar("T")


class EdgeNode:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        metrics: EdgeMetrics,
        store: EventStore,
        identity: StoreIdentity | None = None,
    ) -> None:
        """``identity``: the store's, checked with the broker on every link."""
        self.node_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._settings = settings
        self._store = store
        self._group: asyncio.TaskGroup | None = None
        partition = functools.partial(partition_of, partitions=settings.partitions)
        self.receipts = Receipts(spawn=self.spawn)
        self.routing = routing_for(settings, self.node_id, self._signal, partition)
        self.seam = Seam(
            registry, self.routing, self._read, self.spawn, partition, settings.partitions
        )
        self.caps = StreamCaps(
            self.node_id,
            settings.max_streams_per_user,
            settings.presence_heartbeat,
            registry.streams_of,
            self.routing.caps,
            time.monotonic(),
        )
        inbox = Inbox(
            registry,
            metrics,
            {
                Notice.JOINED: lambda _user, body, _headers: self.routing.answered(body),
                Notice.RESYNC: lambda _user, body, _headers: self.seam.resync(_partitions(body)),
                Notice.CAPS: lambda _user, body, _headers: self.caps.receive(
                    body, time.monotonic()
                ),
            },
        )
        self.link = EdgeLink(
            settings,
            self.node_id,
            self.routing,
            self.receipts,
            inbox,
            on_up=self.seam.linked,
            on_down=self.seam.lost,
            identity=identity,
        )

    @property
    def ready(self) -> bool:
        return self.link.ready

    async def run(self, *more: Coroutine[Any, Any, None]) -> None:
        """Until cancelled: the link, heartbeats, ``more`` (the node's timers)
        and every task spawned meanwhile. Raises what one of them raised."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self.link.supervisor.run(), name="edge-amqp")
            group.create_task(self._heartbeats(), name="edge-heartbeats")
            for work in more:
                group.create_task(work)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A background task of the node's task group."""
        group = self._group
        if group is not None:
            try:
                return group.create_task(coro)
            except RuntimeError:  # the group is stopping: the link is gone with it
                pass
        # Not running (yet, or any more): no link, so the work ends at once
        # (a route change finds the link down, a receipt waits for none).
        return asyncio.get_running_loop().create_task(coro)

    def released(self, user_id: str) -> None:
        """The user has no stream here any more (the seam routes them away)."""
        self.receipts.forget(user_id)

    async def _read(self, user_id: str) -> tuple[Position, bytes | None]:
        """A new stream's position, and with presence its ``presence:snapshot``:
        read side by side, after the route (edge/seam.py), so any later change
        reaches the stream live, behind them."""
        settings = self._settings
        if not settings.presence:
            return await self._store.position(user_id), None
        position, online = await asyncio.gather(
            self._store.position(user_id),
            self._store.online_peers(user_id, settings.presence_max_members),
        )
        return position, render_event(None, "presence:snapshot", orjson.dumps({"online": online}))

    def _signal(self, message: Publish) -> None:
        self.link.signal(message)

    async def _heartbeats(self) -> None:
        """Tell the dispatcher this node is alive: a silent node's users go
        offline, and (per-node delivery) are no longer routed here."""
        n = self._settings.partitions
        beats = [
            topology.presence_message(self.node_id, None, True, topology.dispatch_queue(p, n))
            for p in range(n)
        ]
        while True:
            for beat in beats:  # best effort: lost with the link, the next one goes
                self.link.signal(beat)
            await asyncio.sleep(self._settings.presence_heartbeat)


def _partitions(body: bytes) -> list[int] | None:
    """A ``resync`` names the partitions whose dispatcher lost its table; an
    empty body (or one we cannot read): all of them."""
    try:
        doc = orjson.loads(body) if body else None
        return [int(p) for p in doc["partitions"]] if doc else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
