"""py-spy against a process under test, and a plain-text summary of where its time went.

``bench/run --profile`` records the edge or dispatcher during a scenario's
measured window (``--threads``; py-spy pauses the target briefly per sample, needs root) and writes
``bench/results/profiles/<scenario>-<process>.txt``: the functions with the
most samples on-CPU at the top of the stack (self) and anywhere in it (total).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

FRAME_LINE = re.compile(r":\d+\)$")  # "func (file.py:123)" -> "func (file.py)"
# Leaf frames that are waiting, not working (py-spy's idle detection misses them here).
IDLE_LEAVES = (
    "EpollSelector.select",
    "_connection_worker_thread",
    "Condition.wait",
    "Thread.join",
    "Queue.get",
    "_worker (concurrent/futures/thread.py)",
)


def _pyspy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, scenario: str, enabled: bool) -> None:
        self.out_dir = out_dir
        self.scenario = scenario
        self.enabled = enabled and _pyspy() is not None
        self.summaries: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def record(self, name: str, pid: int | None, rate: int = 200) -> AsyncIterator[None]:
        """Sample ``pid`` for as long as the block runs."""
        if not self.enabled or pid is None:
            yield
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = self.out_dir / f"{self.scenario}-{name}.raw"
        proc = await asyncio.create_subprocess_exec(
            *[
                _pyspy() or "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--threads",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--duration",
                "600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
            if raw.exists():
                try:
                    text = summarize(raw.read_text(errors="replace"))
                except Exception as exc:  # a summary must not fail the scenario
                    text = f"could not summarize {raw.name}: {exc!r}\n"
                (self.out_dir / f"{self.scenario}-{name}.txt").write_text(text)
                self.summaries[name] = text


def _thread(stack: str) -> str:
    first = stack.split(";", 1)[0]
    if not first.startswith("thread "):
        return "?"
    name = first.partition(":")[2].strip()
    return name or first.removeprefix("thread ").strip()


def _frames(stack: str) -> list[str]:
    parts = stack.split(";")
    # drop "process ..." and "thread ..." pseudo-frames py-spy puts first
    frames = [p for p in parts if "(" in p and not p.startswith(("process ", "thread "))]
    return [FRAME_LINE.sub(")", f.strip()) for f in frames]


def package(frame: str) -> str:
    """``func (sqlalchemy/engine/base.py)`` → ``sqlalchemy``; ours by module."""
    path = frame.rsplit("(", 1)[-1].rstrip(")")
    parts = path.split("/")
    if parts[0] in ("edge", "dispatcher", "shared", "bench"):
        return "/".join(parts[:2])
    if path == "asyncio/runners.py":
        return "event loop (uvloop, incl. socket I/O)"
    return parts[0] if len(parts) > 1 else path


def summarize(raw: str, top: int = 30) -> str:
    """Self and total sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = _frames(stack)
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES):
            idle += n
            continue
        samples += n
        threads[_thread(stack)] += n
        own[frames[-1]] += n
        packages[package(frames[-1])] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return "no samples\n"
    lines = [
        f"{samples} busy samples ({idle} more waiting in select/queues, left out)",
        "by thread: "
        + ", ".join(f"{t} {100 * c / samples:.0f} %" for t, c in threads.most_common(5)),
        "",
        "self %   package (where the on-CPU leaf frame is)",
        *[f"{100 * c / samples:6.1f}   {p}" for p, c in packages.most_common(12)],
        "",
        "self %   function",
    ]
    lines += [f"{100 * c / samples:6.1f}   {f}" for f, c in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * c / samples:6.1f}   {f}" for f, c in total.most_common(top)]
    return "\n".join(lines) + "\n"
