"""What every scenario shares: scale, the run's vhost and work dir, stacks, stats."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from array import array
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import stack
from bench.client import Reply
from bench.pool import ClientPool
from bench.profile import Profiler


@dataclass
class Scale:
    """Every size a scenario uses; ``bench/run --help`` lists them as flags."""

    workers: int = 4  # load-client processes
    idle_conns: int = 15_000
    idle_window: float = 30.0  # seconds of CPU measurement with idle streams
    ping_interval: float = 15.0
    connect_conns: int = 5_000
    unicast_users: int = 2_000
    unicast_events: int = 50  # per user
    pipeline_users: int = 2_000
    pipeline_events: int = 20  # per user
    dispatcher_users: int = 1_000
    dispatcher_events: int = 40  # per user
    fanout_members: int = 1_000
    fanout_events: int = 40
    fanout_interval: float = 0.25  # seconds between two fan-out events
    latency_users: int = 1_000
    latency_duration: float = 15.0
    latency_rate: float = 0.0  # 0: half the pipeline (SQLite) rate measured
    storm_users: int = 10_000
    storm_behind: int = 20
    publishers: int = 2  # publisher processes for backlogs
    # events/s; the same steps for both, so each pipeline step has the floor's
    # broker CPU at its rate
    floor_rates: str = "1000,2000,3000,5000,8000,10000,12000,15000,20000"
    steady_rates: str = "1000,2000,3000,5000,8000,10000,12000,15000,20000"
    step_duration: float = 10.0  # seconds per ladder step
    steady_users: int = 2_000  # streams held during the steady-rate scenarios
    batch_items: int = 50  # events per batch message (the batched scenarios)
    fixed_latency_rate: float = 2_000.0  # latency-2000
    p99_bound_ms: float = 100.0  # a ladder step passes with p99 within this
    timeout: float = 120.0  # bound on any one wait
    settle: float = 2.0  # seconds for a server to settle before/after a step


SMOKE = Scale(
    workers=2,
    idle_conns=200,
    idle_window=2.0,
    ping_interval=0.5,
    connect_conns=200,
    unicast_users=50,
    unicast_events=20,
    pipeline_users=50,
    pipeline_events=10,
    dispatcher_users=50,
    dispatcher_events=10,
    fanout_members=50,
    fanout_events=5,
    fanout_interval=0.1,
    latency_users=50,
    latency_duration=2.0,
    storm_users=200,
    storm_behind=5,
    publishers=1,
    floor_rates="300",
    steady_rates="300",
    step_duration=1.0,
    steady_users=50,
    batch_items=10,
    fixed_latency_rate=200.0,
    p99_bound_ms=2_000.0,  # smoke checks that it runs and nothing is lost, not speed
    timeout=30.0,
    settle=0.3,
)


@dataclass
class Ctx:
    scale: Scale
    amqp: str  # the run's vhost
    workdir: Path
    baseline: bool = True
    profile: bool = False
    results_dir: Path = Path("bench/results")
    measured: dict[str, float] = field(default_factory=dict)  # figures later scenarios use
    ladders: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # the floor's steps
    pool: ClientPool | None = None  # the load client, shared by all scenarios of a run
    quiet_wait: float = 0.0  # seconds to wait for other people's test runs to end
    # one stack and its streams for consecutive steady-rate scenarios (shared())
    _shared: tuple[Stack, ClientPool, int, int] | None = None
    _shared_env: dict[str, str] | None = None
    _shared_exit: contextlib.AsyncExitStack | None = None

    @contextlib.asynccontextmanager
    async def stack(
        self,
        store: str = "sqlite",
        *,
        edge: bool = True,
        dispatcher: bool = True,
        ping: float | None = None,
        env: dict[str, str] | None = None,
        dispatcher_wait: bool = True,
        dispatchers: int = 1,
    ) -> AsyncIterator[Stack]:
        """A fresh store, a fresh edge and/or dispatcher(s); stopped and dropped
        afterwards. ``dispatchers`` > 1: that many processes, each pinned to its
        share of SSEHUB_PARTITIONS (``--partitions``), so a figure does not
        depend on how fast the fair share settles."""
        await stack.reset_vhost(self.amqp)
        async with stack.database(store, self.workdir) as db:
            extra = {"SSEHUB_PING_INTERVAL": str(ping or self.scale.ping_interval), **(env or {})}
            env = stack.ssehub_env(self.amqp, db, **extra)
            s = Stack(self, env, db)
            try:
                # dispatchers first: they declare the topology an edge checks
                # (edges declare none of it, and wait for it: docs/security.md)
                if dispatcher:
                    pins = stack.pins(int(env.get("SSEHUB_PARTITIONS", "1")), dispatchers)
                    s.dispatcher = await stack.start_dispatcher(
                        env, self.workdir, dispatcher_wait, pins[0]
                    )
                    for pin in pins[1:]:
                        s.more.append(
                            await stack.start_dispatcher(env, self.workdir, dispatcher_wait, pin)
                        )
                if edge:
                    s.edge = await stack.start_edge(env, stack.free_port(), self.workdir)
                yield s
            finally:
                for proc in (s.edge, s.dispatcher, *s.more):
                    if proc is not None:
                        await proc.stop()

    @contextlib.asynccontextmanager
    async def clients(self) -> AsyncIterator[ClientPool]:
        """The load client with no streams open; its streams are closed afterwards."""
        if self.pool is None:
            self.pool = ClientPool(self.scale.workers, stack.SECRET)
        try:
            yield self.pool
        finally:
            if self.pool.dead:
                self.close()  # a fresh one next time
            else:
                await self.pool.all("close")
                await self.pool.all("reset")

    async def shared(
        self,
        names: list[str],
        env: dict[str, str] | None = None,
        store: str = "sqlite",
        dispatchers: int = 1,
    ) -> tuple[Stack, ClientPool, int, int]:
        """A stack with one stream per name open, kept for the next scenario that
        asks with the same ``env``, store and dispatchers (the steady-rate ones:
        opening 2,000 streams and starting the processes once). Returns (stack,
        pool, streams open, failed connects)."""
        key = {**(env or {}), "store": store, "dispatchers": str(dispatchers)}
        if self._shared is not None and self._shared_env != key:
            await self.close_shared()
        if self._shared is None:
            exit_stack = contextlib.AsyncExitStack()
            try:
                s = await exit_stack.enter_async_context(
                    self.stack(store, env=env, dispatchers=dispatchers)
                )
                pool = await exit_stack.enter_async_context(self.clients())
                got, failed = 0, 0
                for r in await pool.open(
                    "127.0.0.1", s.port, names, concurrency=100, timeout=self.scale.timeout
                ):
                    got += r["opened"]
                    failed += r["failed"]
            except BaseException:
                await exit_stack.aclose()
                raise
            self._shared, self._shared_exit = (s, pool, got, failed), exit_stack
            self._shared_env = key
        return self._shared

    async def close_shared(self) -> None:
        exit_stack, self._shared, self._shared_exit = self._shared_exit, None, None
        if exit_stack is not None:
            await exit_stack.aclose()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def profiler(self, scenario: str) -> Profiler:
        return Profiler(self.results_dir / "profiles", scenario, enabled=self.profile)


@dataclass
class Stack:
    ctx: Ctx
    env: dict[str, str]
    db: str
    edge: stack.Proc | None = None
    dispatcher: stack.Proc | None = None
    more: list[stack.Proc] = field(default_factory=list)  # further dispatcher processes

    @property
    def delivery(self) -> str:
        """SSEHUB_DELIVERY of the stack's processes (they inherit the bench's environment)."""
        return self.env.get("SSEHUB_DELIVERY") or os.environ.get("SSEHUB_DELIVERY") or "nodes"

    @property
    def port(self) -> int:
        assert self.edge is not None
        return stack.port_of(self.edge)

    async def start_dispatcher(self) -> stack.Proc:
        self.dispatcher = await stack.start_dispatcher(self.env, self.ctx.workdir, wait=False)
        return self.dispatcher


def cpu_meter(
    pool: ClientPool | None = None, more: Iterable[stack.Proc] = (), **procs: stack.Proc | None
) -> stack.CpuMeter:
    """CPU by group, PostgreSQL's too; ``more``: further dispatcher processes."""
    groups: dict[str, list[Any]] = {k: [p.pid] for k, p in procs.items() if p is not None}
    if more:
        groups.setdefault("dispatcher", []).extend(p.pid for p in more)
    rabbit = stack.rabbit_process()
    if rabbit is not None:
        groups["rabbitmq"] = [rabbit]
    if pool is not None:
        groups["client"] = pool.pids
    meter = stack.CpuMeter(groups)
    meter.follow("postgres", stack.postgres_processes)  # ~0 on SQLite runs
    return meter


def merge(replies: Iterable[Reply]) -> dict[str, Any]:
    """Sum the workers' counters; concatenate their latencies (ns)."""
    replies = list(replies)
    lat: array[int] = array("q")
    by_n: dict[int, list[int]] = {}
    for r in replies:
        lat.frombytes(r.get("lat", b""))
        for n, (count, worst) in r.get("by_n", {}).items():
            slot = by_n.setdefault(n, [0, 0])
            slot[0] += count
            slot[1] = max(slot[1], worst)
    firsts = [r["first_ns"] for r in replies if r.get("first_ns")]
    return {
        "events": sum(r["events"] for r in replies),
        "other": sum(r.get("other", 0) for r in replies),
        "gaps": sum(r["gaps"] for r in replies),
        "dups": sum(r["dups"] for r in replies),
        "pings": sum(r["pings"] for r in replies),
        "open": sum(r["open"] for r in replies),
        "lost": sum(r["lost"] for r in replies),
        "first_ns": min(firsts) if firsts else 0,
        "last_ns": max((r["last_ns"] for r in replies), default=0),
        "lat": lat,
        "by_n": by_n,
    }


def opened(replies: list[Reply]) -> tuple[int, int, dict[str, int]]:
    errors: dict[str, int] = {}
    for r in replies:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return sum(r["opened"] for r in replies), sum(r["failed"] for r in replies), errors


def opened_each(replies: list[Reply]) -> tuple[int, int, dict[str, int], list[int]]:
    """``opened`` plus how many streams each worker holds."""
    return (*opened(replies), [r["opened"] for r in replies])


def pct(values: Iterable[float], *qs: float) -> list[float]:
    data = sorted(values)
    if not data:
        return [float("nan")] * len(qs)
    return [data[min(len(data) - 1, int(q / 100 * len(data)))] for q in qs]


def ms(ns: float) -> float:
    return round(ns / 1e6, 2)


async def settle(pool: ClientPool, timeout: float, quiet: float = 1.5) -> tuple[int, float]:
    """Wait until no more non-benchmark events (e.g. presence) arrive for ``quiet`` s.
    Returns how many arrived and how long it took."""
    t0 = time.monotonic()
    last, since = -1, t0
    while time.monotonic() - t0 < timeout:
        now = merge(await pool.all("stats", lat=False))["other"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        await asyncio.sleep(0.25)
    return last, round(since - t0, 2)


async def wait_seq(pool: ClientPool, seq: int, timeout: float) -> dict[str, Any]:
    """Until every open stream has seen sequence number ``seq``."""
    replies = await pool.all("wait", seq=seq, timeout=timeout)
    res = merge(replies)
    res["reached"] = sum(r["reached"] for r in replies)
    return res


async def wait_events(pool: ClientPool, per_worker: list[int], timeout: float) -> dict[str, Any]:
    replies = await pool.all("wait", [{"events": n} for n in per_worker], timeout=timeout)
    return merge(replies)


def shares(total: int, parts: int) -> list[int]:
    """How many of ``total`` round-robin items each of ``parts`` gets."""
    return [len(range(k, total, parts)) for k in range(parts)]


def now_ns() -> int:
    return time.time_ns()


def replace(scale: Scale, **changes: Any) -> Scale:
    return dataclasses.replace(scale, **changes)


async def scrape_histogram(port: int, name: str) -> dict[float, float]:
    """One histogram's cumulative bucket counts on an edge's or a dispatcher's
    ``/metrics`` (``le`` → count); empty when it does not answer."""
    found: dict[float, float] = {}
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        status, body = await asyncio.to_thread(stack.http_get, url, 5.0)
    except OSError:
        return found
    if status != 200:
        return found
    for line in body.decode().splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            found[float(le)] = float(line.rsplit(" ", 1)[1])
    return found


def bucket_quantiles(
    before: dict[float, float], after: dict[float, float], *qs: float
) -> list[float | None]:
    """The bucket bound (ms) under which each quantile of the observations made
    between two scrapes falls (None: no observations, or past the last bound)."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    out: list[float | None] = []
    for q in qs:
        bound = next((le for le, n in delta if total and n >= q * total), None)
        out.append(None if bound is None or bound == float("inf") else round(1e3 * bound, 1))
    return out
