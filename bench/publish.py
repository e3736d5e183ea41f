"""Publishers, each run in a process of its own (``in_processes``) so their CPU
is theirs and accounted for: AMQP on a confirm channel, pipelined (a window of
publishes in flight, then their confirms gathered), persistent.

Every event's data starts with the publisher's wall clock: ``{"t":<µs>,"n":<i>,"p":pad}``;
the load client reads ``t`` back to measure latency, and ``n`` to match fan-out copies.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import aio_pika
from pamqp import commands as spec
from ssehub import pack, topology
from ssehub.config import Settings
from ssehub.fastpath.confirms import BatchPublisher

WINDOW = 1000  # publishes in flight before their confirms are awaited
DEFAULT_PACK = Settings.model_fields["pack_deliveries"].default


def data_json(n: int, pad: str) -> bytes:
    """Microseconds, not nanoseconds: 19-digit numbers send the dispatcher's
    parser down its exact (stdlib json, ~3x slower) path; see the notes."""
    return b'{"t":%d,"n":%d,"p":"%s"}' % (time.time_ns() // 1000, n, pad.encode())


BATCH_ITEMS = 50  # items per `batch` message of a "batch" backlog


def event_body(n: int, pad: str, key: str) -> bytes:
    return b'{"event":"bench","data":%s,"id":"%s"}' % (data_json(n, pad), key.encode())


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _connect(
    url: str,
) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractChannel]:
    conn = await aio_pika.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    await topology.declare_core(ch)
    return conn, ch


async def _backlog(
    url: str, kind: str, users: list[str], per_user: int, start_seq: int, pad: str, run: str
) -> dict[str, Any]:
    conn, ch = await _connect(url)
    publisher = BatchPublisher(await ch.get_underlay_channel())
    deliver = kind in ("deliver", "deliver-packed")
    # "deliver-packed": what the dispatcher sends edges now (ssehub.pack)
    packer = pack.Packer(DEFAULT_PACK if kind == "deliver-packed" else 1)
    name = topology.DELIVER.name if deliver else topology.EVENTS.name
    items: list[bytes] = []  # kind "batch": BATCH_ITEMS per `batch` message
    persistent = spec.Basic.Properties(delivery_mode=2, content_type="application/json")
    t0, c0 = time.monotonic(), _cpu()
    batch: list[tuple[str, str, bytes, Any]] = []
    sent = 0
    for i in range(per_user):
        for user in users:
            n = start_seq + i
            if deliver:  # what the dispatcher sends an edge (it reads seq from the id: line)
                sse = b"id: %d\nevent: bench\ndata: %s\n\n" % (n, data_json(n, pad))
                packer.add(user, sse)  # (published below, in windows)
            elif kind == "batch":
                body = event_body(n, pad, f"{run}-{user}-{n}")
                items.append(b'{"user":"%s",%s' % (user.encode(), body[1:]))
                if len(items) >= BATCH_ITEMS:
                    batch.append((name, "batch", b"[%s]" % b",".join(items), persistent))
                    items = []
            else:
                body = event_body(n, pad, f"{run}-{user}-{n}")
                batch.append((name, f"user.{user}", body, persistent))
            sent += 1
            if len(batch) >= WINDOW:
                await publisher.publish(batch)
                batch = []
    if items:
        batch.append((name, "batch", b"[%s]" % b",".join(items), persistent))
    packer.flush()
    batch += packer.out
    for i in range(0, len(batch), WINDOW):
        await publisher.publish(batch[i : i + WINDOW])
    elapsed = time.monotonic() - t0
    cpu = _cpu() - c0
    await conn.close()
    return {"sent": sent, "elapsed": elapsed, "cpu_s": cpu}


async def _steady(
    url: str, users: list[str], rate: float, duration: float, pad: str, run: str
) -> dict[str, Any]:
    """``rate`` events/s for ``duration`` s, round-robin over ``users``: every
    2 ms tick, the events due are written at once (shared/wire.py), persistent,
    confirms awaited in the background. Each event's clock is read as it is
    built, so time spent waiting for the tick counts in its latency."""
    conn, ch = await _connect(url)
    publisher = BatchPublisher(await ch.get_underlay_channel())
    persistent = spec.Basic.Properties(delivery_mode=2, content_type="application/json")
    loop = asyncio.get_running_loop()
    confirms: list[asyncio.Future[None]] = []
    sent = 0
    t0, c0 = loop.time(), _cpu()
    end = t0 + duration
    while (now := loop.time()) < end:
        due = min(int(rate * (now - t0)) - sent, 2000)
        batch: list[tuple[str, str, bytes, Any]] = []
        for _ in range(max(due, 0)):
            user = users[sent % len(users)]
            body = event_body(sent, pad, f"{run}-{sent}")
            batch.append((topology.EVENTS.name, f"user.{user}", body, persistent))
            sent += 1
        if batch:
            confirms.append(publisher.send(batch))
        await asyncio.sleep(0.002)
    await asyncio.gather(*confirms)
    elapsed = loop.time() - t0
    cpu = _cpu() - c0
    await conn.close()
    return {"sent": sent, "elapsed": elapsed, "cpu_s": cpu}


def backlog_job(*args: Any) -> dict[str, Any]:
    return asyncio.run(_backlog(*args))


def steady_job(*args: Any) -> dict[str, Any]:
    return asyncio.run(_steady(*args))


async def in_processes(
    job: Callable[..., dict[str, Any]], arg_lists: list[tuple[Any, ...]]
) -> dict[str, Any]:
    """Run ``job`` once per argument tuple, each in its own process; sum the results."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(len(arg_lists), mp_context=get_context("spawn")) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, job, *a) for a in arg_lists))
    return {
        "sent": sum(r["sent"] for r in results),
        "elapsed": max(r["elapsed"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
    }


async def publish_backlog(
    url: str,
    kind: str,
    users: list[str],
    per_user: int,
    *,
    processes: int = 2,
    start_seq: int = 1,
    pad: int = 64,
    run: str = "b",
) -> dict[str, Any]:
    """``per_user`` events to each user (``kind``: "user" → sse.events, one event
    per message, through the dispatcher; "batch" → the same as `batch` messages of
    BATCH_ITEMS; "deliver" → sse.deliver frames, straight to edges, one message
    each; "deliver-packed" → the same in packs, as the dispatcher sends them). Each user's
    events come from one process, in order."""
    p = max(1, min(processes, len(users)))
    args = [(url, kind, users[k::p], per_user, start_seq, "x" * pad, f"{run}{k}") for k in range(p)]
    return await in_processes(backlog_job, args)


async def publish_steady(
    url: str,
    users: list[str],
    rate: float,
    duration: float,
    *,
    processes: int = 1,
    pad: int = 64,
    run: str = "s",
) -> dict[str, Any]:
    p = max(1, processes)
    args = [(url, users[k::p], rate / p, duration, "x" * pad, f"{run}{k}") for k in range(p)]
    return await in_processes(steady_job, args)


class Publisher:
    """A publisher in the runner's own process, for a few paced events."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: aio_pika.abc.AbstractConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None

    async def connect(self) -> None:
        self.conn, ch = await _connect(self.url)
        self.exchange = await ch.get_exchange(topology.EVENTS.name, ensure=False)

    async def publish(self, routing_key: str, body: bytes, key: str | None = None) -> None:
        assert self.exchange is not None
        await self.exchange.publish(
            aio_pika.Message(
                body,
                message_id=key,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key,
        )

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
