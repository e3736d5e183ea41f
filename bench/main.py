"""``bench/run``: every scenario against the real stack, a table, JSON, PNG, docs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import report, stack
from bench.figure import Figure, fmt
from bench.harness import SMOKE, Ctx, Scale
from bench.scenarios_edge import connect, edge_unicast, idle, reconnect
from bench.scenarios_floor import floor, latency_fixed, pipeline_steady
from bench.scenarios_partitions import dispatcher_partitions, failover_and_share, fanout_partitions
from bench.scenarios_pipeline import dispatcher, fanout, latency, pipeline

Scenario = Callable[[Ctx], Awaitable[list[Figure]]]

# In running order: latency uses the pipeline (SQLite) figure, the steady
# pipelines the floor's.
SCENARIOS: dict[str, Scenario] = {
    "dispatcher-sqlite": lambda ctx: dispatcher(ctx, "sqlite"),
    "dispatcher-postgres": lambda ctx: dispatcher(ctx, "postgres"),
    "dispatcher-batched-sqlite": lambda ctx: dispatcher(ctx, "sqlite", batched=True),
    "dispatcher-batched-postgres": lambda ctx: dispatcher(ctx, "postgres", batched=True),
    "pipeline-sqlite": lambda ctx: pipeline(ctx, "sqlite"),
    "pipeline-postgres": lambda ctx: pipeline(ctx, "postgres"),
    "latency": latency,
    "floor": lambda ctx: floor(ctx, batched=False),
    "floor-batched": lambda ctx: floor(ctx, batched=True),
    "pipeline-steady": lambda ctx: pipeline_steady(ctx, "c"),
    "pipeline-steady-bindings": lambda ctx: pipeline_steady(ctx, "c-bindings"),
    "pipeline-steady-unpacked": lambda ctx: pipeline_steady(ctx, "c-unpacked"),
    "pipeline-steady-batched": lambda ctx: pipeline_steady(ctx, "c-batched"),
    "pipeline-steady-batched-bindings": lambda ctx: pipeline_steady(ctx, "c-batched-bindings"),
    "pipeline-steady-publisher": lambda ctx: pipeline_steady(ctx, "py"),
    "pipeline-steady-node": lambda ctx: pipeline_steady(ctx, "node"),
    "latency-2000": latency_fixed,
    "pipeline-steady-postgres": lambda ctx: pipeline_steady(ctx, "c-postgres"),
    "pipeline-steady-partitions": lambda ctx: pipeline_steady(ctx, "c-partitions"),
    "dispatcher-partitions": dispatcher_partitions,
    "fanout-partitions": fanout_partitions,
    "partitions-failover": failover_and_share,
    "edge-unicast": edge_unicast,
    "fanout": fanout,
    "connect": connect,
    "reconnect": reconnect,
    "idle": idle,
}
# consecutive scenarios of these share one stack and its streams (Ctx.shared)
SHARED_STACK = {
    "pipeline-steady",
    "pipeline-steady-bindings",
    "pipeline-steady-unpacked",
    "pipeline-steady-batched",
    "pipeline-steady-batched-bindings",
    "pipeline-steady-publisher",
    "pipeline-steady-node",
    "latency-2000",
    "pipeline-steady-postgres",
    "pipeline-steady-partitions",
}
ROOT = stack.ROOT
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny scale, for CI (< 1 min)")
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these (a prefix works: 'pipeline'); of {', '.join(SCENARIOS)}",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the sse-starlette baseline")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the process under test; summaries in bench/results/profiles/ "
        "(results go to bench/results/profiled.json, not latest.json)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite docs/benchmarks.md and .png from bench/results/latest.json",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        metavar="S",
        help="wait up to S s for other test runs on the machine to end before "
        "each scenario (default 300, smoke 0)",
    )
    for f in dataclasses.fields(Scale):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=None,
            metavar=type(f.default).__name__.upper(),
            help=f"(default {f.default}, smoke {getattr(SMOKE, f.name)})",
        )
    return p.parse_args(argv)


def select(names: list[str]) -> list[str]:
    if not names:
        return list(SCENARIOS)
    chosen = [s for s in SCENARIOS if any(s == n or s.startswith(n) for n in names)]
    unknown = [n for n in names if not any(s.startswith(n) for s in SCENARIOS)]
    if unknown:
        raise SystemExit(f"bench/run: unknown scenario {', '.join(unknown)}")
    return chosen


def integrity(f: Figure) -> list[str]:
    """Lost, doubled or out-of-order events make a figure worthless: report them."""
    d = f.details
    problems = [f"{k}={d[k]}" for k in ("gaps", "dups", "live_gaps") if d.get(k)]
    if d.get("streams_complete", d.get("streams")) != d.get("streams"):
        problems.append(f"streams complete {d['streams_complete']} of {d['streams']}")
    if "expected" in d and d.get("received", 0) < d["expected"]:
        problems.append(f"received {d['received']} of {d['expected']}")
    if d.get("failed_connects") or d.get("failed"):
        problems.append(f"failed connects {d.get('failed_connects') or d.get('failed')}")
    return problems


async def run(args: argparse.Namespace) -> int:
    base = SMOKE if args.smoke else Scale()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Scale)
        if getattr(args, f.name) is not None
    }
    scale = dataclasses.replace(base, **overrides)
    names = select(args.scenario)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": args.smoke,
        "scale": dataclasses.asdict(scale),
        "machine": report.machine(),
        "load_before": round(os.getloadavg()[0], 2),
        "code": code_version(),
    }
    figures: list[Figure] = []
    failed = False
    started = time.monotonic()
    with stack.rabbitmq_vhost() as amqp, tempfile.TemporaryDirectory(prefix="ssehub-bench-") as wd:
        ctx = Ctx(
            scale,
            amqp,
            Path(wd),
            baseline=not args.no_baseline,
            profile=args.profile,
            results_dir=RESULTS,
        )
        default_wait = 0.0 if args.smoke else 300.0
        ctx.quiet_wait = default_wait if args.quiet_wait is None else args.quiet_wait
        try:
            for name in names:
                if name not in SHARED_STACK:
                    await ctx.close_shared()
                print(f"== {name}", flush=True)
                t0 = time.monotonic()
                got = await run_one(ctx, name)
                for f in got:
                    problems = integrity(f)
                    if problems:
                        f.details["integrity"] = problems
                    failed |= f.status == "error" or bool(problems)
                    print(
                        f"   {f.name}: {fmt(f.value, f.unit)}  (target {fmt(f.target, f.unit)},"
                        f" moonshot {fmt(f.moonshot, f.unit)}: {report.MARK[f.status]})"
                        + (f"  INTEGRITY: {', '.join(problems)}" if problems else "")
                        + (f"  {f.error}" if f.error else ""),
                        flush=True,
                    )
                print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
                figures.extend(got)
        finally:
            await ctx.close_shared()
            ctx.close()
            keep_logs(Path(wd))
    meta["duration_s"] = round(time.monotonic() - started, 1)
    print()
    print(report.table(figures))
    print(
        f"\n{len(names)} scenario(s) in {meta['duration_s']} s; load client CPU is % of one core."
    )
    save(args, meta, figures)
    return 1 if failed else 0


def code_version() -> str:
    """The commit measured, and whether the work tree differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edge", "dispatcher", "shared"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in edge/dispatcher/shared' if dirty else ''}"


def keep_logs(workdir: Path) -> None:
    """The processes' logs, for a look after the run (bench/results/logs/)."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, logs / log.name)


async def wait_quiet(seconds: float) -> list[str]:
    """Wait (bounded) for other test runs on this machine to end; those still running."""
    for _ in range(int(seconds / 2)):
        if not stack.others_testing():
            break
        await asyncio.sleep(2.0)
    return stack.others_testing()


def _broker_pid() -> int | None:
    proc = stack.rabbit_process()
    return int(proc.pid) if proc is not None else None


async def run_one(ctx: Ctx, name: str) -> list[Figure]:
    """One scenario, bounded in time; run again once if RabbitMQ was restarted
    under it (this machine is shared with fault-injection tests)."""
    for attempt in (1, 2, 3):
        others = await wait_quiet(ctx.quiet_wait)
        if others:
            print(f"   note: other test runs are using this machine: {others[:2]}", flush=True)
        await stack.wait_broker(ctx.amqp, 180)
        broker = _broker_pid()
        try:
            async with asyncio.timeout(ctx.scale.timeout * 4):
                got = await SCENARIOS[name](ctx)
        except Exception as exc:
            traceback.print_exc()
            got = [Figure(name, "error", None, "", 0, 0, error=f"{type(exc).__name__}: {exc}")]
        for f in got:
            f.details["others_testing"] = len(others)
            f.details["key"] = name
        if _broker_pid() == broker or attempt == 3:
            return got
        await ctx.close_shared()  # its connections went with the broker
        print("   RabbitMQ was restarted during the scenario (not by us): again", flush=True)
    return got


def render() -> None:
    meta, figures = report.load_json(RESULTS / "latest.json")
    meta.pop("figures", None)
    write_docs(meta, figures)


def save(args: argparse.Namespace, meta: dict[str, object], figures: list[Figure]) -> None:
    if args.smoke or args.profile:  # tiny or perturbed by py-spy: not the results
        path = RESULTS / ("smoke.json" if args.smoke else "profiled.json")
        report.write_json(path, meta, figures)
        print(f"wrote {path}")
        return
    path = RESULTS / "latest.json"
    if args.scenario:  # a partial run replaces its own scenarios in the last full results
        old_meta, old = report.load_json(path)
        ran = {f.details.get("key", f.scenario) for f in figures}
        figures = [f for f in old if f.details.get("key", f.scenario) not in ran] + figures
        rerun = f"{', '.join(sorted(ran))} re-run {meta['date']}"
        meta = {**meta, **old_meta, "rerun": rerun}  # the full run's date, machine, code
        meta.pop("figures", None)
    report.write_json(path, meta, figures)
    print(f"wrote {path}")
    if args.no_docs:
        return
    write_docs(meta, figures)


def write_docs(meta: dict[str, object], figures: list[Figure]) -> None:
    report.plot(ROOT / "docs" / "benchmarks.png", figures)
    doc = report.markdown(meta, figures, "benchmarks.png")
    doc += "\n<details><summary>results JSON (bench/results/latest.json)</summary>\n\n```json\n"
    doc += json.dumps({**meta, "figures": [f.to_json() for f in figures]}, indent=1, default=str)
    doc += "\n```\n</details>\n"
    (ROOT / "docs" / "benchmarks.md").write_text(doc)
    print(f"wrote {ROOT / 'docs' / 'benchmarks.md'} and docs/benchmarks.png")


def main() -> None:
    args = parse_args()
    if args.render:
        render()
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
