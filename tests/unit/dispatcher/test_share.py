"""dispatcher/share.py: the fair share, and the pin of --partitions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ssehub.dispatcher.share import ceiling, parse_pin, to_release


def test_a_process_releases_what_is_beyond_its_share_highest_first() -> None:
    assert ceiling(4, 2) == 2 and ceiling(4, 3) == 2 and ceiling(5, 2) == 3
    assert to_release([0, 1, 2, 3], 4, 2) == [3, 2]
    assert to_release([0, 1, 2, 3], 4, 1) == []
    assert to_release([1, 3], 4, 3) == []  # at its share: keeps them
    assert to_release([0, 1, 2], 4, 3) == [2]


def test_a_pin_names_partitions_and_ranges() -> None:
    assert parse_pin("0-3,7", 8) == frozenset({0, 1, 2, 3, 7})
    assert parse_pin(" 5 ", 8) == frozenset({5})
    for spec, words in [
        ("8", "partitions are 0-7"),
        ("3-1", "runs backwards"),
        ("a", "not a partition number"),
        (",", "names no partition"),
        ("-1", "not a partition number"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_pin(spec, 8)


def settle(lines: dict[int, list[int]], processes: int, partitions: int) -> tuple[int, list[int]]:
    """RabbitMQ's single active consumer and the rule, simulated: each queue's
    consumers in line, the first active. Each round every process releases what
    is beyond its share (the next in line takes it; the process lines up last).
    Returns the rounds taken and what each process holds at the end."""
    for rounds in range(1, 10 * processes + 1):
        held = {k: [q for q, line in lines.items() if line[0] == k] for k in range(processes)}
        moves = {k: to_release(held[k], partitions, processes) for k in range(processes)}
        if not any(moves.values()):
            return rounds, [len(held[k]) for k in range(processes)]
        for k, queues in moves.items():
            for q in queues:
                lines[q].remove(k)
                lines[q].append(k)
    raise AssertionError("did not settle")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 32), st.integers(1, 6), st.randoms(use_true_random=False))
def test_the_share_settles_with_none_over_the_ceiling(
    partitions: int, processes: int, rng: object
) -> None:
    import random

    assert isinstance(rng, random.Random)
    order = list(range(processes))
    lines = {}
    for q in range(partitions):
        rng.shuffle(order)
        lines[q] = list(order)  # who lined up first on each queue varies
    rounds, held = settle(lines, processes, partitions)
    assert max(held) <= ceiling(partitions, processes)
    assert sum(held) == partitions
    assert rounds <= 2 * processes + 2  # each round: one look (SHARE_EVERY, 1 s)


def test_a_process_that_started_first_holds_all_until_the_others_come() -> None:
    lines = {q: [0, 1, 2] for q in range(4)}  # process 0 consumed first everywhere
    rounds, held = settle(lines, 3, 4)
    assert held == [2, 2, 0] and rounds == 2  # at most ceil(4 / 3) = 2 each, at once
