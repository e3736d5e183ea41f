"""A stream lives no longer than its token: one wheel for every stream of the node.

When the token has ``exp``, the stream gets the ephemeral ``token:expiring``
``{"expiresAt": exp}`` ``SSEHUB_TOKEN_WARNING`` seconds before it (at once,
after ``connected`` and the replay, when less is left), and at ``exp``
``token:expired``, and is closed (``CloseReason.TOKEN_EXPIRED``).

No task or timer per stream: streams are filed in buckets by their next
deadline, to the millisecond (``RESOLUTION``; an ``exp`` may have a fraction),
and the node's pinger (edge/lifecycle.py) calls ``tick`` when the earliest
bucket is due (``next_due``; ``on_sooner`` tells it when a bucket earlier than
the one it waits for appears) and at least once a second. Buckets due within
the next ``SLOT`` seconds or so are kept in a heap by deadline; later ones
wait in coarse slots of ``SLOT`` seconds and move into buckets when their slot
comes near, so a day of distinct deadlines costs at most a few thousand sets.
A closed stream leaves the wheel at once (``discard``): a reconnecting client
leaves nothing behind.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import orjson
from ssehub.edge.stream import CloseReason, Stream
from ssehub.sse import render_event

SLOT = 64  # seconds per coarse slot
RESOLUTION = 1000  # buckets per second: deadlines are met to the millisecond
PER_SLOT = SLOT * RESOLUTION


def render_expiring(exp: float) -> bytes:
    at = int(exp) if exp == int(exp) else exp
    return render_event(None, "token:expiring", orjson.dumps({"expiresAt": at}))


def _key(at: float) -> int:
    """The bucket of a deadline: the first millisecond at or after it."""
    return math.ceil(at * RESOLUTION)


class TokenClock:
    def __init__(self, warning: float, now: float) -> None:
        self._warning = warning
        self._last = math.floor(now * RESOLUTION)  # every bucket up to this key has fired
        self._near: dict[int, set[Stream]] = {}  # key -> streams due then
        self._keys: list[int] = []  # _near's keys, a heap (a fired one may linger)
        self._far: dict[int, set[Stream]] = {}  # slot -> streams due in it
        self._horizon = self._last // PER_SLOT + 1  # slots up to this one are in _near
        self._count = 0
        # called when a bucket due earlier than every other appears (the pinger
        # sleeps until next_due(): it must look again)
        self.on_sooner: Callable[[], None] | None = None

    def __len__(self) -> int:
        return self._count

    def next_due(self) -> float | None:
        """When the earliest bucket is due (unix seconds); None: no bucket near."""
        keys = self._keys
        while keys and keys[0] not in self._near:
            heapq.heappop(keys)
        return keys[0] / RESOLUTION if keys else None

    def add(self, stream: Stream, exp: float, now: float) -> None:
        """Watch ``stream``'s token (``exp``: unix seconds). A warning already
        due is offered at once: live events are held until the replay is done,
        so it follows ``connected`` and the replay."""
        stream.expires_at = exp
        warn_at = exp - self._warning
        if warn_at <= now < exp:
            stream.offer(None, render_expiring(exp))
            self._file(stream, exp)
        else:
            self._file(stream, warn_at)  # past exp (leeway): fires at the next tick

    def discard(self, stream: Stream) -> None:
        """``stream`` closed. An emptied bucket stays until its time or slot
        comes (at most a day's worth of sets, reused by later streams)."""
        bucket = stream.token_bucket
        if bucket is not None:
            bucket.discard(stream)
            self._count -= 1
        stream.token_bucket = stream.expires_at = None

    def tick(self, now: float) -> None:
        """Fire every bucket due by ``now``."""
        last = math.floor(now * RESOLUTION)
        if last <= self._last:
            return
        self._cascade(last)
        keys = self._keys
        while keys and keys[0] <= last:
            bucket = self._near.pop(heapq.heappop(keys), None)
            if bucket is None:
                continue
            self._count -= len(bucket)
            for stream in bucket:
                stream.token_bucket = None
                self._fire(stream, now)
        self._last = last

    def _fire(self, stream: Stream, now: float) -> None:
        exp = stream.expires_at
        if exp is None or stream.closed is not None:
            return
        # within a bucket of exp is at exp (a float's rounding may file it a hair early)
        if now >= exp - 1 / RESOLUTION:
            stream.expires_at = None
            stream.close(CloseReason.TOKEN_EXPIRED)  # the response writes token:expired
        else:
            stream.offer(None, render_expiring(exp))
            self._file(stream, exp)

    def _file(self, stream: Stream, at: float) -> None:
        key = max(_key(at), self._last + 1)  # never before its deadline
        if key // PER_SLOT <= self._horizon:
            bucket = self._bucket(key)
        else:
            bucket = self._far.setdefault(key // PER_SLOT, set())
        bucket.add(stream)
        stream.token_bucket = bucket
        self._count += 1

    def _bucket(self, key: int) -> set[Stream]:
        bucket = self._near.get(key)
        if bucket is None:
            bucket = self._near[key] = set()
            heapq.heappush(self._keys, key)
            if self.on_sooner is not None and self._keys[0] == key:
                self.on_sooner()
        return bucket

    def _cascade(self, last: int) -> None:
        """Move the coarse slots that are now near into buckets."""
        horizon = last // PER_SLOT + 1
        for slot in range(self._horizon + 1, horizon + 1):
            for stream in self._far.pop(slot, ()):
                exp = stream.expires_at
                assert exp is not None  # a filed stream has a token deadline
                # Filed at its warning, which lies in this slot, ahead; or, warned
                # already (the warning is behind us), at exp.
                key = _key(exp - self._warning)
                if key <= last:
                    key = _key(exp)
                bucket = self._bucket(max(key, self._last + 1))
                bucket.add(stream)
                stream.token_bucket = bucket
        self._horizon = max(self._horizon, horizon)
