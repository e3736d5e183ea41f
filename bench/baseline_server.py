"""The baseline: what a Python developer would write without ssehub.

FastAPI + sse-starlette, one in-memory ``asyncio.Queue`` per connection, the
same JWT check (HS256, ``sub``), an ``id:`` per event (a per-user counter, so
the load client checks it like ssehub's), and no store, broker or replay.
``POST /bench/fill`` is the in-process publisher: it puts events into every
connected user's queues at once, the counterpart of the backlog the edge
benchmark drains. Run: ``uvicorn bench.baseline_server:app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import jwt
from fastapi import FastAPI, HTTPException, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

SECRET = os.environ.get("BASELINE_SECRET", "baseline-secret-0123456789abcdef0123")
PING = float(os.environ.get("BASELINE_PING", "15"))

app = FastAPI()
queues: dict[str, set[asyncio.Queue[ServerSentEvent]]] = {}
seqs: dict[str, int] = {}


@app.get("/healthz")
async def healthz() -> dict[str, int]:
    return {"connections": sum(len(q) for q in queues.values())}


@app.get("/sse/connect")
async def connect(request: Request, token: str) -> EventSourceResponse:
    try:
        user = jwt.decode(token, SECRET, algorithms=["HS256"])["sub"]
    except (jwt.PyJWTError, KeyError) as exc:
        raise HTTPException(401, "bad token") from exc
    queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
    queues.setdefault(user, set()).add(queue)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(
                data=f'{{"userId":"{user}"}}', event="connected", id=str(seqs.get(user, 0))
            )
            while True:
                yield await queue.get()
        finally:
            conns = queues.get(user)
            if conns is not None:
                conns.discard(queue)
                if not conns:
                    del queues[user]

    return EventSourceResponse(stream(), ping=PING)


@app.post("/bench/fill")
async def fill(per_user: int = 10, pad: int = 64) -> dict[str, int]:
    """``per_user`` events to every connected user, as fast as they can be queued."""
    padding = "x" * pad
    n = 0
    for i in range(per_user):
        for user, conns in list(queues.items()):
            seq = seqs[user] = seqs.get(user, 0) + 1
            data = f'{{"t":{time.time_ns() // 1000},"n":{i},"p":"{padding}"}}'
            event = ServerSentEvent(data=data, event="bench", id=str(seq))
            for queue in conns:
                queue.put_nowait(event)
                n += 1
    return {"queued": n}
