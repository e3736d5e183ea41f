"""Clients that behave like browsers under faults, and the ledger that checks them.

A ``Browser`` reconnects like EventSource does: on any end of the stream it
comes back (to the next edge in its list) with the last id it saw as
``Last-Event-ID``. It records every numbered event; at the end each user's
record must be exactly 1..N.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from ssehub.errors import PublishError
from ssehub.publisher import Publisher


@dataclass
class Browser:
    user: str
    token: str
    edges: list[str]
    seqs: list[int] = field(default_factory=list)
    last_id: str | None = None
    connects: int = 0
    current: str | None = None  # the edge of the open stream
    not_recovered: int = 0
    last_event_at: float = 0.0
    reconnected: asyncio.Event = field(default_factory=asyncio.Event)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        i = random.randrange(len(self.edges))
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as http:
            while not stop.is_set():
                edge = self.edges[i % len(self.edges)]
                i += 1
                with contextlib.suppress(httpx.HTTPError, OSError):
                    await self._stream(http, edge, stop)
                # EventSource waits retry: ms; we keep it short and jittered
                await asyncio.sleep(0.05 + random.random() * 0.1)  # wait-ok: reconnect delay

    async def _stream(self, http: httpx.AsyncClient, edge: str, stop: asyncio.Event) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id is not None else {}
        req = http.build_request(
            "GET", f"{edge}/sse/connect", params={"token": self.token}, headers=headers
        )
        resp = await http.send(req, stream=True)
        try:
            if resp.status_code != 200:
                raise AssertionError(f"{self.user}: {resp.status_code} from {edge}")
            event, ident = "", None
            stopper = asyncio.ensure_future(stop.wait())
            lines = resp.aiter_lines().__aiter__()
            while True:
                nxt = asyncio.ensure_future(lines.__anext__())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    nxt.cancel()
                    return
                try:
                    line = nxt.result()
                except StopAsyncIteration:
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line.startswith("data:") and event == "connected":
                    self.current = edge
                    self.connects += 1
                    self.reconnected.set()
                    if '"recovered":false' in line and self.last_id is not None:
                        self.not_recovered += 1
                elif line == "":
                    if ident is not None:
                        if event != "connected":
                            self.seqs.append(int(ident))
                            self.last_event_at = time.monotonic()
                            self.got.set()
                        self.last_id = ident
                    event, ident = "", None
        finally:
            with contextlib.suppress(Exception):
                stopper.cancel()
            await resp.aclose()

    def problems(self, expected: int) -> dict[str, int]:
        counts = Counter(self.seqs)
        return {
            "lost": len(set(range(1, expected + 1)) - set(counts)),
            "duplicated": sum(c - 1 for c in counts.values() if c > 1),
            "reordered": sum(1 for a, b in zip(self.seqs, self.seqs[1:], strict=False) if b < a),
            "unexpected": len([s for s in counts if s > expected or s < 1]),
        }


@dataclass
class Ledger:
    """Publishes continuously, to users and to conversations with a fixed
    membership, and knows how many events each user must receive."""

    publisher: Publisher
    users: list[str]
    conversations: dict[str, list[str]] = field(default_factory=dict)
    sent: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    published: int = 0

    async def publish(self, stop: asyncio.Event, rate_pause: float = 0.005) -> None:
        convs = list(self.conversations)
        n = 0
        while not stop.is_set():
            if convs and n % 4 == 3:
                conv = convs[n % len(convs)]
                members = self.conversations[conv]
                sender = members[n % len(members)]
                # the key makes publisher retries (across broker restarts) exactly-once
                await self._confirmed(
                    lambda c=conv, s=sender, k=f"{conv}-{n}", i=n: (
                        self.publisher.broadcast_to_conversation(
                            c, "said", {"n": i}, exclude=[s], key=k
                        )
                    )
                )
                self.sent.update(m for m in members if m != sender)
            else:
                user = self.users[n % len(self.users)]
                key = f"{user}-{self.sent[user] + 1}-{n}"
                await self._confirmed(
                    lambda u=user, k=key, i=n: self.publisher.send_event_to_user(
                        u, "tick", {"n": i}, key=k
                    )
                )
                self.sent[user] += 1
            n += 1
            self.published += 1
            await asyncio.sleep(rate_pause)  # wait-ok: pacing the publisher

    async def _confirmed(self, send: Callable[[], Awaitable[str]]) -> None:
        while True:
            try:
                await send()
                return
            except PublishError:  # broker down for longer than the client retries
                self.errors += 1

    async def settle(self, browsers: list[Browser], timeout: float = 30.0) -> None:
        """Wait until every browser holds as many events as were sent to its user."""
        async with asyncio.timeout(timeout):
            for b in browsers:
                while len(set(b.seqs)) < self.sent[b.user]:
                    b.got.clear()
                    await b.got.wait()

    def report(self, browsers: list[Browser]) -> dict[str, int]:
        total: Counter[str] = Counter()
        for b in browsers:
            total.update(b.problems(self.sent[b.user]))
        return {k: total[k] for k in ("lost", "duplicated", "reordered", "unexpected")}
