"""How much replay work one user can make an edge do.

A resumed stream replays what its user missed from the store: up to
SSEHUB_RETENTION_MAX_EVENTS (10,000) events, each read, copied and written.
One user reconnecting in a loop with an old ``Last-Event-ID`` would make an
edge do that as fast as it can accept connections. So each user has a token
bucket of replayed events on each edge: it holds at most
``SSEHUB_REPLAY_BURST`` (default 20,000: two whole histories at once) and
refills at ``SSEHUB_REPLAY_RATE`` a second (default 1,000). A resume the
bucket cannot pay for is answered the contract's way for "cannot serve now"
(200, a ``retry:`` of about the time the bucket needs, and close): a 4xx
would stop the browser's EventSource for good.

What a normal browser never meets: a reload or a new tab opens a stream with
no ``Last-Event-ID`` (no replay at all; the helper shares one stream between
tabs); a flaky network resumes with what was missed in the seconds it was
gone; a laptop waking up resumes once with up to the whole history. Even ten
tabs without the helper, each resuming a 1,000-event gap at once, take half
the burst. A replay larger than the burst is served when the bucket is full,
and leaves it in debt.

Pure: the caller passes the clock (``time.monotonic()``).
"""

from __future__ import annotations

MIN_RETRY_MS = 1000  # the retry: of a refused resume, before jitter
MAX_RETRY_MS = 30_000
SWEEP_FROM = 1024  # users tracked before full buckets are forgotten


class ReplayBudget:
    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate  # events a second, per user
        self._burst = burst  # events a bucket holds at most
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (events, at)
        self._sweep_at = SWEEP_FROM

    def __len__(self) -> int:
        return len(self._buckets)

    def level(self, user_id: str, now: float) -> float:
        """The events ``user_id`` may have replayed now (negative: in debt)."""
        held = self._buckets.get(user_id)
        if held is None:
            return float(self._burst)
        events, at = held
        return min(float(self._burst), events + (now - at) * self._rate)

    def wait(self, user_id: str, events: int, now: float) -> float:
        """Seconds until a replay of ``events`` could be paid for; 0: now."""
        short = min(events, self._burst) - self.level(user_id, now)
        return max(0.0, short / self._rate)

    def take(self, user_id: str, events: int, now: float) -> float:
        """Pay for a replay of ``events``: 0.0 when it may go ahead (charged),
        else the seconds to wait (nothing charged)."""
        if events <= 0:
            return 0.0
        wait = self.wait(user_id, events, now)
        if wait > 0:
            return wait
        self._buckets[user_id] = (self.level(user_id, now) - events, now)
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Forget the users whose bucket is full again: it is as if they were new."""
        full = [u for u in self._buckets if self.level(u, now) >= self._burst]
        for user in full:
            del self._buckets[user]
        self._sweep_at = max(SWEEP_FROM, 2 * len(self._buckets))


def retry_ms(wait: float) -> int:
    """The ``retry:`` base for a refused resume: about the wait, within bounds."""
    return int(min(MAX_RETRY_MS, max(MIN_RETRY_MS, wait * 1000)))
