"""The real stack under test: a throwaway vhost and database, the ``ssehub``
processes (and the baseline server) as subprocesses, and their CPU and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import psutil
import ssehub.amqp
from ssehub import topology
from ssehub.storage import identity

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
AMQP = os.environ.get("SSEHUB_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG = os.environ.get("SSEHUB_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def rabbitmq_vhost(base_url: str = AMQP) -> Iterator[str]:
    """A fresh vhost for the run, deleted afterwards: the tests' own helper."""
    from tests.support import rabbitmq_vhost as throwaway_vhost

    with throwaway_vhost(base_url) as url:
        yield url


async def reset_vhost(url: str) -> None:
    """Between scenarios: drop what a previous one may have left queued, the
    deployment's store id (each scenario brings a new store: ssehub.storage.identity)
    and its partition count (the partitions scenarios change it)."""
    conn = await aio_pika.connect(url)
    partitions = [topology.dispatch_queue(p, 8) for p in range(8)]
    try:
        marks = (identity.MARKER, topology.PARTITIONS_MARKER)
        for name in ("ssehub.dispatch", "sse.dead", "bench.sink", *marks, *partitions):
            ch = await conn.channel()
            with contextlib.suppress(Exception):
                await ch.queue_delete(name)
            with contextlib.suppress(Exception):
                await ch.close()
        # and declare the contract's topology again, as any publisher does: edges
        # send presence signals to ssehub.dispatch even when no dispatcher runs
        await topology.declare_core(await conn.channel())
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database(kind: str, workdir: Path) -> AsyncIterator[str]:
    """A fresh store: a SQLite file, or a throwaway PostgreSQL database."""
    if kind == "sqlite":
        path = workdir / f"store-{uuid.uuid4().hex[:6]}.db"
        yield f"sqlite:///{path}"
        return
    from tests.support import postgres_database  # the tests' throwaway database

    async with postgres_database(PG) as url:
        yield url


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Proc:
    """A child process we started, with its log file and psutil handle."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def pause(self) -> None:
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    def check(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{tail}")

    async def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL: a graceful drain is not what is measured."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.popen.wait, timeout)
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, argv: Sequence[str], env: dict[str, str], workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            env={**os.environ, **env},
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_nofile,
        )
    return Proc(name, popen, log)


def port_of(proc: Proc) -> int:
    """The HTTP port of an edge or dispatcher we started (in its name)."""
    return int(proc.name.split("-")[1])


def pid_of(proc: Proc | None) -> int | None:
    return proc.pid if proc is not None else None


def ssehub_env(amqp_url: str, db_url: str, **extra: str) -> dict[str, str]:
    env = {
        "SSEHUB_RABBITMQ_URL": amqp_url,
        "SSEHUB_DATABASE_URL": db_url,
        "SSEHUB_JWT_SECRET": SECRET,
        "SSEHUB_LOG_LEVEL": "WARNING",
        "SSEHUB_RETENTION_INTERVAL": "3600",
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def wait_http(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check()
        with contextlib.suppress(OSError):
            status, _ = await asyncio.to_thread(http_get, url)
            if status == 200:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{proc.name}: {url} not ready after {timeout}s")


async def start_edge(env: dict[str, str], port: int, workdir: Path) -> Proc:
    proc = spawn(
        f"edge-{port}",
        [str(BIN / "ssehub"), "edge", "--host", "127.0.0.1", "--port", str(port)],
        env,
        workdir,
    )
    await wait_http(proc, f"http://127.0.0.1:{port}/readyz")
    return proc


async def queue_info(url: str, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue, by a passive declare."""
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(name, passive=True)
        res = q.declaration_result
        return res.message_count or 0, res.consumer_count or 0
    finally:
        await conn.close()


def pins(partitions: int, processes: int) -> list[str | None]:
    """``--partitions`` of each of ``processes``: an even split (None: one
    process, unpinned)."""
    if processes == 1:
        return [None]
    return [",".join(str(p) for p in range(k, partitions, processes)) for k in range(processes)]


async def start_dispatcher(
    env: dict[str, str], workdir: Path, wait: bool = True, pin: str | None = None
) -> Proc:
    """A dispatcher with its HTTP port (``/metrics``) on a free port, named
    ``dispatcher-<port>`` like an edge (``port_of``); ``pin``: its partitions."""
    port = free_port()
    argv = [str(BIN / "ssehub"), "dispatcher", "--host", "127.0.0.1", "--port", str(port)]
    if pin is not None:
        argv += ["--partitions", pin]
    proc = spawn(f"dispatcher-{port}", argv, env, workdir)
    if wait:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc.check()
            with contextlib.suppress(Exception):
                if (await queue_info(env["SSEHUB_RABBITMQ_URL"], "ssehub.dispatch"))[1] > 0:
                    return proc
            await asyncio.sleep(0.1)
        raise TimeoutError("dispatcher did not start consuming")
    return proc


async def start_baseline(port: int, workdir: Path, ping: float = 15.0) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline_server:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {"PYTHONPATH": str(ROOT), "BASELINE_SECRET": SECRET, "BASELINE_PING": str(ping)}
    proc = spawn(f"baseline-{port}", argv, env, workdir)
    await wait_http(proc, f"http://127.0.0.1:{port}/healthz")
    return proc


def rabbit_process() -> psutil.Process | None:
    """The Erlang VM of the broker the run uses: the beam.smp listening on
    AMQP's port (another node may run beside it, a private test broker say);
    else the oldest beam.smp (rabbitmqctl runs short-lived ones)."""
    port = urlsplit(AMQP).port or 5672
    beams = [
        p for p in psutil.process_iter(["name", "create_time"]) if p.info["name"] == "beam.smp"
    ]
    for beam in beams:
        with contextlib.suppress(psutil.Error):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in beam.net_connections("tcp")
            ):
                return beam
    return min(beams, key=lambda p: p.info["create_time"]) if beams else None


async def wait_broker(url: str, timeout: float) -> None:
    """RabbitMQ accepting connections to the run's vhost (it may be being restarted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await ssehub.amqp.connect(url, timeout=5)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
        else:
            await conn.close()
            return


def others_testing() -> list[str]:
    """Test runs of other people on this machine (they restart RabbitMQ and take CPU)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "pytest" in cmd or "tests.faults" in cmd:
            found.append(f"{p.info['pid']}: {cmd[:80]}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def other_load() -> float:
    """The 1-minute load average: other work on this machine skews every figure."""
    return os.getloadavg()[0]


def postgres_processes() -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")
    ]


class CpuMeter:
    """CPU seconds of named groups of processes over a window, as % of one core.
    A group given by :meth:`follow` is listed again at the end, so processes born
    inside the window (PostgreSQL's backends for connections opened after
    ``start``) count too."""

    def __init__(self, groups: Mapping[str, Sequence[psutil.Process | int]]) -> None:
        self.groups = {
            name: [p if isinstance(p, psutil.Process) else psutil.Process(p) for p in procs]
            for name, procs in groups.items()
        }
        self._listers: dict[str, Callable[[], list[psutil.Process]]] = {}
        self._t0 = 0.0
        self._c0: dict[str, float] = {}
        self._pid0: dict[int, tuple[float, float]] = {}

    def follow(self, name: str, lister: Callable[[], list[psutil.Process]]) -> None:
        self._listers[name] = lister

    @staticmethod
    def _times(p: psutil.Process) -> tuple[float, float]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            return t.user + t.system, t.system
        return 0.0, 0.0

    def _cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self.groups.items():
            times = [self._times(p) for p in procs]
            out[name] = sum(t for t, _ in times)
            out[f"{name} (kernel)"] = sum(s for _, s in times)
        t = psutil.cpu_times()
        out["machine"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return out

    def _followed(self, first: bool) -> dict[str, float]:
        """Per followed group, CPU since ``start`` (a process born since counts whole)."""
        out: dict[str, float] = {}
        for name, lister in self._listers.items():
            total = system = 0.0
            for p in lister():
                now = self._times(p)
                if first:
                    self._pid0[p.pid] = now
                    continue
                t0, s0 = self._pid0.get(p.pid, (0.0, 0.0))
                total += now[0] - t0
                system += now[1] - s0
            out[name], out[f"{name} (kernel)"] = total, system
        return out

    def start(self) -> None:
        self._pid0 = {}
        self._followed(first=True)
        self._t0, self._c0 = time.monotonic(), self._cpu()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-6)
        now = self._cpu()
        out = {name: round(100.0 * (now[name] - self._c0[name]) / wall, 1) for name in now}
        out |= {k: round(100.0 * v / wall, 1) for k, v in self._followed(first=False).items()}
        # everything else on the machine (publishers, other people's work)
        named = sum(v for k, v in out.items() if k != "machine" and "(" not in k)
        out["other"] = round(out["machine"] - named, 1)
        return out
