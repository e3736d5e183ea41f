"""Scenarios through the dispatcher: dispatcher alone, pipeline unicast, fan-out, latency."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from typing import Any

import aio_pika
import orjson
from ssehub import pack, topology

from bench.figure import Figure, latency_figures
from bench.harness import (
    Ctx,
    cpu_meter,
    merge,
    ms,
    opened_each,
    pct,
    settle,
    shares,
    wait_events,
    wait_seq,
)
from bench.publish import Publisher, data_json, publish_backlog, publish_steady
from bench.scenarios_edge import users
from bench.stack import pid_of

SINK = "bench-sink"  # the sink's node id (per-node delivery)


async def _sink_count(
    url: str,
    names: list[str],
    until: int,
    timeout: float,
    started: asyncio.Event,
    delivery: str,
) -> tuple[float, float, int]:
    """Consume a queue that is an edge's for ``names`` until ``until`` deliveries
    came, a pack counting its records (ssehub.pack): bound to sse.deliver per
    user, or (per-node delivery) bound as node SINK, which joins them all in
    the dispatch queue ahead of the backlog. Returns (time of the first, time
    ``until`` was reached, deliveries after the first)."""
    conn = await aio_pika.connect(url)
    first = last = 0.0
    count = first_n = 0
    done = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count, first, last, first_n
        if topology.NOTICE_HEADER in (message.headers or {}):  # resync, joined
            return
        n = (message.headers or {}).get(pack.PACK_HEADER)
        got = n if isinstance(n, int) else 1
        last = time.monotonic()
        if not count:
            first, first_n = last, got
        count += got
        if count >= until:
            done.set()

    try:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=1000)
        await topology.declare_exchanges(ch)
        queue = await ch.declare_queue("bench.sink", durable=False, auto_delete=False)
        if delivery == "nodes":
            await topology.declare_core(ch)
            await queue.bind(topology.NODES.name, SINK)
            join = topology.route_message(SINK, 1, [(u, True) for u in names])
            internal = await ch.get_exchange(topology.INTERNAL.name)
            await internal.publish(
                aio_pika.Message(join.body, headers={topology.ROUTE_HEADER: 1}), join.routing_key
            )
        else:
            await asyncio.gather(*(queue.bind(topology.DELIVER.name, u) for u in names))
        await queue.consume(on_message, no_ack=True)
        started.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        # the first message's deliveries came before the clock started
        return first, last, count - first_n
    finally:
        await conn.close()


async def dispatcher(ctx: Ctx, store: str, batched: bool = False) -> list[Figure]:
    """A backlog of user events queued before the dispatcher starts; how fast it is
    sequenced, stored and routed (counted in a queue bound to sse.deliver).
    ``batched``: the backlog is `batch` messages of 50 items (issue 9's figure)."""
    sc = ctx.scale
    names = users("disp", sc.dispatcher_users)
    per_user = sc.dispatcher_events * (3 if batched else 1)  # (a run of seconds, not one)
    total = len(names) * per_user
    async with ctx.stack(store, edge=False, dispatcher=False) as s:
        started = asyncio.Event()
        sink = asyncio.create_task(
            _sink_count(ctx.amqp, names, total, sc.timeout, started, s.delivery)
        )
        await started.wait()
        pub = await publish_backlog(
            ctx.amqp,
            "batch" if batched else "user",
            names,
            per_user,
            processes=sc.publishers,
            run=f"d{store}{'b' if batched else ''}",
        )
        proc = await s.start_dispatcher()
        meter = cpu_meter(None, dispatcher=proc)
        meter.start()
        async with ctx.profiler(f"dispatcher-{store}").record("dispatcher", proc.pid):
            first, last, counted = await sink
        cpu = meter.stop()
    rate = counted / max(last - first, 1e-9)
    # issue 9, batched input: SQLite 40,000 / 80,000, PostgreSQL 25,000 / 50,000
    target, moonshot = (
        ((40_000, 80_000) if store == "sqlite" else (25_000, 50_000))
        if batched
        else (
            20_000,
            50_000,
        )
    )
    return [
        Figure(
            f"dispatcher ({store}{', batched input' if batched else ''})",
            "user events sequenced, stored, routed /s",
            round(rate),
            "/s",
            target,
            moonshot,
            cpu=cpu,
            details={
                "events": total,
                "routed": counted,
                "wall_s": round(last - first, 2),
                "publish_rate": round(pub["sent"] / pub["elapsed"]),
            },
        )
    ]


async def pipeline(ctx: Ctx, store: str) -> list[Figure]:
    """publisher → dispatcher → edge → client for a backlog queued before the
    dispatcher starts (so the publisher's CPU is not shared with the pipeline)."""
    sc = ctx.scale
    names = users("pipe", sc.pipeline_users)
    async with ctx.stack(store, edge=True, dispatcher=False) as s, ctx.clients() as pool:
        got, failed, _, _ = opened_each(
            await pool.open("127.0.0.1", s.port, names, concurrency=100, timeout=sc.timeout)
        )
        pub = await publish_backlog(
            ctx.amqp, "user", names, sc.pipeline_events, processes=sc.publishers, run=f"p{store}"
        )
        await pool.all("reset")
        proc = await s.start_dispatcher()
        meter = cpu_meter(pool, edge=s.edge, dispatcher=proc)
        meter.start()
        async with (
            ctx.profiler(f"pipeline-{store}").record("dispatcher", proc.pid),
            ctx.profiler(f"pipeline-{store}").record("edge", pid_of(s.edge)),
        ):
            res = await wait_seq(pool, sc.pipeline_events, sc.timeout)
        cpu = meter.stop()
    rate = res["events"] / max((res["last_ns"] - res["first_ns"]) / 1e9, 1e-9)
    ctx.measured[f"pipeline-{store}"] = rate
    return [
        Figure(
            f"pipeline unicast ({store})",
            "events/s publisher → dispatcher → edge → client",
            round(rate),
            "/s",
            15_000,
            40_000,
            client_cpu=cpu.get("client"),
            cpu=cpu,
            details={
                "expected": got * sc.pipeline_events,
                "received": res["events"],
                "streams": got,
                "streams_complete": res["reached"],
                "gaps": res["gaps"],
                "dups": res["dups"],
                "failed_connects": failed,
                "publish_rate": round(pub["sent"] / pub["elapsed"]),
            },
        )
    ]


async def fanout(ctx: Ctx, partitions: int = 1) -> list[Figure]:
    """Events to one conversation whose members are all connected, one at a time;
    per event, the time until its last member has it. ``partitions``: the
    members spread over that many (one process)."""
    sc = ctx.scale
    names = users("fan", sc.fanout_members)
    # Presence off: with it, the members' own connects cost ~n²/2 user:online
    # deliveries first (see the notes); this figure is about one event's fan-out.
    env = {"SSEHUB_PRESENCE": "false", "SSEHUB_PARTITIONS": str(partitions)}
    async with (
        ctx.stack("sqlite", env=env) as s,
        ctx.clients() as pool,
        Publisher(ctx.amqp) as pub,
    ):
        await pub.publish("members.room", orjson.dumps({"op": "set", "users": names}), "m-set")
        got, failed, _, counts = opened_each(
            await pool.open("127.0.0.1", s.port, names, concurrency=100, timeout=sc.timeout)
        )
        # with presence on, every member's first stream tells the others (~n²/2
        # user:online events): let that settle before measuring
        presence, settle_s = await settle(pool, sc.timeout)
        await pool.all("reset", track_n=True)
        meter = cpu_meter(pool, edge=s.edge, dispatcher=s.dispatcher)
        meter.start()
        prof = ctx.profiler("fanout")
        async with (
            prof.record("dispatcher", pid_of(s.dispatcher)),
            prof.record("edge", pid_of(s.edge)),
        ):
            for n in range(sc.fanout_events):
                body = b'{"event":"bench","data":%s}' % data_json(n, "x" * 64)
                await pub.publish("conversation.room", body, f"f-{n}")
                await asyncio.sleep(sc.fanout_interval)
            res = await wait_events(pool, [k * sc.fanout_events for k in counts], sc.timeout)
        cpu = meter.stop()
    last = [worst for count, worst in res["by_n"].values()]
    complete = sum(1 for count, _ in res["by_n"].values() if count == got)
    p50, p99 = pct(last, 50, 99)
    return [
        Figure(
            "fan-out" if partitions == 1 else f"fan-out-{partitions}",
            f"1 event → {got:,} members"
            + (f" over {partitions} partitions" if partitions > 1 else "")
            + ": last member has it, p99",
            ms(p99),
            "ms",
            30,  # issue 9
            10,
            higher_is_better=False,
            client_cpu=cpu.get("client"),
            cpu=cpu,
            details={
                "events": sc.fanout_events,
                "complete": complete,
                "presence_events_on_connect": presence,
                "presence_settle_s": settle_s,
                "p50_ms": ms(p50),
                "max_ms": ms(max(last, default=0)),
                "gaps": res["gaps"],
                "dups": res["dups"],
                "failed_connects": failed,
            },
        )
    ]


async def latency(ctx: Ctx) -> list[Figure]:
    """A steady rate at half the pipeline's (SQLite) maximum; publish → client latency."""
    sc = ctx.scale
    rate = sc.latency_rate or ctx.measured.get("pipeline-sqlite", 0) / 2 or 1000.0
    names = users("lat", sc.latency_users)
    async with ctx.stack("sqlite") as s, ctx.clients() as pool:
        got, failed, _, _ = opened_each(
            await pool.open("127.0.0.1", s.port, names, concurrency=100, timeout=sc.timeout)
        )
        await pool.all("reset")
        meter = cpu_meter(pool, edge=s.edge, dispatcher=s.dispatcher)
        meter.start()
        prof = ctx.profiler("latency")
        async with (
            prof.record("dispatcher", pid_of(s.dispatcher)),
            prof.record("edge", pid_of(s.edge)),
        ):
            pub = await publish_steady(ctx.amqp, names, rate, sc.latency_duration)
            per = _round_robin(pub["sent"], got, len(pool))
            res = await wait_events(pool, per, sc.timeout)
        cpu = meter.stop()
    lat = res["lat"]
    p50, p99, p999 = pct(lat, 50, 99, 99.9)
    details: dict[str, Any] = {
        "rate_asked": round(rate),
        "rate_published": round(pub["sent"] / pub["elapsed"]),
        "events": res["events"],
        "sent": pub["sent"],
        "gaps": res["gaps"],
        "dups": res["dups"],
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "p999_ms": ms(p999),
        "max_ms": ms(max(lat, default=0)),
        "publisher_cpu": round(100 * pub["cpu_s"] / pub["elapsed"], 1),
        "failed_connects": failed,
        "histogram_ms": _histogram(lat),
    }
    return latency_figures(
        "latency", round(rate), ms(p50), ms(p99), ((5, 2), (25, 10)), cpu, details
    )


def _round_robin(sent: int, users: int, workers: int) -> list[int]:
    """Events per worker when event i went to user i % users and worker k holds
    users k, k+workers, ..."""
    full, rest = divmod(sent, users)
    return [full * n + len(range(k, rest, workers)) for k, n in enumerate(shares(users, workers))]


def _histogram(lat: Any) -> list[tuple[float, int]]:
    """Latencies in log-spaced buckets (ms upper bound, count), for the plot."""
    bounds = [0.25 * 2 ** (i / 2) for i in range(30)]
    counts = [0] * len(bounds)
    for v in lat:
        counts[min(bisect.bisect_left(bounds, v / 1e6), len(bounds) - 1)] += 1
    return [(round(b, 3), c) for b, c in zip(bounds, counts, strict=True) if c]


__all__ = ["dispatcher", "fanout", "latency", "merge", "pipeline"]
