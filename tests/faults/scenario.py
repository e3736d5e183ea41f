"""A running workload for fault tests: browsers on every edge, a steady publisher."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import jwt
from ssehub.publisher import Publisher

from tests.faults.ledger import Browser, Ledger
from tests.support import SECRET, uid


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, "HS256")


@dataclass
class Workload:
    ledger: Ledger
    browsers: list[Browser]
    probe: Browser
    stop_publishing: asyncio.Event
    publisher: asyncio.Task[None]

    async def wait_some(self, n: int = 3, timeout: float = 20.0) -> None:
        """Until every browser has at least ``n`` events."""
        async with asyncio.timeout(timeout):
            for b in self.browsers:
                while len(b.seqs) < n:
                    b.got.clear()
                    await b.got.wait()

    async def probe_latency(self, timeout: float = 60.0) -> float:
        """Publish one event to the probe user; seconds until its browser has it."""
        t0 = time.monotonic()
        before = len(self.probe.seqs)
        await self.ledger.publisher.send_event_to_user(self.probe.user, "probe", None, key=uid("p"))
        self.ledger.sent[self.probe.user] += 1
        async with asyncio.timeout(timeout):
            while len(self.probe.seqs) == before:
                self.probe.got.clear()
                await self.probe.got.wait()
        return time.monotonic() - t0

    async def finish(self, timeout: float = 60.0) -> dict[str, int]:
        self.stop_publishing.set()
        await self.publisher  # its last event is counted before the books are closed
        with contextlib.suppress(TimeoutError):
            await self.ledger.settle([*self.browsers, self.probe], timeout)
        return self.ledger.report([*self.browsers, self.probe])


@contextlib.asynccontextmanager
async def workload(
    publisher: Publisher,
    edges: list[str],
    users: int = 12,
    per_user: int = 2,
    pause: float = 0.004,
    conversations: int = 0,
) -> AsyncIterator[Workload]:
    """``conversations``: that many, each with every ``conversations``-th user,
    get every fourth event (membership set before anything is published)."""
    names = [uid("w") for _ in range(users)]
    browsers = [
        Browser(u, token(u), edges[i % len(edges) :] + edges[: i % len(edges)])
        for u in names
        for i in range(per_user)
    ]
    probe_user = uid("probe")
    probe = Browser(probe_user, token(probe_user), edges)
    ledger = Ledger(publisher, names)
    for i in range(conversations):
        conv = uid("conv")
        ledger.conversations[conv] = names[i::conversations]
        await publisher.set_members(conv, ledger.conversations[conv])
    stop_browsers, stop_publishing = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(b.run(stop_browsers)) for b in [*browsers, probe]]
    async with asyncio.timeout(20):
        for b in [*browsers, probe]:
            await b.reconnected.wait()
    publisher = asyncio.create_task(ledger.publish(stop_publishing, pause))
    try:
        yield Workload(ledger, browsers, probe, stop_publishing, publisher)
    finally:
        stop_publishing.set()
        await publisher
        stop_browsers.set()
        await asyncio.gather(*tasks, return_exceptions=True)


CLEAN = {"lost": 0, "duplicated": 0, "reordered": 0, "unexpected": 0}
