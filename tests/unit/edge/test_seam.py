"""ssehub.edge.seam: register → route → read, and the routes it rests on,
driven with a routing whose answers the test gives (no broker, no store)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from ssehub.edge.registry import Registry
from ssehub.edge.seam import Seam
from ssehub.edge.stream import Stream
from ssehub.errors import BrokerUnavailable
from ssehub.storage.store import Position

T = TypeVar("T")
WAIT = 5.0


class Routing:
    """Each ``apply`` waits until the test answers it (or fails it)."""

    def __init__(self, shared_when_routed: bool = False, budget: float | None = None) -> None:
        self.shared_when_routed = shared_when_routed
        self._budget = budget
        self.calls: list[tuple[str, bool]] = []
        self.pending: list[asyncio.Future[bool]] = []
        self.broke = 0
        self.log: list[str] = []

    def budget(self, user_id: str, now: float) -> float | None:
        return self._budget

    async def apply(self, user_id: str, join: bool) -> bool:
        self.calls.append((user_id, join))
        self.log.append(f"apply {user_id} {join}")
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(answer)
        result = await answer
        self.log.append(f"answered {user_id}")
        return result

    def broken(self) -> None:
        self.broke += 1

    async def answer(self, shared: bool = False) -> None:
        """Answer the oldest route change once it has been asked for."""
        async with asyncio.timeout(WAIT):
            while not self.pending:
                await asyncio.sleep(0)  # wait-ok: the seam's background task's turn
        self.pending.pop(0).set_result(shared)


class Harness:
    def __init__(self, routing: Routing, partitions: int = 1) -> None:
        self.registry = Registry()
        self.routing = routing
        self.reads: list[str] = []
        self.failures: list[BaseException] = []
        self.seam = Seam(
            self.registry,
            routing,
            self.read,
            self.spawn,
            lambda user: int(user.rsplit("-", 1)[-1]) % partitions,  # "u-3": partition 3 % n
            partitions,
        )

    async def read(self, user: str) -> tuple[Position, bytes | None]:
        self.reads.append(user)
        self.routing.log.append(f"read {user}")
        return Position(7, 0), None

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._failed)
        return task

    def _failed(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]


def stream(user: str, n: int = 1) -> Stream:
    s = Stream(user, f"{user}-s{n}", 1 << 20)
    s._syncing = False  # live: a re-read shows as needs_sync
    return s


async def test_a_stream_is_registered_then_routed_then_read() -> None:
    routing = Routing()
    h = Harness(routing)
    h.seam.linked()
    s = stream("u-0")
    opening = asyncio.ensure_future(h.seam.open(s))
    await asyncio.sleep(0)  # wait-ok: one turn; the open waits for its route
    assert h.registry.has_user("u-0")  # registered before anything else
    assert h.reads == []  # not read before the route is answered
    await routing.answer(shared=True)
    opened = await opening
    assert routing.log == ["apply u-0 True", "answered u-0", "read u-0"]
    assert opened.position.last_seq == 7 and opened.shared is True
    assert "u-0" in h.seam.routed


async def test_a_second_stream_of_a_routed_user_does_not_route_again() -> None:
    routing = Routing(shared_when_routed=False)
    h = Harness(routing)
    h.seam.linked()
    first = asyncio.ensure_future(h.seam.open(stream("u-0", 1)))
    await routing.answer()
    await first
    opened = await h.seam.open(stream("u-0", 2))
    assert routing.calls == [("u-0", True)]
    assert opened.shared is False  # joins: edges already heard from are known


async def test_a_stream_that_cannot_wait_goes_on_and_re_reads_once_routed() -> None:
    routing = Routing(budget=0.0)  # the dispatcher is away
    h = Harness(routing)
    h.seam.linked()
    s = stream("u-0")
    opened = await h.seam.open(s)  # does not wait for the answer
    assert opened.shared is True  # caps: it cannot know, so it says hello
    assert not s.needs_sync
    await routing.answer()
    await h.seam.idle()
    assert s.needs_sync  # events routed nowhere meanwhile are only in the store
    assert "u-0" in h.seam.routed


async def test_an_answer_to_a_route_sent_before_the_link_went_does_not_count() -> None:
    routing = Routing(budget=0.0)
    h = Harness(routing)
    h.seam.linked()
    s = stream("u-0")
    await h.seam.open(s)
    h.seam.lost()  # the node queue went, with every route
    await routing.answer()  # the old link's answer, late
    await h.seam.idle()
    assert "u-0" not in h.seam.routed and not s.needs_sync
    refused = stream("u-1")
    with pytest.raises(BrokerUnavailable):  # no link: a new stream is sent to retry
        await h.seam.open(refused)
    assert h.seam.close(refused) is True  # (what the response does, whatever happened)
    h.seam.linked()  # a new link routes every user with a stream again
    await routing.answer()
    await h.seam.idle()
    assert routing.calls[-1] == ("u-0", True)
    assert "u-0" in h.seam.routed and s.needs_sync  # then its stream re-reads


async def test_a_resync_routes_again_only_the_users_of_its_partitions() -> None:
    routing = Routing()
    h = Harness(routing, partitions=2)
    h.seam.linked()
    streams = {u: stream(u) for u in ("u-0", "u-1", "u-2")}
    for s in streams.values():
        opening = asyncio.ensure_future(h.seam.open(s))
        await routing.answer()
        await opening
    h.seam.resync([1])  # the dispatcher of partition 1 took over: its table is empty
    await routing.answer()
    await h.seam.idle()
    assert routing.calls[3:] == [("u-1", True)]
    assert [u for u, s in streams.items() if s.needs_sync] == ["u-1"]
    assert h.seam.routed == {"u-0", "u-1", "u-2"}


async def test_a_connect_racing_the_last_disconnect_ends_routed() -> None:
    routing = Routing()
    h = Harness(routing)
    h.seam.linked()
    first = stream("u-0", 1)
    opening = asyncio.ensure_future(h.seam.open(first))
    await routing.answer()
    await opening
    assert h.seam.close(first) is True  # the last one: the leave goes in the background
    second = asyncio.ensure_future(h.seam.open(stream("u-0", 2)))  # ... while it runs
    await routing.answer()  # the leave
    await routing.answer()  # the join after it
    await second
    await h.seam.idle()
    assert routing.calls == [("u-0", True), ("u-0", False), ("u-0", True)]
    assert "u-0" in h.seam.routed
    assert h.seam.close(first) is False  # closing twice changes nothing


async def test_a_broker_error_is_handed_to_the_routing_and_a_bug_is_raised() -> None:
    routing = Routing()
    h = Harness(routing)
    h.seam.linked()
    opening = asyncio.ensure_future(h.seam.open(stream("u-0")))
    async with asyncio.timeout(WAIT):
        while not routing.pending:
            await asyncio.sleep(0)  # wait-ok: the route change's turn
    routing.pending.pop(0).set_exception(BrokerUnavailable("channel closed"))
    await opening  # goes on; the link's next setup routes it again
    assert routing.broke == 1 and h.failures == []
    bug = asyncio.ensure_future(h.seam.open(stream("u-1")))
    async with asyncio.timeout(WAIT):
        while not routing.pending:
            await asyncio.sleep(0)  # wait-ok: the route change's turn
    routing.pending.pop(0).set_exception(AttributeError("a bug"))
    with pytest.raises(AttributeError):
        await bug
    await h.seam.idle()
    assert [type(e) for e in h.failures] == [AttributeError]  # the node's group fails
