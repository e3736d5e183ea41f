"""ssehub.backoff: capped, doubling, jittered waits."""

from __future__ import annotations

import random

import pytest
from ssehub.backoff import Backoff, jittered


class Fixed(random.Random):
    """A random source that always answers ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_nominal_delay_doubles_up_to_the_cap() -> None:
    b = Backoff(0.1, 1.0, Fixed(0.5))  # factor 1.0: no jitter
    assert [round(b.next(), 6) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.nominal == 1.0


def test_reset_starts_over() -> None:
    b = Backoff(0.5, 8.0, Fixed(0.5))
    for _ in range(4):
        b.next()
    assert b.nominal == 8.0
    b.reset()
    assert b.nominal == 0.5
    assert b.next() == 0.5


@pytest.mark.parametrize(("r", "factor"), [(0.0, 0.5), (0.5, 1.0), (0.999, 1.499)])
def test_jitter_is_half_to_one_and_a_half(r: float, factor: float) -> None:
    assert jittered(2.0, Fixed(r)) == pytest.approx(2.0 * factor)
    assert Backoff(2.0, 10.0, Fixed(r)).next() == pytest.approx(2.0 * factor)


def test_jitter_stays_in_range_with_a_real_source() -> None:
    rng = random.Random(7)
    waits = [jittered(1.0, rng) for _ in range(1000)]
    assert all(0.5 <= w < 1.5 for w in waits)
    assert len({round(w, 3) for w in waits}) > 100  # not in lockstep
    b = Backoff(1.0, 4.0, random.Random(3))
    for nominal in (1.0, 2.0, 4.0, 4.0):
        assert 0.5 * nominal <= b.next() < 1.5 * nominal
