"""The broker floor's tools: the C publisher and consumer of bench/floor/ (built
here with gcc against librabbitmq), and the Python ``ssehub.Publisher`` driven at
a steady rate. Each runs in a process of its own, so its CPU is its own."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

SRC = Path(__file__).with_name("floor")
BUILD = SRC / "build"
PROGRAMS = ("publish", "consume")


def build() -> dict[str, Path]:
    """Compile the programs when a source is newer than its binary."""
    BUILD.mkdir(exist_ok=True)
    sources = list(SRC.glob("*.[ch]"))
    out = {}
    for name in PROGRAMS:
        binary = BUILD / name
        newest = max(p.stat().st_mtime for p in sources)
        if not binary.exists() or binary.stat().st_mtime < newest:
            cc = ["gcc", "-O2", "-Wall", "-D_GNU_SOURCE", "-o", str(binary), str(SRC / f"{name}.c")]
            done = subprocess.run([*cc, "-lrabbitmq"], capture_output=True, text=True)
            if done.returncode:  # (bench/run installs librabbitmq-dev when it is missing)
                raise RuntimeError(f"building bench/floor/{name}.c: {done.stderr.strip()}")
        out[name] = binary
    return out


def amqp_args(url: str) -> list[str]:
    u = urllib.parse.urlsplit(url)
    return [
        f"host={u.hostname or '127.0.0.1'}",
        f"port={u.port or 5672}",
        f"vhost={urllib.parse.unquote(u.path[1:]) or '/'}",
        f"user={urllib.parse.unquote(u.username or 'guest')}",
        f"pass={urllib.parse.unquote(u.password or 'guest')}",
    ]


async def c_publish(
    url: str,
    *,
    rate: float,
    duration: float,
    users: int,
    prefix: str,
    run: str,
    batch: int = 0,
    window: int = 1000,
) -> dict[str, Any]:
    """``rate`` events/s for ``duration`` s (see bench/floor/publish.c)."""
    argv = [str(build()["publish"]), *amqp_args(url)]
    argv += [f"rate={rate}", f"duration={duration}", f"users={users}", f"prefix={prefix}"]
    argv += [f"run={run}", f"batch={batch}", f"window={window}"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if not out:
        raise RuntimeError(f"floor publisher failed: {err.decode().strip()}")
    res: dict[str, Any] = json.loads(out)
    return res


class Consumer:
    """bench/floor/consume.c on a durable queue bound to sse.events."""

    def __init__(self, url: str, expect: int, *, queue: str = "bench.floor", idle: float = 10.0):
        self.argv = [str(build()["consume"]), *amqp_args(url)]
        self.argv += [f"queue={queue}", f"expect={expect}", f"idle={idle}"]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Returns once it is consuming."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise RuntimeError(f"floor consumer failed: {err.decode().strip()}")

    async def result(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        if not out:
            raise RuntimeError(f"floor consumer failed: {err.decode().strip()}")
        res: dict[str, Any] = json.loads(out)
        return res


# -- the Python publisher (ssehub.Publisher), concurrent calls coalescing -----------


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _coalesced(
    url: str, rate: float, duration: float, users: list[str], pad: str, run: str
) -> dict[str, Any]:
    """``rate`` send_event_to_user calls/s, each its own task (as many concurrent
    request handlers would make them); the Publisher coalesces them into batches.
    ``t`` is when the event was due, as in the C publisher."""
    from ssehub import Publisher

    pub = Publisher(url)
    sender = pub._sender  # count the AMQP messages it sends
    messages = 0
    original = sender.publish

    async def counted(routing_key: str, body: bytes, message_id: str) -> None:
        nonlocal messages
        messages += 1
        await original(routing_key, body, message_id)

    sender.publish = counted  # type: ignore[method-assign]
    await pub.publish("members.bench-warmup", b'{"op":"set","users":[]}')  # connect first
    messages = 0
    loop = asyncio.get_running_loop()
    calls: list[asyncio.Task[str]] = []
    total = int(rate * duration)
    t0, w0, c0 = loop.time(), time.time_ns() // 1000, _cpu()
    sent = 0
    while sent < total:
        due = min(int(rate * (loop.time() - t0)), total)
        for n in range(sent, due):
            data = {"t": w0 + int(n * 1e6 / rate), "n": n, "p": pad}
            user = users[n % len(users)]
            calls.append(
                asyncio.create_task(pub.send_event_to_user(user, "bench", data, key=f"{run}-{n}"))
            )
        sent = due
        await asyncio.sleep(0.001)
    await asyncio.gather(*calls)
    elapsed = loop.time() - t0
    cpu = _cpu() - c0
    await pub.close()
    return {"sent": sent, "messages": messages, "elapsed": elapsed, "cpu_s": cpu, "rate": rate}


def _coalesced_job(*args: Any) -> dict[str, Any]:
    return asyncio.run(_coalesced(*args))


async def py_publish(
    url: str, *, rate: float, duration: float, users: list[str], run: str, pad: int = 64
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        args = (url, rate, duration, users, "x" * pad, run)
        return await loop.run_in_executor(pool, _coalesced_job, *args)


# -- the Node publisher (clients/node), the same load --------------------------------
NODE_DRIVER = Path(__file__).with_name("node_publish.mjs")
NODE_PACKAGE = Path(__file__).parent.parent / "clients" / "node"


def node_ready() -> str | None:
    """Build the npm package when needed; None when ready, else why not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not installed"
    if not (NODE_PACKAGE / "dist" / "index.js").exists():
        for cmd in (
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            ["npm", "run", "build"],
        ):
            done = subprocess.run(cmd, cwd=NODE_PACKAGE, capture_output=True, text=True)
            if done.returncode != 0:
                return f"{' '.join(cmd)} in clients/node failed: {done.stderr.strip()[-300:]}"
    return None


async def node_publish(
    url: str, *, rate: float, duration: float, users: tuple[str, int], run: str, pad: int = 64
) -> dict[str, Any]:
    """What ``py_publish`` does, with the Node publisher, in a node process."""
    args = {
        "url": url,
        "rate": rate,
        "duration": duration,
        "users": users,
        "pad": "x" * pad,
        "run": run,
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DRIVER),
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"node publisher failed: {err.decode().strip()[-2000:]}")
    res: dict[str, Any] = json.loads(out)
    return res
