"""Joining users at the dispatcher, in rounds (``SSEHUB_DELIVERY=nodes``).

With per-node delivery an edge has no per-user binding: it tells the
dispatcher which users it holds, and the dispatcher answers each round with
``joined`` on the node's queue after the deliveries it routed without the
join (dispatcher/routes.py). So once the answer is in, every later event of
those users reaches this node, and the store holds every earlier one: the
same point in a stream's start as a bind's reply (edge/seam.py).

Requests made while a round waits for its answer go in the next round, one
message for all of them (a reconnect storm joins thousands of users in a few
dozen messages). A round waits for its answer as long as the link lives: with
no dispatcher running, the round waits in the dispatch queue for the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator

import orjson
from ssehub import topology
from ssehub.coalesce import Coalescer
from ssehub.errors import BrokerUnavailable
from ssehub.fastpath.marshal import Publish

Op = tuple[str, bool]  # user id, join (True) or leave


class Joiner:
    def __init__(
        self,
        node_id: str,
        publish: Callable[[Publish], None],
        refs: Iterator[int] | None = None,
        queue: str = topology.DISPATCH.name,
    ) -> None:
        """``refs``: the node's round numbers, shared by the joiners of all its
        links and partitions, so that a late answer to a round of an earlier
        link (its queue has the same name) never resolves a round of this one.
        ``queue``: the dispatch queue of the partition this joiner serves."""
        self._node_id = node_id
        self._publish = publish
        self._queue = queue
        self._refs = refs if refs is not None else itertools.count(1)
        self._rounds: Coalescer[Op, bool] = Coalescer(self._send, False)
        self._waiting: dict[int, asyncio.Future[list[str]]] = {}
        self._since: float | None = None  # when the round waiting for its answer was sent
        self._failed: BrokerUnavailable | None = None

    def waited(self, now: float) -> float:
        """How long the round in flight has waited for its answer (0: none)."""
        return 0.0 if self._since is None else now - self._since

    async def apply(self, user_id: str, join: bool) -> bool:
        """Return once the dispatcher has applied it: whether another edge holds
        the user too (edge/caps.py). Raises BrokerUnavailable."""
        return await self._rounds.get((user_id, join))

    async def _send(self, ops: list[Op]) -> dict[Op, bool]:
        if self._failed is not None:  # the link is gone: nothing sent would be answered
            raise self._failed
        ref = next(self._refs)
        answer: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._waiting[ref] = answer
        self._since = time.monotonic()
        try:
            self._publish(topology.route_message(self._node_id, ref, ops, self._queue))
            shared = set(await answer)
        finally:
            self._waiting.pop(ref, None)
            self._since = None
        return {op: op[0] in shared for op in ops}

    def resolve(self, ref: int, shared: list[str]) -> bool:
        """Answer round ``ref``; False if it is not one of ours in flight (a round
        of an earlier link, another partition's, or one answered twice)."""
        answer = self._waiting.get(ref)
        if answer is None or answer.done():
            return False
        answer.set_result(shared)
        return True

    def fail(self, exc: BrokerUnavailable) -> None:
        """The link went down: no answer will come, to this round or a later one."""
        self._failed = exc
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(exc)


def parse_joined(body: bytes) -> tuple[int, list[str]] | None:
    """A ``joined`` notice's round number and shared users; None if malformed."""
    try:
        doc = orjson.loads(body)
        return int(doc["ref"]), [str(u) for u in doc["shared"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
