"""A small real SSE client for tests: httpx streaming over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    @property
    def json(self) -> Any:
        return orjson.loads(self.data)

    @property
    def seq(self) -> int | None:
        return int(self.id) if self.id is not None else None


@dataclass
class SSEClient:
    """Reads one stream in the background; events land in ``queue``."""

    response: httpx.Response
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_id: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    comment_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        cur = Event()
        has = False
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if has:
                        if cur.id is not None:
                            self.last_id = cur.id
                        await self.queue.put(cur)
                    cur, has = Event(), False
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    self.comment_seen.set()
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "retry":
                        self.retry = int(value)
                    elif name == "data":
                        cur.data = value if not has or not cur.data else cur.data + "\n" + value
                        has = True
                    elif name == "event":
                        cur.event, has = value, True
                    elif name == "id":
                        cur.id, has = value, True
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self.ended.set()
            self.queue.put_nowait(None)

    async def next(self, timeout: float = 10.0) -> Event:
        async with asyncio.timeout(timeout):
            ev = await self.queue.get()
        if ev is None:
            raise EOFError("stream ended")
        return ev

    async def take(
        self, n: int, timeout: float = 10.0, *, events: str | None = None
    ) -> list[Event]:
        """The next ``n`` events (optionally only those named ``events``)."""
        out: list[Event] = []
        async with asyncio.timeout(timeout):
            while len(out) < n:
                ev = await self.queue.get()
                if ev is None:
                    raise EOFError(f"stream ended after {len(out)} of {n} events")
                if events is None or ev.event == events:
                    out.append(ev)
        return out

    async def until(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> list[Event]:
        """Events up to and including the first that satisfies ``pred``."""
        out: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.queue.get()
                if ev is None:
                    raise EOFError(f"stream ended; got {[(e.event, e.id) for e in out]}")
                out.append(ev)
                if pred(ev):
                    return out

    def pending(self) -> list[Event]:
        """What has arrived and not been taken, without waiting."""
        out = []
        while not self.queue.empty():
            ev = self.queue.get_nowait()
            if ev is not None:
                out.append(ev)
        return out

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.response.aclose()


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str,
    token: str | None = None,
    *,
    how: str = "query",
    last_event_id: str | None = None,
    last_id_query: bool = False,
    headers: dict[str, str] | None = None,
):  # type: ignore[no-untyped-def]
    """Open ``/sse/connect`` and yield (response, client). The client is not
    started for non-200 answers, so the caller can read the body."""
    params: dict[str, str] = {}
    hdrs = dict(headers or {})
    if token is not None:
        if how == "query":
            params["token"] = token
        elif how == "bearer":
            hdrs["Authorization"] = f"Bearer {token}"
        else:
            hdrs["X-Auth-Token"] = token
    if last_event_id is not None:
        if last_id_query:
            params["lastEventId"] = last_event_id
        else:
            hdrs["Last-Event-ID"] = last_event_id
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=None)) as http:
        req = http.build_request("GET", "/sse/connect", params=params, headers=hdrs)
        resp = await http.send(req, stream=True)
        client = SSEClient(resp)
        if resp.status_code == 200:
            client.start()
        try:
            yield resp, client
        finally:
            await client.close()
