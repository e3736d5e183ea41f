"""The load client: worker processes holding SSE streams, driven by the runner.

Each worker is a separate process (own core time, own 20,000-file limit) with
its own source address 127.0.0.(2+k), so ephemeral ports never run out. The
runner sends commands over a pipe ({"id", "op", ...}) and gets one reply per
command; several commands may be in flight (e.g. ``wait`` while publishing).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import threading
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
        self.reconnect = False
        self.reconnects = 0
        self.errors: Counter[str] = Counter()
        self._tasks: set[asyncio.Future[None]] = set()
        self._host, self._port, self._path, self._exp = "127.0.0.1", 0, "/sse/connect", 0
        self.reset()

    def reset(self) -> None:
        self.events = self.other = self.gaps = self.dups = self.pings = 0
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
    def on_lost(self, stream: SSEStream) -> None:
        """Like EventSource: come back after ``retry:`` with Last-Event-ID (when asked to)."""
        if not self.reconnect or stream.done_ns or stream.closing:
            return
        delay = (stream.retry_ms or 1000) / 1000
        asyncio.get_running_loop().call_later(delay, self._spawn_reopen, stream)

    def _spawn_reopen(self, old: SSEStream) -> None:
        task = asyncio.ensure_future(self._reopen(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reopen(self, old: SSEStream) -> None:
        if old not in self.streams:  # not (yet) one of ours: nothing to resume
            return
        proto = SSEStream(self, old.user, self._request(old.user, old.last))
        try:
            await self._connect(proto, 30.0)
        except (OSError, TimeoutError, ConnectionError) as exc:
            self.errors[f"reconnect: {type(exc).__name__}: {str(exc)[:50]}"] += 1
            old.retry_ms = proto.retry_ms or old.retry_ms
            self.on_lost(old)  # try again later, still as the stream we lost
            return
        self.reconnects += 1
        self.streams[self.streams.index(old)] = proto
        proto.started_ns = old.started_ns

    def _request(self, user: str, last_id: int | None) -> bytes:
        token = jwt.encode({"sub": user, "exp": self._exp}, self.secret, algorithm="HS256")
        return request_bytes(self._host, self._port, token, last_id, self._path)

    async def _connect(self, proto: SSEStream, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: proto, self._host, self._port, local_addr=(self.source_ip, 0)
                )
                await proto.connected
        except BaseException:
            proto.closing = True
            proto.close()
            raise

    async def open(
        self,
        host: str,
        port: int,
        users: list[str],
        last_ids: list[int | None] | None,
        concurrency: int,
        timeout: float,
        path: str = "/sse/connect",
        reconnect: bool = False,
    ) -> Reply:
        """Open a stream per user; with ``reconnect``, streams that the server
        closes (or answers with retry:) come back like EventSource would."""
        sem = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()
        self.errors = errors
        times: array[int] = array("q")
        opened: list[SSEStream] = []
        self._host, self._port, self._path = host, port, path
        self._exp = int(time.time()) + 3600
        self.reconnect = reconnect
        self.reconnects = 0

        async def one(user: str, last_id: int | None) -> None:
            req = self._request(user, last_id)
            async with sem:
                for _attempt in range(30 if reconnect else 3):
                    proto = SSEStream(self, user, req)
                    try:
                        await self._connect(proto, timeout)
                    except (OSError, TimeoutError, ConnectionError) as exc:
                        errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                        if reconnect:
                            await asyncio.sleep((proto.retry_ms or 1000) / 1000)
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
            "other": self.other,
            "gaps": self.gaps,
            "dups": self.dups,
            "pings": self.pings,
            "open": sum(1 for s in self.streams if not s.lost),
            "reconnects": self.reconnects,
            "reconnect_errors": dict(self.errors),
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
        self.reconnect = False
        for s in self.streams:
            s.closing = True
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

        def start(cmd: dict[str, Any]) -> None:
            if cmd.get("op") == "quit":
                stop.set()
                return
            task = loop.create_task(run(cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def reader() -> None:
            # A blocking thread, not loop.add_reader: that would make the pipe
            # non-blocking, and a large reply would then fail with EAGAIN.
            while True:
                try:
                    cmd = self.pipe.recv()
                except (EOFError, OSError):
                    cmd = {"op": "quit"}
                loop.call_soon_threadsafe(start, cmd)
                if cmd.get("op") == "quit":
                    return

        threading.Thread(target=reader, daemon=True).start()
        await stop.wait()
        await self.close_all()


def worker_main(pipe: Connection, source_ip: str, secret: str) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(Worker(pipe, source_ip, secret).serve())
