"""The runner's side of the load client: the worker processes and their pipes.

Each worker (``bench.client.Worker``) runs in a process of its own with its own
source address 127.0.0.(2+k); commands go down a pipe as ``{"id", "op", ...}``
and each gets one reply. A thread per worker reads the replies (blocking
reads: a reply with a large latency array never trips over a non-blocking pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from typing import Any

from bench.client import Reply, worker_main


class ClientPool:
    """The runner's handle on the worker processes."""

    def __init__(self, workers: int, secret: str, first_ip: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self.procs: list[Any] = []
        for k in range(workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(theirs, f"127.0.0.{first_ip + k}", secret), daemon=True
            )
            proc.start()
            self._pipes.append(ours)
            self.procs.append(proc)
        self._next = 0
        self._closing = False
        self.dead: str | None = None
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        loop = asyncio.get_running_loop()
        for k, pipe in enumerate(self._pipes):
            threading.Thread(target=self._reader, args=(loop, k, pipe), daemon=True).start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __len__(self) -> int:
        return len(self._pipes)

    def _reader(self, loop: asyncio.AbstractEventLoop, k: int, pipe: Connection) -> None:
        """A thread per worker: blocking reads of whole replies, handed to the loop."""
        while True:
            try:
                reply = pipe.recv()
            except (EOFError, OSError) as exc:
                if not self._closing:
                    self.procs[k].join(timeout=1)
                    why = f"{type(exc).__name__}, exit code {self.procs[k].exitcode}"
                    loop.call_soon_threadsafe(self._died, f"load-client worker {k} died ({why})")
                return
            loop.call_soon_threadsafe(self._reply, reply)

    def _died(self, why: str) -> None:
        self.dead = why
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError(why))

    def _reply(self, reply: Reply) -> None:
        fut = self._waiting.pop(reply.pop("id"), None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    async def call(self, k: int, op: str, **args: Any) -> Reply:
        if self.dead:
            raise RuntimeError(self.dead)
        self._next += 1
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        self._pipes[k].send({"id": self._next, "op": op, **args})
        reply = await fut
        if "error" in reply:
            raise RuntimeError(f"load-client worker {k}: {reply['error']}")
        return reply

    async def all(
        self, op: str, per_worker: list[dict[str, Any]] | None = None, **args: Any
    ) -> list[Reply]:
        """The same command to every worker (``per_worker`` adds arguments per worker)."""
        extra = per_worker or [{} for _ in self._pipes]
        return list(
            await asyncio.gather(
                *(self.call(k, op, **args, **extra[k]) for k in range(len(self._pipes)))
            )
        )

    async def open(
        self,
        host: str,
        port: int,
        users: list[str],
        *,
        concurrency: int = 200,
        timeout: float = 30.0,
        last_ids: list[int | None] | None = None,
        path: str = "/sse/connect",
        reconnect: bool = False,
    ) -> list[Reply]:
        """Open one stream per user, users spread round-robin over the workers."""
        n = len(self._pipes)
        per = [
            {"users": users[k::n], "last_ids": last_ids[k::n] if last_ids is not None else None}
            for k in range(n)
        ]
        return await self.all(
            "open",
            per,
            host=host,
            port=port,
            concurrency=concurrency,
            timeout=timeout,
            path=path,
            reconnect=reconnect,
        )

    def close(self) -> None:
        self._closing = True
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send({"op": "quit"})
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
