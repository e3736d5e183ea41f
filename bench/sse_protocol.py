"""One SSE stream on a raw socket: HTTP/1.1 response head, chunked decoding, SSE events.

Written for 10,000+ streams per process: an ``asyncio.Protocol`` (no stream
objects, no per-stream task), one ``time.time_ns()`` per read, and the SSE
parser only looks at what the benchmarks need: the ``id:`` line (checked for
gaps and duplicates against the stream's cursor), the ``connected`` event, and
the publisher's clock ``"t":<µs>`` (plus the event number ``"n":``) in the data.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Protocol


class Counters(Protocol):
    """What the streams of one worker report into (see ``bench.client.Worker``)."""

    events: int
    other: int
    gaps: int
    dups: int
    pings: int
    track_n: bool
    lat: array[int]
    by_n: dict[int, list[int]]

    def on_seq(self, stream: SSEStream, now_ns: int) -> None: ...
    def on_lost(self, stream: SSEStream) -> None: ...
    def on_event(self) -> None: ...


class SSEStream(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_chunk_left",
        "_chunked",
        "_crlf",
        "_ended",
        "_head",
        "_length",
        "_sse",
        "closing",
        "connected",
        "counters",
        "done_ns",
        "last",
        "lost",
        "request",
        "retry_ms",
        "started_ns",
        "status",
        "transport",
        "user",
    )

    def __init__(self, counters: Counters, user: str, request: bytes) -> None:
        self.counters = counters
        self.user = user
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.last: int | None = None  # the stream's cursor: last id seen
        self.status = 0
        self.lost = False
        self.started_ns = time.time_ns()
        self.done_ns = 0  # when the stream reached the worker's target sequence number
        self.closing = False  # closed by us: do not come back
        self.retry_ms = 0  # the server's retry: advice
        self._head = b""
        self._body = False
        self._chunked = False
        self._chunk_left = 0  # bytes left in the current chunk; <0: its CRLF is due
        self._sse = b""
        self._crlf = False
        self._length = -1  # Content-Length left, when the response has one
        self._ended = False

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before connected ({exc})"))
        elif self.connected.exception() is None:  # it was a stream: it may come back
            self.counters.on_lost(self)

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            self._body = True
            self.status = int(head[9:12])
            lower = head.lower()
            self._chunked = b"transfer-encoding: chunked" in lower
            at = lower.find(b"content-length:")
            if at >= 0:  # a plain body (the edge's "retry later"): the stream ends with it
                self._length = int(lower[at + 15 : lower.find(b"\r\n", at) % (len(lower) + 1)])
            if self.status != 200 and not self.connected.done():
                self.connected.set_exception(ConnectionError(f"HTTP {self.status}"))
                self.close()
                return
            if not data:
                return
        if self._chunked:
            self._feed(self._dechunk(data))
        else:
            self._feed(data)
            if self._length >= 0:
                self._length -= len(data)
                self._ended = self._length <= 0
        if self._ended:  # the response is over; the connection may stay open (keep-alive)
            self.close()

    # -- parsing -------------------------------------------------------------
    def _dechunk(self, data: bytes) -> bytes:
        if self._head:  # a chunk-size line that was split across reads
            data, self._head = self._head + data, b""
        out: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size:
            left = self._chunk_left
            if left > 0:
                take = min(left, size - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._chunk_left = left - take or -2
            elif left < 0:  # the CRLF after a chunk's body (may arrive split)
                skip = min(-left, size - pos)
                pos += skip
                self._chunk_left = left + skip
            else:
                nl = data.find(b"\r\n", pos)
                if nl < 0:
                    self._head = data[pos:]
                    break
                n = int(data[pos:nl].split(b";", 1)[0], 16)
                pos = nl + 2
                if n == 0:
                    self._ended = True  # last chunk: the server ended the stream
                    break
                self._chunk_left = n
        return b"".join(out)

    def _feed(self, payload: bytes) -> None:
        buf = self._sse + payload if self._sse else payload
        if self._crlf or b"\r" in payload:
            self._crlf = True
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._sse = buf
            return
        self._sse = buf[end + 2 :]
        now = time.time_ns()
        for block in buf[:end].split(b"\n\n"):
            self._event(block.lstrip(b"\n"), now)

    def _event(self, block: bytes, now: int) -> None:
        c = self.counters
        if not block:
            return
        if block[0] == 58:  # ":" a comment: ping
            c.pings += 1
            return
        if block.startswith(b"retry:"):
            nl = block.find(b"\n")
            self.retry_ms = int(block[6 : nl if nl > 0 else None])
            if nl < 0:
                return
            block = block[nl + 1 :]
        seq: int | None = None
        if block.startswith(b"id:"):
            nl = block.find(b"\n")
            seq = int(block[3:nl] if nl > 0 else block[3:])
        if b"event: connected\n" in block or b"event:connected\n" in block:
            self.last = seq
            if not self.connected.done():
                self.connected.set_result(seq or 0)
            return
        if seq is not None:
            last = self.last
            if last is None or seq == last + 1:
                self.last = seq
            elif seq > last:
                c.gaps += seq - last - 1
                self.last = seq
            else:
                c.dups += 1
                return
        i = block.find(b'"t":')
        if i < 0:  # not a benchmark event (e.g. presence's user:online)
            c.other += 1
            if seq is not None:
                c.on_seq(self, now)
            return
        c.events += 1
        j = block.find(b",", i)
        lat = now - 1000 * int(block[i + 4 : j])  # the publisher's clock, in µs
        c.lat.append(lat)
        if c.track_n:
            k = block.find(b'"n":', j)
            m = block.find(b",", k)
            slot = c.by_n.setdefault(int(block[k + 4 : m]), [0, 0])
            slot[0] += 1
            if lat > slot[1]:
                slot[1] = lat
        if seq is not None:
            c.on_seq(self, now)
        c.on_event()


def request_bytes(
    host: str, port: int, token: str, last_event_id: int | None = None, path: str = "/sse/connect"
) -> bytes:
    lines = [
        f"GET {path}?token={token} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: text/event-stream",
        "Cache-Control: no-cache",
    ]
    if last_event_id is not None:
        lines.append(f"Last-Event-ID: {last_event_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
