"""Partitioned dispatch (SSEHUB_PARTITIONS), side by side with one partition in
the same run: the dispatcher alone on PostgreSQL, the fan-out, the failover
of a killed process and the fair share settling. (The steady pipeline with
partitions is a variant of the steady ladder: scenarios_floor.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

import aio_pika
import orjson
from ssehub import pack, topology
from ssehub.partition import partition_of

from bench import stack
from bench.figure import Figure
from bench.harness import Ctx, cpu_meter
from bench.publish import Publisher, publish_backlog
from bench.scenarios_edge import users
from bench.scenarios_pipeline import SINK, fanout


class Sink:
    """A fake edge (node SINK): joins ``names`` at their partitions, ahead of
    any backlog, and counts deliveries (a pack counts its records)."""

    def __init__(self, url: str, names: list[str], partitions: int) -> None:
        self.url, self.names, self.partitions = url, names, partitions
        self.count = 0
        self.first = self.last = 0.0
        self.first_n = 0
        self.ready = asyncio.Event()
        self.reached = asyncio.Event()
        self.until = 10**12
        self._ref = 0
        self._channel: Any = None

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        notice = (message.headers or {}).get(topology.NOTICE_HEADER)
        if notice is not None:  # joined; or resync: a partition moved, join there again
            if notice in (topology.Notice.RESYNC, topology.Notice.RESYNC.encode()):
                doc = orjson.loads(message.body) if message.body else {}
                await self._join(doc.get("partitions") or range(self.partitions))
            return
        n = (message.headers or {}).get(pack.PACK_HEADER)
        got = n if isinstance(n, int) else 1
        self.last = time.monotonic()
        if not self.count:
            self.first, self.first_n = self.last, got
        self.count += got
        if self.count >= self.until:
            self.reached.set()

    async def _join(self, partitions: Iterable[int]) -> None:
        wanted = set(partitions)
        for p in wanted:
            some = [u for u in self.names if partition_of(u, self.partitions) == p]
            queue = topology.dispatch_queue(p, self.partitions)
            self._ref += 1
            join = topology.route_message(SINK, self._ref, [(u, True) for u in some], queue)
            headers = {topology.ROUTE_HEADER: 1}
            internal = await self._channel.get_exchange(topology.INTERNAL.name)
            await internal.publish(aio_pika.Message(join.body, headers=headers), join.routing_key)

    async def run(self, timeout: float) -> None:
        conn = await aio_pika.connect(self.url)
        try:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=1000)
            await topology.declare_deployment(ch, "classic", self.partitions)
            queue = await ch.declare_queue("bench.sink", durable=False, auto_delete=False)
            await queue.bind(topology.NODES.name, SINK)
            await queue.bind(topology.NODES.name, topology.ALL_NODES)
            self._channel = ch
            await self._join(range(self.partitions))
            await queue.consume(self._on_message, no_ack=True)
            self.ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reached.wait(), timeout)
        finally:
            await conn.close()


async def _dispatch_rate(
    ctx: Ctx, partitions: int, processes: int, names: list[str], per_user: int
) -> dict[str, Any]:
    """A backlog of `batch` messages queued first; events/s through ``processes``
    dispatchers (each pinned to its share) of ``partitions``, on PostgreSQL."""
    sc = ctx.scale
    total = len(names) * per_user
    env = {"SSEHUB_PARTITIONS": str(partitions)}
    async with ctx.stack("postgres", edge=False, dispatcher=False, env=env) as s:
        sink = Sink(ctx.amqp, names, partitions)
        sink.until = total
        counting = asyncio.create_task(sink.run(sc.timeout))
        await sink.ready.wait()
        run = f"p{partitions}x{processes}"
        await publish_backlog(ctx.amqp, "batch", names, per_user, processes=sc.publishers, run=run)
        procs = [
            await stack.start_dispatcher(s.env, ctx.workdir, wait=False, pin=pin)
            for pin in stack.pins(partitions, processes)
        ]
        s.dispatcher, s.more = procs[0], procs[1:]
        meter = cpu_meter(None, more=procs[1:], dispatcher=procs[0])
        meter.start()
        t0 = time.monotonic()
        async with ctx.profiler(f"dispatcher-{run}").record("dispatcher", procs[0].pid):
            await counting
        wall = time.monotonic() - t0
        cpu = meter.stop()
    counted = sink.count - sink.first_n  # the first message came before the clock
    rate = counted / max(sink.last - sink.first, 1e-9)

    def per_event(group: str) -> float:
        return round(1e6 * cpu.get(group, 0.0) / 100 * wall / max(sink.count, 1), 1)

    return {
        "rate": round(rate),
        "events": total,
        "routed": sink.count,
        "wall_s": round(sink.last - sink.first, 2),
        "cpu": cpu,
        "dispatcher_us_per_event": per_event("dispatcher"),
        "broker_us_per_event": per_event("rabbitmq"),
        "postgres_us_per_event": per_event("postgres"),
    }


async def dispatcher_partitions(ctx: Ctx) -> list[Figure]:
    """Issue 17's first two figures, in one run: one process with one partition,
    one process with two, two processes with one partition each."""
    sc = ctx.scale
    names = users("part", sc.dispatcher_users)
    per_user = sc.dispatcher_events * 3  # 40 × 3 = 120 per user at full scale
    one = await _dispatch_rate(ctx, 1, 1, names, per_user)
    split = await _dispatch_rate(ctx, 2, 1, names, per_user)
    two = await _dispatch_rate(ctx, 2, 2, names, per_user)
    common = {"users": len(names), "per_user": per_user, "batch_items": 50}
    return [
        Figure(
            "dispatcher-partitions",
            "PostgreSQL, batched input: two processes (a partition each) ÷ one (both)",
            round(two["rate"] / max(split["rate"], 1), 2),
            "×",
            1.5,
            1.8,
            cpu=two["cpu"],
            details={**common, "one_process_n2": split, "two_processes_n2": two},
        ),
        Figure(
            "dispatcher-partitions-cost",
            "PostgreSQL, batched input, one process: SSEHUB_PARTITIONS=2 ÷ =1",
            round(split["rate"] / max(one["rate"], 1), 2),
            "×",
            0.9,
            1.0,
            cpu=split["cpu"],
            details={**common, "n1": one, "n2": split},
        ),
    ]


async def fanout_partitions(ctx: Ctx) -> list[Figure]:
    """1 event → 1,000 members spread over 4 partitions, vs one partition, same run."""
    (one,) = await fanout(ctx)
    (four,) = await fanout(ctx, partitions=4)
    ratio = four.value / one.value if four.value and one.value else None
    return [
        Figure(
            "fanout-partitions",
            "1 event → 1,000 members over 4 partitions: last member p99 ÷ one partition",
            round(ratio, 2) if ratio is not None else None,
            "×",
            1.2,
            1.0,
            higher_is_better=False,
            cpu=four.cpu,
            details={"n1_p99_ms": one.value, "n4_p99_ms": four.value, **four.details},
        )
    ]


async def _held(proc: stack.Proc) -> list[int]:
    """The partitions ``proc`` works on; none while its port is not up yet."""
    try:
        status, body = await asyncio.to_thread(
            stack.http_get, f"http://127.0.0.1:{stack.port_of(proc)}/readyz"
        )
    except OSError:  # (URLError is one) starting
        return []
    return list(orjson.loads(body).get("partitions") or []) if status == 200 else []


async def _shares(procs: list[stack.Proc]) -> list[list[int]]:
    return [await _held(p) for p in procs]


async def failover_and_share(ctx: Ctx) -> list[Figure]:
    """SSEHUB_PARTITIONS=4 on PostgreSQL: processes 1 → 2 → 3 (time until none
    holds more than ceil(N/K)), then one killed with SIGKILL: time until an
    event for a user of one of its partitions reaches the sink."""
    n = 4
    sc = ctx.scale
    names = users("fo", 64)
    env = {"SSEHUB_PARTITIONS": str(n)}
    figures: list[Figure] = []
    async with ctx.stack("postgres", edge=False, dispatcher=False, env=env) as s:
        sink = Sink(ctx.amqp, names, n)
        counting = asyncio.create_task(sink.run(sc.timeout * 10))
        await sink.ready.wait()
        procs = [await stack.start_dispatcher(s.env, ctx.workdir)]
        s.dispatcher = procs[0]
        settle: dict[str, float] = {}
        async with Publisher(ctx.amqp) as pub:
            for k in (2, 3):
                t0 = time.monotonic()
                procs.append(await stack.start_dispatcher(s.env, ctx.workdir))
                s.more = procs[1:]
                ceiling = -(-n // k)
                while time.monotonic() - t0 < 60:
                    held = await _shares(procs)
                    if sum(map(len, held)) == n and max(map(len, held)) <= ceiling:
                        break
                    await asyncio.sleep(0.1)
                settle[f"{k - 1}_to_{k}_s"] = round(time.monotonic() - t0, 2)
            held = await _shares(procs)
            victim = max(range(len(procs)), key=lambda i: len(held[i]))
            orphan = next(u for u in names if partition_of(u, n) in held[victim])
            before = sink.count
            os.kill(procs[victim].pid, signal.SIGKILL)
            killed = time.monotonic()
            seq = 0
            while time.monotonic() - killed < 60:  # an event every 20 ms until one arrives
                seq += 1
                body = b'{"event":"fo","data":%d}' % seq
                await pub.publish(f"user.{orphan}", body, f"fo-{seq}")
                await asyncio.sleep(0.02)
                if sink.count > before:
                    break
            failover = time.monotonic() - killed
        sink.reached.set()
        await counting
    figures.append(
        Figure(
            "partitions-failover",
            "SSEHUB_PARTITIONS=4: SIGKILL of a process → first event for a user of its partitions",
            round(failover, 2),
            "s",
            5.0,
            2.0,
            higher_is_better=False,
            details={"victim_held": held[victim], "events_sent": seq},
        )
    )
    figures.append(
        Figure(
            "partitions-share",
            "SSEHUB_PARTITIONS=4: 1 → 2 → 3 processes, "
            "slowest step to settled (none over ceil(N/K))",
            # 2 → 3 alone is often settled at once (2 + 2 + 0 is within ceil(4/3) = 2,
            # as the contract defines it); 1 → 2 is where partitions must move
            max(settle.values()),
            "s",
            10.0,
            3.0,
            higher_is_better=False,
            details=settle,
        )
    )
    return figures
