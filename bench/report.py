"""The results: a table on stdout, JSON, a PNG, and docs/benchmarks.md."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.figure import Figure, fmt

MARK = {"moonshot": "★ moonshot", "target": "✓ target", "missed": "✗ missed", "error": "! error"}
NOTES = Path(__file__).with_name("notes.md")


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def rows(figures: Sequence[Figure]) -> list[list[str]]:
    out = []
    for f in figures:
        ratio = f.ratio
        d = f.details
        short = d.get("streams_complete", d.get("streams")) != d.get("streams")
        out.append(
            [
                f.scenario,
                f.name,
                "error" if f.error else (">" if short else "") + fmt(f.value, f.unit),
                fmt(f.target, f.unit),
                fmt(f.moonshot, f.unit),
                MARK[f.status],
                fmt(f.baseline, f.unit) if f.baseline is not None else "",
                f"{ratio:.2f}×" if ratio is not None else "",
                f"{f.client_cpu:.0f} %" if f.client_cpu is not None else "",
            ]
        )
    return out


HEAD = [
    "scenario",
    "figure",
    "measured",
    "target",
    "moonshot",
    "",
    "baseline",
    "ratio",
    "client CPU",
]


def table(figures: Sequence[Figure]) -> str:
    body = rows(figures)
    widths = [max(len(r[i]) for r in [HEAD, *body]) for i in range(len(HEAD))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))

    return "\n".join([line(HEAD), line(["-" * w for w in widths]), *map(line, body)])


def markdown_table(figures: Sequence[Figure]) -> str:
    out = ["| " + " | ".join([*HEAD[:5], "status", *HEAD[6:]]) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(r) + " |" for r in rows(figures)]
    return "\n".join(out)


def write_json(path: Path, meta: dict[str, Any], figures: Sequence[Figure]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "figures": [f.to_json() for f in figures]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def load_json(path: Path) -> tuple[dict[str, Any], list[Figure]]:
    if not path.exists():
        return {}, []
    doc = json.loads(path.read_text())
    return doc, [Figure.from_json(f) for f in doc.get("figures", [])]


def plot(path: Path, figures: Sequence[Figure]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [f for f in figures if f.of_target is not None]
    lat = next((f for f in figures if f.details.get("histogram_ms")), None)
    fig, axes = plt.subplots(
        1,
        2 if lat else 1,
        figsize=(14 if lat else 9, 6),
        gridspec_kw={"width_ratios": [3, 2]} if lat else None,
    )
    ax = axes[0] if lat else axes
    labels = [f"{f.scenario}: {f.name}"[:58] for f in shown]
    values = [f.of_target or 0 for f in shown]
    colors = {"moonshot": "#2e7d32", "target": "#66bb6a", "missed": "#e57373"}
    ax.barh(range(len(shown)), values, color=[colors.get(f.status, "grey") for f in shown])
    for i, f in enumerate(shown):
        ax.plot(
            [
                f.of_target
                and (f.moonshot / f.target if f.higher_is_better else f.target / f.moonshot)
            ]
            * 2,
            [i - 0.4, i + 0.4],
            color="#1b5e20",
            lw=2,
        )
        ax.text(values[i], i, " " + fmt(f.value, f.unit), va="center", fontsize=8)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("measured ÷ target (> 1 is better; black = target, green tick = moonshot)")
    ax.set_title("ssehub benchmarks vs targets")
    if lat:
        hist = lat.details["histogram_ms"]
        ax2 = axes[1]
        ax2.bar(range(len(hist)), [c for _, c in hist], color="#5c6bc0")
        ax2.set_xticks(range(len(hist)), [f"≤{b:.3g}" for b, _ in hist], rotation=70, fontsize=7)
        ax2.set_xlabel("publish → client latency (ms)")
        ax2.set_ylabel("events")
        ax2.set_title(f"latency at {lat.details.get('rate_published', '?')}/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu_table(figures: Sequence[Figure]) -> str:
    groups = [
        "client",
        "edge",
        "edge (kernel)",
        "server",
        "dispatcher",
        "rabbitmq",
        "other",
        "machine",
    ]
    out = ["| scenario | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for f in figures:
        if f.cpu:
            cells = [f"{f.cpu[g]:.0f}" if g in f.cpu else "" for g in groups]
            out.append(f"| {f.scenario} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def floor_table(figures: Sequence[Figure]) -> str:
    """The steady-rate ladders: each max rate, as a fraction of the floor's, with
    the broker's CPU per event next to the floor's at the same rate."""
    out = [
        "| scenario | events per message | max rate (p99 ≤ bound, nothing lost) | of the floor "
        "| p50 / p99 at that rate | broker µs per event (floor's at that rate) "
        "| publisher CPU | load client CPU | edge + dispatcher CPU | broker CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        steps = f.details.get("ladder")
        if f.scenario == "latency-2000" and "sent" in f.details:  # (the p50 figure)
            steps = [f.details]
        elif not steps:
            continue
        top = next((s for s in steps if s.get("rate") == f.value), steps[-1])
        per_msg = round(top["sent"] / max(top.get("messages") or 1, 1), 1)
        frac = f.details.get("fraction_of_floor")
        floor_us = top.get("floor_broker_us_per_event")
        c = f.cpu
        out.append(
            f"| {f.scenario} | {per_msg:g} | "
            + ("–" if f.scenario == "latency-2000" else fmt(f.value, "/s"))
            + f" | {f'{frac:.2f}×' if frac is not None else ''}"
            + f" | {fmt(top.get('p50_ms'))} / {fmt(top.get('p99_ms'))} ms at {fmt(top['rate'])}/s"
            + f" | {fmt(top.get('broker_us_per_event'))}"
            + (f" ({fmt(floor_us)})" if floor_us is not None else "")
            + f" | {_pct(top.get('publisher_cpu'))} | "
            + _pct(c.get("client", top.get("consumer_cpu")))
            + " | "
            + (_pct(c["edge"] + c["dispatcher"]) if "edge" in c and "dispatcher" in c else "")
            + f" | {_pct(c.get('rabbitmq'))} |"
        )
    return "\n".join(out) if len(out) > 2 else ""


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.0f} %"


def markdown(meta: dict[str, Any], figures: Sequence[Figure], png: str) -> str:
    m = meta.get("machine", {})
    notes = NOTES.read_text() if NOTES.exists() else ""
    details = "\n".join(
        f"- **{f.scenario}** – {f.name}: `{json.dumps(_brief(f.details), default=str)}`"
        for f in figures
        if f.details
    )
    return f"""# Benchmarks

<!-- generated by bench/run from bench/results/latest.json and bench/notes.md; edit those -->

Run `bench/run` (everything, ~20 min) or `bench/run --scenario NAME`; CI runs
`bench/run --smoke` (tiny scale, well under a minute, checks the suite still works).
`bench/run --help` lists the scale flags; `--profile` adds py-spy profiles of the
process under test in `bench/results/profiles/`.

Measured {meta.get("date", "?")} on {m.get("cpus", "?")} cores ({m.get("cpu_model", "?")}),
{m.get("memory_gib", "?")} GiB, Python {m.get("python", "?")}; the whole stack (RabbitMQ,
PostgreSQL, dispatcher, edge, load client, publishers) on that one machine. Load average
before the run: {meta.get("load_before", "?")}. Code measured: {meta.get("code", "?")}.
{f"Since then: {meta['rerun']}." if meta.get("rerun") else ""}

## Results

{markdown_table(figures)}

{_summary(figures)}

"baseline" is the same scenario against `bench/baseline_server.py` (FastAPI +
sse-starlette, an in-memory queue per connection); "ratio" is ssehub ÷ baseline
(for RSS and CPU, lower is better: below 1× ssehub uses less). A ">" marks a
figure whose scenario ran out of time before every stream was done.
"client CPU" is the load client's CPU in % of one core during the measurement.

![benchmarks]({png})

### CPU during each measurement

% of one core; "machine" is all processes together (at most {100 * (m.get("cpus") or 2)}),
"other" is what the named processes do not account for (PostgreSQL, publishers, other work).

{_cpu_table(figures)}

### Floor and ratios

The broker alone (`floor`: bench/floor/publish.c, persistent, pipelined
confirms → `sse.events` → a durable queue → bench/floor/consume.c, acks every
500; no ssehub code) and the pipeline (dispatcher + one edge, SQLite, the load
client's streams) at the same steady rates, one ladder step after another
until p99 passes the bound or an event is missing. "of the floor" is the
pipeline's max rate ÷ the one-event floor's, both from this run. For the
floor, "load client" is the C consumer. Broker µs
per event: RabbitMQ's CPU during the step (its idle CPU subtracted) ÷ events
delivered; in brackets the floor's at the same rate (the batched floor for
batch messages). CPU in % of one core.

{floor_table(figures) or "(not measured in this run)"}

### Details

{details}

{notes}"""


def _summary(figures: Sequence[Figure]) -> str:
    counts = {k: sum(1 for f in figures if f.status == k) for k in MARK}
    return (
        f"**{counts['moonshot'] + counts['target']} of {len(figures)} figures meet their "
        f"target** ({counts['moonshot']} the moonshot); {counts['missed']} missed"
        + (f", {counts['error']} failed to run" if counts["error"] else "")
        + "."
    )


def _brief(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in details.items():
        if k == "histogram_ms":
            continue
        if isinstance(v, dict):
            v = _brief(v)
        elif isinstance(v, float):
            v = round(v, 2) if not math.isnan(v) else None
        out[k] = v
    return out
