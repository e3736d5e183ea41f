"""The replay/live seam of every stream on this edge, and the routes it rests on.

A stream opens in this order (``open``), which is what makes it exact:

1. register it: live events for its user are *held* in it from now on;
2. route the user here (``Routing.apply``: a join answered by the
   dispatcher, or a bind answered by the broker) and wait for the answer;
3. read the user's position (and presence snapshot) from the store;

then the response writes ``connected``, replays what is stored after the
cursor, applies the held events and goes live (edge/response.py). Every event
committed before the read in 3 is in the replay; every event published after
the answer in 2 reaches this node, so it is held or live; the stream's cursor
drops the overlap (edge/stream.py). The proof for each design is in
docs/architecture.md ("Delivery to edges").

Routes follow the registry: a user is routed here while one of their streams
is open here. Changes for one user are serialised and each re-reads what is
wanted when it runs, so a connect racing the last disconnect always ends
routed. When routes are lost (the broker link, or the dispatcher's table:
``resync``) every affected user is routed again, and once that is answered
their streams re-read the store: events routed nowhere meanwhile are only
there. Each partition counts its losses (its *epoch*): an answer to a route
sent before a loss does not count. A stream that cannot wait for its answer
(``Routing.budget``) goes on at once, and re-reads the store once it comes
(the user is *late*).

Pure but for the routing it is given: no broker, no store of its own
(tests/unit/edge/test_seam.py drives it with fakes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ssehub.amqp import BROKER_ERRORS
from ssehub.edge.registry import Registry
from ssehub.edge.stream import Stream
from ssehub.errors import BrokerUnavailable
from ssehub.storage.store import Position

log = logging.getLogger("ssehub.edge")

T = TypeVar("T")


class Spawn(Protocol):
    """Runs a coroutine as a task of the node's task group (edge/node.py)."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> asyncio.Task[T]: ...


# the user's position and presence snapshot, read after the route (edge/context.py)
Read = Callable[[str], Awaitable[tuple[Position, bytes | None]]]


class Routing(Protocol):
    """What the seam needs of a delivery design (edge/routing.py)."""

    # what ``apply`` returns when the user was already routed: whether another
    # edge may hold the user too (edge/caps.py sends a hello only then)
    shared_when_routed: bool

    def budget(self, user_id: str, now: float) -> float | None:
        """How long a new stream may wait for its route (None: until answered)."""

    async def apply(self, user_id: str, join: bool) -> bool:
        """Route ``user_id`` here (or stop); returns whether another edge may hold
        the user. Raises BrokerUnavailable (or a broker error)."""

    def broken(self) -> None:
        """``apply`` failed with a broker error."""


@dataclass(frozen=True, slots=True)
class Opened:
    position: Position
    snapshot: bytes | None  # ``presence:snapshot``, or None with presence off
    shared: bool  # another edge may hold the user too (edge/caps.py)


class Seam:
    def __init__(
        self,
        registry: Registry,
        routing: Routing,
        read: Read,
        spawn: Spawn,
        partition: Callable[[str], int],
        partitions: int,
    ) -> None:
        """``spawn``: runs a background route change in the node's task group.
        ``partition``: the dispatch partition of a user (ssehub.partition)."""
        self._registry = registry
        self._routing = routing
        self._read = read
        self._spawn = spawn
        self._partition = partition
        self._epochs = [0] * partitions
        self._up = False  # a broker link is up and set up
        self.routed: set[str] = set()
        # users whose streams went on before their route was answered: they
        # re-read the store once it is
        self._late: set[str] = set()
        # user -> (lock, number of changes using it); dropped when unused
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._pending: set[asyncio.Task[bool]] = set()

    # -- a stream's start and end ---------------------------------------------
    async def open(self, stream: Stream) -> Opened:
        """Register ``stream``, route its user here, then read the position.
        Raises BrokerUnavailable or StoreUnavailable; ``close`` it either way."""
        self._registry.add(stream)  # before any await: the caller's caps check too
        shared = await self.route(stream.user_id)
        position, snapshot = await self._read(stream.user_id)
        return Opened(position, snapshot, shared)

    def close(self, stream: Stream) -> bool:
        """Unregister ``stream``; True when it was its user's last one here
        (the route goes, in the background). Idempotent."""
        if not self._registry.remove(stream):
            return False
        self._background(stream.user_id)
        return True

    async def route(self, user_id: str) -> bool:
        """Return once live events for ``user_id`` reach this node, or will and
        the user's streams re-read the store then. Returns whether another edge
        may hold the user. Raises BrokerUnavailable when the link is down."""
        if not self._up:
            raise BrokerUnavailable("not connected to RabbitMQ")
        if user_id in self.routed:
            return self._routing.shared_when_routed
        work = self._background(user_id)
        try:
            shared = await asyncio.wait_for(
                asyncio.shield(work), self._routing.budget(user_id, time.monotonic())
            )
        except TimeoutError:
            self._late.add(user_id)  # goes on; its streams re-read once routed
            return True
        if user_id in self.routed:
            return shared
        if not self._up:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return True  # routes were lost meanwhile: routing again re-reads the streams

    # -- the broker link and the dispatcher's table ----------------------------
    def linked(self) -> None:
        """A new link is set up (its node queue is new): route everyone again."""
        self._up = True
        self._reroute(self._registry.users())

    def lost(self) -> None:
        """The link went down: every route went with the node queue."""
        self._up = False
        self._epochs = [e + 1 for e in self._epochs]
        self.routed.clear()

    def resync(self, partitions: Iterable[int] | None = None) -> None:
        """The dispatcher of ``partitions`` (None: all) lost its table: route
        their users again."""
        if partitions is None:
            users = self._registry.users()
        else:
            wanted = set(partitions)
            users = [u for u in self._registry.users() if self._partition(u) in wanted]
        self._reroute(users)

    async def idle(self) -> None:
        """Wait for the route changes in flight (tests, and a drain)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- reconciling a user's route with the registry ------------------------
    def _reroute(self, users: list[str]) -> None:
        for partition in {self._partition(u) for u in users}:
            self._epochs[partition] += 1
        for user in users:
            self.routed.discard(user)
            self._late.add(user)
            self._background(user)

    def _background(self, user_id: str) -> asyncio.Task[bool]:
        task = self._spawn(self._reconcile(user_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _reconcile(self, user_id: str) -> bool:
        """Make the route of ``user_id`` what the registry wants now; returns
        whether another edge may hold the user (False when nothing was sent)."""
        lock, users = self._locks.setdefault(user_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._change(user_id)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[user_id]

    async def _change(self, user_id: str) -> bool:
        want = self._registry.has_user(user_id)
        if not want:
            self._late.discard(user_id)
        routed = user_id in self.routed
        if not self._up or want == routed:
            return False
        partition = self._partition(user_id)
        epoch = self._epochs[partition]
        if not want:
            self.routed.discard(user_id)
        try:
            shared = await self._routing.apply(user_id, want)
        except BROKER_ERRORS as exc:  # the link is going (or gone): its setup re-routes
            log.warning("routing %r failed: %s", user_id, exc)
            self._routing.broken()
            return False
        if want and epoch == self._epochs[partition]:  # else: routes were lost meanwhile
            self.routed.add(user_id)
            if user_id in self._late:
                self._late.discard(user_id)
                for stream in self._registry.streams_of(user_id):
                    stream.request_sync()
        return shared
