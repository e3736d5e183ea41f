"""Capped exponential backoff with jitter, for every retry loop in ssehub.

Jitter (each wait is 50-150 % of the nominal delay) keeps many processes that
lost the same broker or database from coming back in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    __slots__ = ("_cap", "_delay", "_first", "_rng")

    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        self._first = first
        self._cap = cap
        self._delay = first
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next wait, jittered; the nominal delay then doubles, up to the cap."""
        wait = jittered(self._delay, self._rng)
        self._delay = min(self._delay * 2, self._cap)
        return wait

    @property
    def nominal(self) -> float:
        return self._delay

    def reset(self) -> None:
        self._delay = self._first


def jittered(value: float, rng: random.Random | None = None) -> float:
    """``value`` scaled by a random factor in [0.5, 1.5)."""
    return value * (0.5 + (rng or random).random())
