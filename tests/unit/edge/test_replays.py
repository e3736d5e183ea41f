"""ssehub.edge.replays: each user's budget of replayed events on an edge."""

from __future__ import annotations

from ssehub.edge.replays import MAX_RETRY_MS, MIN_RETRY_MS, SWEEP_FROM, ReplayBudget, retry_ms


def test_a_full_bucket_pays_for_whole_histories_then_refills_at_the_rate() -> None:
    budget = ReplayBudget(rate=1000, burst=20_000)
    assert budget.take("u", 10_000, now=0.0) == 0.0
    assert budget.take("u", 10_000, now=0.0) == 0.0
    # a third 10,000-event replay at once: 10 s of refill short
    assert budget.take("u", 10_000, now=0.0) == 10.0
    assert budget.take("u", 10_000, now=4.0) == 6.0  # refused: nothing charged
    assert budget.take("u", 10_000, now=10.0) == 0.0
    assert budget.level("u", 10.0) == 0.0


def test_small_resumes_are_never_refused_at_a_human_pace() -> None:
    """A flaky network, a few tabs: resumes of a few hundred events each
    second, for ten minutes, never meet the default limit."""
    budget = ReplayBudget(rate=1000, burst=20_000)
    for second in range(600):
        for _tab in range(3):
            assert budget.take("u", 300, now=float(second)) == 0.0


def test_a_replay_larger_than_the_burst_goes_when_the_bucket_is_full_and_leaves_a_debt() -> None:
    budget = ReplayBudget(rate=100, burst=1000)
    assert budget.take("u", 5000, now=0.0) == 0.0
    assert budget.level("u", 0.0) == -4000
    assert budget.wait("u", 1, now=0.0) == 40.01
    assert budget.take("u", 5000, now=49.0) == 1.0  # needs a full bucket again


def test_users_have_buckets_of_their_own_and_no_replay_costs_nothing() -> None:
    budget = ReplayBudget(rate=10, burst=100)
    assert budget.take("a", 100, now=0.0) == 0.0
    assert budget.take("b", 100, now=0.0) == 0.0
    assert budget.take("a", 0, now=0.0) == 0.0
    assert budget.take("a", 1, now=0.0) == 0.1


def test_full_buckets_are_forgotten_so_memory_follows_the_active_users() -> None:
    budget = ReplayBudget(rate=10, burst=100)
    for i in range(SWEEP_FROM - 1):
        budget.take(f"u{i}", 50, now=0.0)
    assert len(budget) == SWEEP_FROM - 1
    budget.take("late", 50, now=100.0)  # the others refilled long ago
    assert len(budget) == 1


def test_the_retry_is_about_the_wait_within_bounds() -> None:
    assert retry_ms(0.2) == MIN_RETRY_MS
    assert retry_ms(6.5) == 6500
    assert retry_ms(3600) == MAX_RETRY_MS
