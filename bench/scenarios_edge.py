"""Scenarios of one edge process: idle (+ idle cost), connect, edge unicast, reconnect storm.
Idle and edge unicast also run against the baseline server."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from array import array
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from ssehub.config import normalize_database_url
from ssehub.sse import render_event
from ssehub.storage.db import create_engine, create_schema
from ssehub.storage.models import EventRow, UserCursor

from bench import stack
from bench.figure import Figure
from bench.harness import (
    Ctx,
    cpu_meter,
    merge,
    ms,
    opened,
    opened_each,
    pct,
    shares,
    wait_events,
    wait_seq,
)
from bench.publish import data_json, publish_backlog
from bench.stack import pid_of

KIB = 1024


def users(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


async def _idle_on(ctx: Ctx, proc: stack.Proc, port: int, path: str) -> dict[str, Any]:
    """Hold ``idle_conns`` streams on one server; its RSS per stream, its CPU while idle."""
    sc = ctx.scale
    async with ctx.clients() as pool:
        await asyncio.sleep(sc.settle)
        rss0 = proc.rss()
        meter = cpu_meter(pool, server=proc)
        meter.start()
        t0 = time.monotonic()
        got, failed, errors = opened(
            await pool.open(
                "127.0.0.1",
                port,
                users("idle", sc.idle_conns),
                concurrency=100,
                timeout=sc.timeout,
                path=path,
            )
        )
        connect_s = time.monotonic() - t0
        connect_cpu = meter.stop()
        await asyncio.sleep(sc.settle)
        rss1 = proc.rss()
        await pool.all("reset")
        meter.start()
        async with ctx.profiler(f"idle-{proc.name.split('-')[0]}").record("server", proc.pid):
            await asyncio.sleep(sc.idle_window)
        idle_cpu = meter.stop()
        after = merge(await pool.all("stats", lat=False))
    return {
        "held": after["open"],
        "opened": got,
        "failed": failed,
        "errors": errors,
        "rss_per_conn_kib": (rss1 - rss0) / max(got, 1) / KIB,
        "rss0_mib": rss0 / 2**20,
        "rss1_mib": rss1 / 2**20,
        "connect_s": round(connect_s, 2),
        "connect_cpu": connect_cpu,
        "idle_cpu": idle_cpu,
        "pings": after["pings"],
        "lost": after["lost"],
    }


async def idle(ctx: Ctx) -> list[Figure]:
    sc = ctx.scale
    # with a dispatcher, as deployed: it answers the edge's joins (per-node delivery)
    async with ctx.stack(edge=True, dispatcher=True) as s:
        assert s.edge is not None
        ours = await _idle_on(ctx, s.edge, s.port, "/sse/connect")
    base: dict[str, Any] | None = None
    if ctx.baseline:
        port = stack.free_port()
        proc = await stack.start_baseline(port, ctx.workdir, ping=sc.ping_interval)
        try:
            base = await _idle_on(ctx, proc, port, "/sse/connect")
        finally:
            await proc.stop()
    details = {
        "ssehub": ours,
        "baseline": base,
        "ping_interval_s": sc.ping_interval,
        "window_s": sc.idle_window,
    }
    return [
        Figure(
            "idle",
            "connections held by one edge",
            ours["held"],
            "conns",
            15_000,
            19_000,
            baseline=base["held"] if base else None,
            client_cpu=ours["connect_cpu"].get("client"),
            cpu=ours["connect_cpu"],
            details=details,
        ),
        Figure(
            "idle",
            "edge RSS per connection",
            round(ours["rss_per_conn_kib"], 2),
            "KiB",
            16,
            8,
            higher_is_better=False,
            baseline=round(base["rss_per_conn_kib"], 2) if base else None,
        ),
        Figure(
            "idle cost",
            f"edge CPU, {ours['held']:,} idle streams",
            ours["idle_cpu"]["server"],
            "% core",
            5,
            1,
            higher_is_better=False,
            baseline=base["idle_cpu"]["server"] if base else None,
            client_cpu=ours["idle_cpu"].get("client"),
            cpu=ours["idle_cpu"],
        ),
    ]


async def connect(ctx: Ctx) -> list[Figure]:
    sc = ctx.scale
    # with a dispatcher, as deployed: it answers the edge's joins (per-node delivery)
    async with ctx.stack(edge=True, dispatcher=True) as s, ctx.clients() as pool:
        meter = cpu_meter(pool, edge=s.edge, dispatcher=s.dispatcher)
        meter.start()
        async with ctx.profiler("connect").record("edge", pid_of(s.edge)):
            replies = await pool.open(
                "127.0.0.1",
                s.port,
                users("conn", sc.connect_conns),
                concurrency=max(50, 500 // len(pool)),
                timeout=sc.timeout,
            )
        cpu = meter.stop()
    got, failed, errors = opened(replies)
    wall = (max(r["end_ns"] for r in replies) - min(r["start_ns"] for r in replies)) / 1e9
    each: array[int] = array("q")
    for r in replies:
        each.frombytes(r["connect_ns"])
    p50, p99 = pct(each, 50, 99)
    return [
        Figure(
            "connect",
            "new authenticated streams/s (incl. joining)",
            round(got / wall, 1),
            "/s",
            2_000,
            5_000,
            client_cpu=cpu.get("client"),
            cpu=cpu,
            details={
                "opened": got,
                "failed": failed,
                "errors": errors,
                "wall_s": wall,
                "connect_p50_ms": ms(p50),
                "connect_p99_ms": ms(p99),
            },
        )
    ]


async def _unicast_baseline(ctx: Ctx) -> dict[str, Any]:
    sc = ctx.scale
    port = stack.free_port()
    proc = await stack.start_baseline(port, ctx.workdir, ping=sc.ping_interval)
    try:
        async with ctx.clients() as pool:
            _, _, _, counts = opened_each(
                await pool.open(
                    "127.0.0.1",
                    port,
                    users("uni", sc.unicast_users),
                    concurrency=100,
                    timeout=sc.timeout,
                )
            )
            await pool.all("reset")
            meter = cpu_meter(pool, server=proc)
            meter.start()
            t0 = time.time_ns()
            url = f"http://127.0.0.1:{port}/bench/fill?per_user={sc.unicast_events}"
            req = urllib.request.Request(url, method="POST")
            await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=sc.timeout).read())
            per = [n * sc.unicast_events for n in counts]
            res = await wait_events(pool, per, sc.timeout)
            cpu = meter.stop()
    finally:
        await proc.stop()
    return {
        "rate": res["events"] / max((res["last_ns"] - t0) / 1e9, 1e-9),
        "events": res["events"],
        "gaps": res["gaps"],
        "dups": res["dups"],
        "cpu": cpu,
    }


async def edge_unicast(ctx: Ctx) -> list[Figure]:
    """Frames straight to sse.deliver while the edge is stopped (SIGSTOP), so the
    publisher's CPU is not shared with it; then the edge drains the backlog.
    No dispatcher runs, so the edge binds its users (SSEHUB_DELIVERY=bindings):
    it reads packs and writes them exactly as with per-node delivery."""
    sc = ctx.scale
    total = sc.unicast_users * sc.unicast_events
    bindings = {"SSEHUB_DELIVERY": "bindings"}
    async with ctx.stack(edge=True, dispatcher=False, env=bindings) as s, ctx.clients() as pool:
        assert s.edge is not None
        names = users("uni", sc.unicast_users)
        got, failed, _, _ = opened_each(
            await pool.open(
                "127.0.0.1", s.port, names, concurrency=100, timeout=sc.timeout, reconnect=True
            )
        )
        # Each stream reads the store once more right after "connected"; a read in
        # flight while the edge is stopped would time out (10 s) and close the stream.
        await asyncio.sleep(sc.settle)
        await pool.all("reset")
        s.edge.pause()
        try:
            pub = await publish_backlog(  # in packs, as the dispatcher sends them
                ctx.amqp, "deliver-packed", names, sc.unicast_events, processes=sc.publishers
            )
        finally:
            s.edge.resume()
        t0 = time.time_ns()
        meter = cpu_meter(pool, edge=s.edge)
        meter.start()
        async with ctx.profiler("edge-unicast").record("edge", s.edge.pid):
            res = await wait_seq(pool, sc.unicast_events, sc.timeout)
        cpu = meter.stop()
    rate = res["events"] / max((res["last_ns"] - t0) / 1e9, 1e-9)
    base = await _unicast_baseline(ctx) if ctx.baseline else None
    # issue 9: 1.5× / 2× the sse-starlette baseline of the same run; without
    # one (--no-baseline), of its rate in the last full run here (57,183/s)
    ref = base["rate"] if base else 57_000
    return [
        Figure(
            "edge unicast",
            f"events/s one edge writes to {got:,} users",
            round(rate),
            "/s",
            round(1.5 * ref),
            round(2 * ref),
            baseline=round(base["rate"]) if base else None,
            client_cpu=cpu.get("client"),
            cpu=cpu,
            details={
                "expected": total,
                "received": res["events"],
                "streams": got,
                "streams_complete": res["reached"],
                "gaps": res["gaps"],
                "dups": res["dups"],
                "failed_connects": failed,
                "publish_rate": pub["sent"] / pub["elapsed"],
                "baseline": base,
            },
        )
    ]


def merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


async def _fill_store(db_url: str, names: list[str], behind: int) -> None:
    """The state of a store where every user has ``behind`` events after seq 0."""
    engine = create_engine(normalize_database_url(db_url))
    try:
        await create_schema(engine)
        now = time.time()
        async with engine.begin() as conn:
            for i in range(0, len(names), 1000):
                part = names[i : i + 1000]
                rows = [
                    {
                        "user_id": u,
                        "seq": n,
                        "key": None,
                        "created_at": now,
                        "sse": render_event(n, "bench", data_json(n, "x" * 64)).decode(),
                        "receipt": False,
                    }
                    for u in part
                    for n in range(1, behind + 1)
                ]
                await conn.execute(insert(EventRow.__table__), rows)  # type: ignore[attr-defined]
                await conn.execute(
                    insert(UserCursor.__table__),  # type: ignore[attr-defined]
                    [{"user_id": u, "last_seq": behind, "floor_seq": 0} for u in part],
                )
    finally:
        await engine.dispose()


async def reconnect(ctx: Ctx) -> list[Figure]:
    """Every user reconnects at once with Last-Event-ID 0 while 20 events behind."""
    sc = ctx.scale
    names = users("storm", sc.storm_users)
    async with ctx.stack(edge=False, dispatcher=False) as s:
        await _fill_store(s.db, names, sc.storm_behind)
        s.edge = await stack.start_edge(s.env, stack.free_port(), ctx.workdir)
        s.dispatcher = await stack.start_dispatcher(s.env, ctx.workdir)  # answers the joins
        async with ctx.clients() as pool:
            meter = cpu_meter(pool, edge=s.edge, dispatcher=s.dispatcher)
            meter.start()
            async with ctx.profiler("reconnect").record("edge", s.edge.pid):
                t0 = time.time_ns()
                opens = pool.open(
                    "127.0.0.1",
                    s.port,
                    names,
                    last_ids=[0] * len(names),
                    concurrency=max(100, sc.storm_users // len(pool)),
                    timeout=sc.timeout,
                    reconnect=True,  # like EventSource: after retry:, with Last-Event-ID
                )
                waits = pool.all(
                    "wait",
                    [{"expect": n} for n in shares(len(names), len(pool))],
                    seq=sc.storm_behind,
                    timeout=sc.timeout,
                )
                replies, waited = await asyncio.gather(opens, waits)
            cpu = meter.stop()
            done: array[int] = array("q")
            for r in waited:
                done.frombytes(r["done_ns"])
            got, failed, errors = opened(replies)
            res = merge(waited)
            # and live: one more event per user, through the dispatcher
            await pool.all("reset")
            await publish_backlog(
                ctx.amqp,
                "user",
                names,
                1,
                start_seq=sc.storm_behind + 1,
                processes=sc.publishers,
            )
            live = await wait_events(pool, [r["opened"] for r in replies], sc.timeout)
    reached = sum(r["reached"] for r in waited)
    finished = [d - t0 for d in done if d]
    # not everyone back within the timeout: the figure is at least the time waited
    wall = (time.time_ns() - t0) / 1e9
    all_s = max(finished) / 1e9 if reached == len(names) and finished else min(wall, sc.timeout)
    p50, p99 = pct(finished, 50, 99)
    return [
        Figure(
            "reconnect storm",
            f"{len(names):,} users × {sc.storm_behind} behind: all replayed and live",
            round(all_s, 2),
            "s",
            5,  # issue 9
            2,
            higher_is_better=False,
            client_cpu=cpu.get("client"),
            cpu=cpu,
            details={
                "opened": got,
                "failed": failed,
                "errors": errors,
                "reached": reached,
                "streams": len(names),
                "streams_complete": reached,
                "reconnects": sum(r.get("reconnects", 0) for r in waited),
                "reconnect_errors": merge_counts(r.get("reconnect_errors", {}) for r in waited),
                "replayed_events": res["events"],
                "gaps": res["gaps"],
                "dups": res["dups"],
                "p50_s": round(p50 / 1e9, 2),
                "p99_s": round(p99 / 1e9, 2),
                "live_received": live["events"],
                "live_gaps": live["gaps"],
            },
        )
    ]
