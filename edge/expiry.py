"""A stream lives no longer than its token: one wheel for every stream of the node.

When the token has ``exp``, the stream gets the ephemeral ``token:expiring``
``{"expiresAt": exp}`` ``SSEHUB_TOKEN_WARNING`` seconds before it (at once,
after ``connected`` and the replay, when less is left), and at ``exp``
``token:expired``, and is closed (``CloseReason.TOKEN_EXPIRED``).

No task or timer per stream: streams are filed in buckets of one second,
and the node's pinger (edge/lifecycle.py) calls ``tick`` about once a second,
which fires the buckets that came due (so each deadline is met within about
a second). Deadlines more than a wheel's turn away wait in coarse slots of
``SLOT`` seconds and move into the one-second buckets when their slot comes
near, so a day of distinct deadlines costs at most a few thousand sets. A
closed stream leaves the wheel at once (``discard``): a reconnecting client
leaves nothing behind.
"""

from __future__ import annotations

import math

import orjson
from ssehub.edge.stream import CloseReason, Stream
from ssehub.sse import render_event

SLOT = 64  # seconds per coarse slot


def render_expiring(exp: float) -> bytes:
    at = int(exp) if exp == int(exp) else exp
    return render_event(None, "token:expiring", orjson.dumps({"expiresAt": at}))


class TokenClock:
    def __init__(self, warning: float, now: float) -> None:
        self._warning = warning
        self._last = math.floor(now)  # every bucket up to this second has fired
        self._near: dict[int, set[Stream]] = {}  # second -> streams due then
        self._far: dict[int, set[Stream]] = {}  # slot -> streams due in it
        self._horizon = self._last // SLOT + 1  # slots up to this one are in _near
        self._count = 0

    def __len__(self) -> int:
        return self._count

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
        """``stream`` closed. An emptied bucket stays until its second or slot
        comes (at most a day's worth of sets, reused by later streams)."""
        bucket = stream.token_bucket
        if bucket is not None:
            bucket.discard(stream)
            self._count -= 1
        stream.token_bucket = stream.expires_at = None

    def tick(self, now: float) -> None:
        """Fire every bucket due by ``now``."""
        sec = math.floor(now)
        if sec <= self._last:
            return
        self._cascade(sec)
        for due in range(self._last + 1, sec + 1):
            bucket = self._near.pop(due, None)
            if bucket is None:
                continue
            self._count -= len(bucket)
            for stream in bucket:
                stream.token_bucket = None
                self._fire(stream, now)
        self._last = sec

    def _fire(self, stream: Stream, now: float) -> None:
        exp = stream.expires_at
        if exp is None or stream.closed is not None:
            return
        if now >= exp:
            stream.expires_at = None
            stream.close(CloseReason.TOKEN_EXPIRED)  # the response writes token:expired
        else:
            stream.offer(None, render_expiring(exp))
            self._file(stream, exp)

    def _file(self, stream: Stream, at: float) -> None:
        # ceil: a bucket fires at or after its deadline, never before it
        sec = max(math.ceil(at), self._last + 1)
        if sec // SLOT <= self._horizon:
            bucket = self._near.setdefault(sec, set())
        else:
            bucket = self._far.setdefault(sec // SLOT, set())
        bucket.add(stream)
        stream.token_bucket = bucket
        self._count += 1

    def _cascade(self, sec: int) -> None:
        """Move the coarse slots that are now near into one-second buckets."""
        horizon = sec // SLOT + 1
        for slot in range(self._horizon + 1, horizon + 1):
            for stream in self._far.pop(slot, ()):
                exp = stream.expires_at
                assert exp is not None  # a filed stream has a token deadline
                # Filed at its warning, which lies in this slot, ahead; or, warned
                # already (the warning is behind us), at exp.
                due = math.ceil(exp - self._warning)
                if due <= sec:
                    due = math.ceil(exp)
                bucket = self._near.setdefault(max(due, self._last + 1), set())
                bucket.add(stream)
                stream.token_bucket = bucket
        self._horizon = max(self._horizon, horizon)
