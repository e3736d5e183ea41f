"""Real ssehub processes for fault tests: dispatchers and edges, each with its own log.

The services they use, and that fault tests restart, are in tests/faults/services.py."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from ssehub.config import QueueType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One ``ssehub`` process with its own log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        self._out = self.log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "ssehub.cli", *self.args],
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.started_at = time.monotonic()
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.popen is not None
        async with asyncio.timeout(timeout):
            while self.popen.poll() is None:
                await asyncio.sleep(0.05)  # wait-ok: polling a child's exit
        return int(self.popen.returncode)

    async def wait_log(self, needle: str, timeout: float = 20.0, count: int = 1) -> None:
        async with asyncio.timeout(timeout):
            while self.text().count(needle) < count:
                if self.popen is not None and self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.text()[-3000:]}")
                await asyncio.sleep(0.05)  # wait-ok: polling the child's log

    async def wait_ready(self, timeout: float = 20.0, want: int = 200) -> float:
        """Poll /readyz until it answers ``want``; returns seconds waited."""
        t0 = time.monotonic()
        async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == want:
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    if want != 200 and self.popen is not None and self.popen.poll() is not None:
                        return time.monotonic() - t0
                await asyncio.sleep(0.05)  # wait-ok: polling the readiness probe

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        if hasattr(self, "_out"):
            self._out.close()


def queue_type_under_test() -> QueueType:
    kind = os.environ.get("SSEHUB_TEST_QUEUE_TYPE", "classic")
    assert kind in ("classic", "quorum"), kind
    return kind  # type: ignore[return-value]


def process_env(amqp_url: str, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of ssehub children: ours, minus any SSEHUB_* of the caller."""
    from tests.support import SECRET

    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    env |= {
        "SSEHUB_RABBITMQ_URL": amqp_url,
        "SSEHUB_DATABASE_URL": database_url,
        "SSEHUB_JWT_SECRET": SECRET,
        # SSEHUB_TEST_QUEUE_TYPE=quorum runs the fault suite on quorum queues
        "SSEHUB_QUEUE_TYPE": queue_type_under_test(),
    }
    return env | {f"SSEHUB_{k.upper()}": v for k, v in settings.items()}


@dataclass
class Cluster:
    """Edges and dispatchers of one test, sharing settings from ``env``."""

    env: dict[str, str]
    logdir: Path
    procs: list[Proc] = field(default_factory=list)

    def _proc(self, name: str, args: list[str], port: int | None = None, **env: str) -> Proc:
        proc = Proc(name, args, {**self.env, **env}, self.logdir / f"{name}.log", port)
        self.procs.append(proc)
        return proc.start()

    async def dispatcher(self, name: str, *, http: bool = False, **env: str) -> Proc:
        """``http``: with its port (/readyz says which partitions it works on)."""
        env.setdefault("SSEHUB_LOG_LEVEL", "INFO")  # its start is seen in the log
        port = free_port() if http else None
        args = ["dispatcher", *(["--port", str(port)] if port else [])]
        proc = self._proc(name, args, port, **env)
        await proc.wait_log("connected to RabbitMQ")
        return proc

    async def readyz(self, proc: Proc) -> dict[str, object]:
        async with httpx.AsyncClient(timeout=2) as http:
            answer: dict[str, object] = (await http.get(f"{proc.url}/readyz")).json()
            return answer

    async def edge(self, name: str, port: int | None = None, **env: str) -> Proc:
        port = port or free_port()
        proc = self._proc(name, ["edge", "--host", "127.0.0.1", "--port", str(port)], port, **env)
        await proc.wait_ready(timeout=60)
        return proc

    async def respawn(self, old: Proc) -> Proc:
        """The same role again (an edge on the same port), after ``old`` is gone."""
        old.stop()
        self.procs.remove(old)
        extra = {k: v for k, v in old.env.items() if self.env.get(k) != v}
        if old.args[0] == "edge":
            return await self.edge(old.name, old.port, **extra)
        return await self.dispatcher(old.name, **extra)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"==== {p.name}\n{p.text()[-4000:]}" for p in self.procs)
