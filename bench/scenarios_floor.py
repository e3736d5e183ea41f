"""The broker floor and the pipeline against it, at steady rates.

``floor``: the C publisher (persistent, pipelined confirms) → ``sse.events`` →
a durable queue → the C consumer (acks every 500): no ssehub code, what
RabbitMQ alone does on this machine. ``pipeline-steady*``: the same
publishers (or ssehub's Python ``Publisher``) → dispatcher → one edge
(SQLite) → the load client's streams. Each climbs a ladder of rates; its
figure is the highest rate whose p99 stayed within ``p99_bound_ms`` with
nothing lost, the pipeline's reported as a fraction of the floor's and with
the broker's CPU per event next to the floor's at the same rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, NamedTuple

import aio_pika

from bench import stack
from bench.figure import Figure, latency_figures
from bench.floor_bin import Consumer, c_publish, node_publish, node_ready, py_publish
from bench.harness import (
    Ctx,
    bucket_quantiles,
    cpu_meter,
    ms,
    pct,
    scrape_histogram,
    wait_events,
)
from bench.scenarios_edge import users
from bench.scenarios_pipeline import _round_robin


def rates(spec: str) -> list[float]:
    return [float(r) for r in spec.split(",") if r.strip()]


def broker_cpu_s() -> float:
    proc = stack.rabbit_process()
    if proc is None:
        return float("nan")
    t = proc.cpu_times()
    return float(t.user + t.system)


async def broker_idle_rate(seconds: float) -> float:
    """The broker's CPU (s per s) with nothing published: subtracted from a
    step's, so the CPU per event is the events' own (at small scale the idle
    cost would dominate)."""
    c0, t0 = broker_cpu_s(), time.monotonic()
    await asyncio.sleep(max(seconds, 0.5))
    return max(0.0, (broker_cpu_s() - c0) / (time.monotonic() - t0))


async def _drop_queue(url: str, name: str) -> None:
    conn = await aio_pika.connect(url)
    try:
        with contextlib.suppress(Exception):
            await (await conn.channel()).queue_delete(name)
    finally:
        await conn.close()


def _ok(step: dict[str, Any], bound_ms: float) -> bool:
    return bool(
        step["received"] >= step["sent"]
        and not step.get("gaps")
        and not step.get("dups")
        and not step.get("nacked")
        and step["p99_ms"] <= bound_ms
    )


async def floor(ctx: Ctx, batched: bool) -> list[Figure]:
    """The broker alone: C publisher → sse.events → durable queue → C consumer."""
    sc = ctx.scale
    key = "floor-batched" if batched else "floor"
    await stack.reset_vhost(ctx.amqp)
    await _drop_queue(ctx.amqp, "ssehub.dispatch")  # only the floor's queue is bound
    steps: list[dict[str, Any]] = []
    best = 0.0
    idle_rate = await broker_idle_rate(sc.settle)
    try:
        for i, rate in enumerate(rates(sc.floor_rates)):
            expect = int(rate * sc.step_duration)
            consumer = Consumer(ctx.amqp, expect, idle=sc.timeout / 4)
            await consumer.start()
            meter = cpu_meter(None)
            meter.start()
            b0, t0 = broker_cpu_s(), time.monotonic()
            pub = await c_publish(
                ctx.amqp,
                rate=rate,
                duration=sc.step_duration,
                users=sc.steady_users,
                prefix="floor",
                run=f"{key}{i}",
                batch=sc.batch_items if batched else 0,
            )
            got = await consumer.result(sc.step_duration + sc.timeout)
            cpu = meter.stop()
            broker = broker_cpu_s() - b0 - idle_rate * (time.monotonic() - t0)
            step = {
                "rate": rate,
                "sent": pub["sent"],
                "messages": pub["messages"],
                "nacked": pub["nacked"],
                "received": got["received"],
                "p50_ms": round(got["p50_us"] / 1e3, 2),
                "p99_ms": round(got["p99_us"] / 1e3, 2),
                "max_ms": round(got["max_us"] / 1e3, 2),
                "broker_us_per_event": round(1e6 * broker / max(got["received"], 1), 1),
                "publisher_cpu": round(100 * pub["cpu_s"] / pub["elapsed"], 1),
                "consumer_cpu": round(100 * got["cpu_s"] / pub["elapsed"], 1),
                "cpu": cpu,
            }
            steps.append(step)
            if not _ok(step, sc.p99_bound_ms):
                break
            best = rate
    finally:
        await _drop_queue(ctx.amqp, "bench.floor")
    ctx.measured[key] = best
    ctx.ladders[key] = steps
    top = next((s for s in steps if s["rate"] == best), steps[-1] if steps else {"cpu": {}})
    return [
        Figure(
            key,
            f"broker alone, {_per_message(sc, batched)}: max rate, p99 ≤ "
            f"{sc.p99_bound_ms:.0f} ms, nothing lost",
            best,
            "/s",
            10_000,  # a reference, not ssehub's: what issue 9 measured here
            15_000,
            cpu=top["cpu"],
            details={
                "ladder": [{k: v for k, v in s.items() if k != "cpu"} for s in steps],
                "expected": sum(s["sent"] for s in steps),
                "received": sum(s["received"] for s in steps),
                "broker_us_per_event": top.get("broker_us_per_event"),
            },
        )
    ]


def _per_message(sc: Any, batched: bool) -> str:
    return f"{sc.batch_items} events per message" if batched else "one event per message"


async def _publish(ctx: Ctx, kind: str, rate: float, duration: float, run: str) -> dict[str, Any]:
    sc = ctx.scale
    if kind == "py":
        names = users("st", sc.steady_users)
        return await py_publish(ctx.amqp, rate=rate, duration=duration, users=names, run=run)
    if kind == "node":
        return await node_publish(
            ctx.amqp, rate=rate, duration=duration, users=("st", sc.steady_users), run=run
        )
    batch = sc.batch_items if kind == "c-batched" else 0
    return await c_publish(
        ctx.amqp,
        rate=rate,
        duration=duration,
        users=sc.steady_users,
        prefix="st",
        run=run,
        batch=batch,
    )


async def _steady_steps(
    ctx: Ctx,
    kind: str,
    ladder: list[float],
    duration: float,
    run: str,
    env: dict[str, str] | None = None,
    store: str = "sqlite",
    dispatchers: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One stack, ``steady_users`` streams; each rate in turn until one fails."""
    sc = ctx.scale
    names = users("st", sc.steady_users)
    steps: list[dict[str, Any]] = []
    s, pool, got, failed = await ctx.shared(names, env, store, dispatchers)
    totals = {"streams": got, "failed_connects": failed, "gaps": 0, "dups": 0, "lat": None}
    # A fresh stack's first seconds (cold store pages, first batches, the
    # publisher's connection) are not its steady state: a short unmeasured run.
    if ladder:
        await pool.all("reset")
        warm = await _publish(ctx, kind, ladder[0], min(3.0, duration), f"{run}w")
        await wait_events(pool, _round_robin(warm["sent"], got, len(pool)), sc.timeout)
    idle_rate = await broker_idle_rate(sc.settle)
    totals["broker_idle_cpu"] = round(100 * idle_rate, 1)
    for i, rate in enumerate(ladder):
        await pool.all("reset")
        meter = cpu_meter(pool, more=s.more, edge=s.edge, dispatcher=s.dispatcher)
        meter.start()
        b0, t0 = broker_cpu_s(), time.monotonic()
        d_port = stack.port_of(s.dispatcher) if s.dispatcher is not None else 0
        hist0 = await scrape_histogram(s.port, WRITE_HISTOGRAM)
        commits0 = await scrape_histogram(d_port, COMMIT_HISTOGRAM)
        waits0 = await scrape_histogram(d_port, INTAKE_HISTOGRAM)
        # --profile: each step's dispatcher and edge, e.g. pipeline-steady-5000-edge.txt
        prof = ctx.profiler(f"{run}-{rate:.0f}")
        async with (
            prof.record("dispatcher", stack.pid_of(s.dispatcher)),
            prof.record("edge", stack.pid_of(s.edge)),
        ):
            pub = await _publish(ctx, kind, rate, duration, f"{run}{i}")
            per = _round_robin(pub["sent"], got, len(pool))
            res = await wait_events(pool, per, sc.timeout)
        broker = broker_cpu_s() - b0 - idle_rate * (time.monotonic() - t0)
        cpu = meter.stop()
        # Where the latency is: the edge times one delivery per dispatcher batch
        # from the dispatcher's publish to its write (hop 2 and the edge); the
        # rest of publish → client is hop 1, the dispatcher and the client.
        hop2 = bucket_quantiles(hist0, await scrape_histogram(s.port, WRITE_HISTOGRAM), 0.5, 0.99)
        commits = await scrape_histogram(d_port, COMMIT_HISTOGRAM)
        waits = await scrape_histogram(d_port, INTAKE_HISTOGRAM)
        p50, p99 = pct(res["lat"], 50, 99)
        step = {
            "rate": rate,
            "sent": sum(per),
            "messages": pub["messages"],
            "nacked": pub.get("nacked", 0),
            "received": res["events"],
            "gaps": res["gaps"],
            "dups": res["dups"],
            "p50_ms": ms(p50),
            "p99_ms": ms(p99),
            "max_ms": ms(max(res["lat"], default=0)),
            # bucket bounds (1, 2.5, 5, 10, 25 ms ...), not exact values
            "dispatcher_to_write_p50_ms_at_most": hop2[0],
            "dispatcher_to_write_p99_ms_at_most": hop2[1],
            "commit_p50_ms_at_most": bucket_quantiles(commits0, commits, 0.5)[0],
            "commit_p99_ms_at_most": bucket_quantiles(commits0, commits, 0.99)[0],
            "commit_max_ms_at_most": bucket_quantiles(commits0, commits, 1.0)[0],
            # the dispatcher's share: a batch's oldest message, arrival → publish
            "intake_to_publish_p50_ms_at_most": bucket_quantiles(waits0, waits, 0.5)[0],
            "intake_to_publish_p99_ms_at_most": bucket_quantiles(waits0, waits, 0.99)[0],
            "broker_us_per_event": round(1e6 * broker / max(res["events"], 1), 1),
            "publisher_cpu": round(100 * pub["cpu_s"] / pub["elapsed"], 1),
            "cpu": cpu,
        }
        steps.append(step)
        totals["gaps"] += res["gaps"]
        totals["dups"] += res["dups"]
        totals["lat"] = res["lat"]
        if not _ok(step, sc.p99_bound_ms):
            break
    return steps, totals


WRITE_HISTOGRAM = "ssehub_publish_to_write_seconds"  # edge/metrics.py
COMMIT_HISTOGRAM = "ssehub_dispatcher_commit_seconds"  # dispatcher/metrics.py
INTAKE_HISTOGRAM = "ssehub_dispatcher_intake_to_publish_seconds"  # dispatcher/metrics.py


class Steady(NamedTuple):
    key: str  # the scenario and figure name
    label: str
    publisher: str  # _publish's kind: "c", "c-batched", "py" or "node"
    env: dict[str, str] | None = None
    store: str = "sqlite"
    dispatchers: int = 1  # processes, each pinned to its share of the partitions


# the delivery designs side by side (docs/architecture.md, "Delivery to edges")
BINDINGS = {"SSEHUB_DELIVERY": "bindings"}
STEADY = {
    "c": Steady("pipeline-steady", "one event per message", "c"),
    "c-bindings": Steady(
        "pipeline-steady-bindings",
        "one event per message, per-user bindings and packs",
        "c",
        BINDINGS,
    ),
    "c-unpacked": Steady(
        "pipeline-steady-unpacked",
        "one event per message, per-user bindings, one delivery message per recipient",
        "c",
        {**BINDINGS, "SSEHUB_PACK_DELIVERIES": "1"},
    ),
    "c-batched": Steady("pipeline-steady-batched", "batch messages", "c-batched"),
    "c-batched-bindings": Steady(
        "pipeline-steady-batched-bindings",
        "batch messages, per-user bindings and packs",
        "c-batched",
        BINDINGS,
    ),
    "py": Steady("pipeline-steady-publisher", "ssehub.Publisher coalescing", "py"),
    "node": Steady("pipeline-steady-node", "the Node publisher (npm ssehub) coalescing", "node"),
    # partitions side by side with one, on PostgreSQL (the store they share)
    "c-postgres": Steady(
        "pipeline-steady-postgres", "one event per message, PostgreSQL", "c", None, "postgres"
    ),
    "c-partitions": Steady(
        "pipeline-steady-partitions",
        "one event per message, PostgreSQL, 2 partitions in 2 processes",
        "c",
        {"SSEHUB_PARTITIONS": "2"},
        "postgres",
        2,
    ),
}


RATIOS = {
    "node": (
        "node-publisher",
        "the Node publisher ÷ the Python one",
        "pipeline-steady-publisher",
        1.2,
    ),
    "c-partitions": (
        "pipeline-partitions",
        "one event per message, 2 partitions in 2 processes ÷ 1 partition (PostgreSQL)",
        "pipeline-steady-postgres",
        1.3,
    ),
}


async def pipeline_steady(ctx: Ctx, kind: str) -> list[Figure]:
    """The pipeline at a ladder of steady rates: its max, as a fraction of the floor."""
    sc = ctx.scale
    key, label, publisher, env, store, dispatchers = STEADY[kind]
    if publisher == "node" and (why := node_ready()) is not None:
        print(f"   {key}: skipped ({why})", flush=True)
        return []
    steps, totals = await _steady_steps(
        ctx, publisher, rates(sc.steady_rates), sc.step_duration, key, env, store, dispatchers
    )
    best = max((s["rate"] for s in steps if _ok(s, sc.p99_bound_ms)), default=0.0)
    # the same rate's broker cost with no ssehub in the way (one-event floor
    # for one-event messages, the batched floor for batches)
    floor_key = "floor" if publisher == "c" else "floor-batched"
    floor_at = {s["rate"]: s["broker_us_per_event"] for s in ctx.ladders.get(floor_key, [])}
    for s in steps:
        s["floor_broker_us_per_event"] = floor_at.get(s["rate"])
        s["events_per_message"] = round(s["sent"] / max(s["messages"], 1), 1)
    top = next((s for s in steps if s["rate"] == best), steps[-1] if steps else {"cpu": {}})
    floor_rate = ctx.measured.get("floor")
    # issue 9: one event per message 0.6× / 0.8× the floor; batched 20,000 / 40,000
    if publisher == "c":
        target, moonshot = (0.6 * floor_rate, 0.8 * floor_rate) if floor_rate else (6e3, 8e3)
    else:
        target, moonshot = 20_000, 40_000
    ctx.measured[key] = best
    # ratios to a scenario measured earlier in the same run: (key, label, of, moonshot)
    ratio = RATIOS.get(kind)
    extra: list[Figure] = []
    if ratio is not None and (base := ctx.measured.get(ratio[2])):
        ratio_key, ratio_label, of, ratio_moonshot = ratio
        extra.append(
            Figure(
                ratio_key,
                f"max rate at p99 ≤ {sc.p99_bound_ms:.0f} ms, {ratio_label} (same run)",
                round(best / base, 2),
                "×",
                1.0,
                ratio_moonshot,
                details={"rate": best, f"{of}_rate": base},
            )
        )
    return [
        *extra,
        Figure(
            key,
            f"{label}, {totals['streams']:,} streams: max rate, "
            f"p99 ≤ {sc.p99_bound_ms:.0f} ms, nothing lost",
            best,
            "/s",
            round(target),
            round(moonshot),
            baseline=floor_rate or None,
            client_cpu=top["cpu"].get("client"),
            cpu=top["cpu"],
            details={
                "ladder": [{k: v for k, v in s.items() if k != "cpu"} for s in steps],
                "fraction_of_floor": round(best / floor_rate, 3) if floor_rate else None,
                "fraction_of_batched_floor": (
                    round(best / ctx.measured["floor-batched"], 3)
                    if ctx.measured.get("floor-batched")
                    else None
                ),
                "expected": sum(s["sent"] for s in steps),
                "received": sum(s["received"] for s in steps),
                "streams": totals["streams"],
                "gaps": totals["gaps"],
                "dups": totals["dups"],
                "failed_connects": totals["failed_connects"],
                "broker_us_per_event": top.get("broker_us_per_event"),
                "floor_broker_us_per_event": top.get("floor_broker_us_per_event"),
            },
        ),
    ]


async def latency_fixed(ctx: Ctx) -> list[Figure]:
    """publish → client at a fixed rate (2,000/s), one event per message, C publisher."""
    sc = ctx.scale
    rate = sc.fixed_latency_rate
    steps, totals = await _steady_steps(ctx, "c", [rate], sc.latency_duration, "lat2k")
    step = steps[0]
    cpu = step.pop("cpu")
    details = {
        **step,
        "expected": step["sent"],
        "streams": totals["streams"],
        "failed_connects": totals["failed_connects"],
        "p999_ms": ms(pct(totals["lat"] or [], 99.9)[0]),
    }
    return latency_figures(
        "latency-2000", rate, step["p50_ms"], step["p99_ms"], ((2, 1), (10, 5)), cpu, details
    )
