"""The load client: worker processes holding SSE streams, driven by the runner.

Each worker is a separate process (own core time, own 20,000-file limit) with
its own source address 127.0.0.(2+k), so ephemeral ports never run out. The
runner sends commands over a pipe ({"id", "op", ...}) and gets one reply per
command; several commands may be in flight (e.g. ``wait`` while publishing).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import resource
import time
from array import array
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import jwt

from bench.sse_protocol import SSEStream, request_bytes

Reply = dict[str, Any]


class Worker:
    """One process's streams and counters (the ``Counters`` of its streams)."""

    def __init__(self, pipe: Connection, source_ip: str, secret: str) -> None:
        self.pipe = pipe
        self.source_ip = source_ip
        self.secret = secret
        self.streams: list[SSEStream] = []
        self.track_n = False
        self.target_seq = 0
        self.expect = 0  # streams that will reach target_seq (0: those open now)
        self.reached = 0
        self.want_events = 0
        self.done = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        self.events = self.gaps = self.dups = self.pings = 0
        self.lat: array[int] = array("q")
        self.by_n: dict[int, list[int]] = {}
        self.first_ns = self.last_ns = 0

    # -- counters interface used by SSEStream ---------------------------------
    def on_event(self) -> None:
        now = time.time_ns()
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        if self.want_events and self.events >= self.want_events:
            self.done.set()

    def on_seq(self, stream: SSEStream, now_ns: int) -> None:
        if self.target_seq and not stream.done_ns and (stream.last or 0) >= self.target_seq:
            stream.done_ns = now_ns
            self.reached += 1
            if self.reached >= (self.expect or len(self.streams)):
                self.done.set()

    # -- commands --------------------------------------------------------------
    async def open(
        self,
        host: str,
        port: int,
        users: list[str],
        last_ids: list[int | None] | None,
        concurrency: int,
        timeout: float,
        path: str = "/sse/connect",
    ) -> Reply:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()
        times: array[int] = array("q")
        opened: list[SSEStream] = []
        exp = int(time.time()) + 3600

        async def one(user: str, last_id: int | None) -> None:
            token = jwt.encode({"sub": user, "exp": exp}, self.secret, algorithm="HS256")
            req = request_bytes(host, port, token, last_id, path)
            async with sem:
                for _attempt in range(3):
                    proto = SSEStream(self, user, req)
                    try:
                        async with asyncio.timeout(timeout):
                            await loop.create_connection(
                                lambda p=proto: p, host, port, local_addr=(self.source_ip, 0)
                            )
                            await proto.connected
                    except (OSError, TimeoutError, ConnectionError) as exc:
                        errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                        proto.close()
                        continue
                    times.append(time.time_ns() - proto.started_ns)
                    opened.append(proto)
                    self.streams.append(proto)
                    return

        t0 = time.time_ns()
        ids = last_ids or [None] * len(users)
        await asyncio.gather(*(one(u, i) for u, i in zip(users, ids, strict=True)))
        return {
            "opened": len(opened),
            "failed": len(users) - len(opened),
            "errors": dict(errors),
            "start_ns": t0,
            "end_ns": time.time_ns(),
            "connect_ns": times.tobytes(),
            "cursors": {s.user: s.last for s in opened},
        }

    async def wait(
        self, events: int = 0, seq: int = 0, expect: int = 0, timeout: float = 60.0
    ) -> Reply:
        """Until this worker has ``events`` events since the last reset, or every
        stream (``expect`` of them, when they are still being opened) has reached
        sequence number ``seq``."""
        self.done.clear()
        self.want_events, self.target_seq, self.expect = events, seq, expect
        if seq:
            self.reached = sum(1 for s in self.streams if (s.last or 0) >= seq)
            for s in self.streams:
                if (s.last or 0) >= seq and not s.done_ns:
                    s.done_ns = time.time_ns()
        finished = (events and self.events >= events) or (
            seq and self.reached >= (expect or len(self.streams))
        )
        if not finished:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.done.wait()
        self.want_events = self.target_seq = self.expect = 0
        return self.stats(with_done=bool(seq))

    def stats(self, with_done: bool = False, with_lat: bool = True) -> Reply:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        reply: Reply = {
            "events": self.events,
            "gaps": self.gaps,
            "dups": self.dups,
            "pings": self.pings,
            "open": sum(1 for s in self.streams if not s.lost),
            "lost": sum(1 for s in self.streams if s.lost),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "lat": self.lat.tobytes() if with_lat else b"",
            "by_n": self.by_n if self.track_n else {},
        }
        if with_done:
            reply["reached"] = self.reached
            reply["done_ns"] = array("q", (s.done_ns for s in self.streams)).tobytes()
        return reply

    async def close_all(self) -> Reply:
        for s in self.streams:
            s.close()
        n = len(self.streams)
        self.streams = []
        await asyncio.sleep(0.05)
        return {"closed": n}

    async def handle(self, cmd: dict[str, Any]) -> Reply:
        op = cmd.pop("op")
        if op == "open":
            return await self.open(**cmd)
        if op == "wait":
            return await self.wait(**cmd)
        if op == "reset":
            self.reset()
            self.track_n = bool(cmd.get("track_n", False))
            return {}
        if op == "stats":
            return self.stats(with_lat=cmd.get("lat", True))
        if op == "close":
            return await self.close_all()
        raise ValueError(f"unknown op {op!r}")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def run(cmd: dict[str, Any]) -> None:
            rid = cmd.pop("id")
            try:
                reply = await self.handle(cmd)
            except Exception as exc:  # reported to the runner, which raises it
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            reply["id"] = rid
            self.pipe.send(reply)

        def readable() -> None:
            try:
                cmd = self.pipe.recv()
            except EOFError:
                stop.set()
                return
            if cmd.get("op") == "quit":
                stop.set()
                return
            task = loop.create_task(run(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_reader(self.pipe.fileno(), readable)
        await stop.wait()
        await self.close_all()


def _worker_main(pipe: Connection, source_ip: str, secret: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(Worker(pipe, source_ip, secret).serve())


class ClientPool:
    """The runner's handle on the worker processes."""

    def __init__(self, workers: int, secret: str, first_ip: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self.procs: list[Any] = []
        for k in range(workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(theirs, f"127.0.0.{first_ip + k}", secret), daemon=True
            )
            proc.start()
            self._pipes.append(ours)
            self.procs.append(proc)
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        loop = asyncio.get_running_loop()
        for pipe in self._pipes:
            loop.add_reader(pipe.fileno(), self._readable, pipe)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __len__(self) -> int:
        return len(self._pipes)

    def _readable(self, pipe: Connection) -> None:
        try:
            reply = pipe.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(RuntimeError("a load-client worker died"))
            return
        fut = self._waiting.pop(reply.pop("id"), None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    async def call(self, k: int, op: str, **args: Any) -> Reply:
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
    ) -> list[Reply]:
        """Open one stream per user, users spread round-robin over the workers."""
        n = len(self._pipes)
        per = [
            {"users": users[k::n], "last_ids": last_ids[k::n] if last_ids is not None else None}
            for k in range(n)
        ]
        return await self.all(
            "open", per, host=host, port=port, concurrency=concurrency, timeout=timeout, path=path
        )

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(pipe.fileno())
                pipe.send({"op": "quit"})
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
