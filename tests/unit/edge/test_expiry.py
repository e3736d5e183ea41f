"""ssehub.edge.expiry: token lifetimes on open streams, on one wheel."""

from __future__ import annotations

import orjson
import pytest
from ssehub.edge.expiry import SLOT, TokenClock
from ssehub.edge.stream import FAREWELLS, CloseReason, Stream

T0 = 1_000_000.0  # a round unix time


def live_stream(name: str = "s") -> Stream:
    """A stream past its replay (live events go straight to the output)."""
    stream = Stream("u1", name, 1 << 20)
    stream._syncing = False
    return stream


def events(stream: Stream) -> list[tuple[str, object]]:
    data, _ = stream.take()
    out = []
    for block in data.decode().split("\n\n"):
        if block:
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            assert "id" not in lines  # ephemeral
            out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def test_warning_then_expired() -> None:
    clock = TokenClock(60, T0)
    stream = live_stream()
    clock.add(stream, T0 + 100, T0)
    clock.tick(T0 + 39.5)
    assert events(stream) == []
    clock.tick(T0 + 40.2)
    assert events(stream) == [("token:expiring", {"expiresAt": int(T0 + 100)})]
    clock.tick(T0 + 99.9)
    assert stream.closed is None
    clock.tick(T0 + 100.3)
    assert stream.closed is CloseReason.TOKEN_EXPIRED
    # ... and the response writes this last
    assert FAREWELLS[stream.closed] == b"event: token:expired\ndata: {}\n\n"
    assert len(clock) == 0


def test_less_than_the_warning_left_warns_at_once_after_the_replay() -> None:
    clock = TokenClock(60, T0)
    stream = Stream("u1", "s", 1 << 20)  # still replaying: live events are held
    clock.add(stream, T0 + 10, T0)
    assert events(stream) == []
    assert stream._held  # written after the replay, by Stream.sync
    assert len(clock) == 1


def test_far_deadlines_fire_on_time() -> None:
    clock = TokenClock(60, T0)
    stream = live_stream()
    exp = T0 + 5 * SLOT + 60 + 7  # the warning is five slots away
    clock.add(stream, exp, T0)
    now = T0
    while now < exp - 61:
        now += 1
        clock.tick(now)
    assert events(stream) == []
    clock.tick(exp - 60)
    assert [name for name, _ in events(stream)] == ["token:expiring"]
    clock.tick(exp)
    assert stream.closed is CloseReason.TOKEN_EXPIRED


def test_a_late_tick_expires_without_warning_twice() -> None:
    clock = TokenClock(60, T0)
    stream = live_stream()
    clock.add(stream, T0 + 100, T0)
    clock.tick(T0 + 500)  # the loop was stuck
    assert events(stream) == []
    assert stream.closed is CloseReason.TOKEN_EXPIRED


def test_discard_leaves_nothing_behind() -> None:
    clock = TokenClock(60, T0)
    streams = [live_stream(str(i)) for i in range(100)]
    for i, stream in enumerate(streams):
        clock.add(stream, T0 + 100 + i * 97, T0)  # near and far
    assert len(clock) == 100
    for stream in streams:
        clock.discard(stream)
        clock.discard(stream)  # twice is harmless
    assert len(clock) == 0
    assert not any([*clock._near.values(), *clock._far.values()])  # empty sets, until due
    clock.tick(T0 + 100_000)
    assert all(s.closed is None for s in streams)
    assert not clock._near and not clock._far


def test_closed_streams_are_skipped() -> None:
    clock = TokenClock(60, T0)
    stream = live_stream()
    clock.add(stream, T0 + 100, T0)
    stream.close(CloseReason.DISCONNECT)
    clock.tick(T0 + 200)
    assert events(stream) == []
    assert stream.closed is CloseReason.DISCONNECT


def test_token_without_warning_time() -> None:
    clock = TokenClock(0, T0)
    stream = live_stream()
    clock.add(stream, T0 + 5, T0)
    clock.tick(T0 + 5)
    assert events(stream) == []
    assert stream.closed is CloseReason.TOKEN_EXPIRED


@pytest.mark.parametrize("exp", [T0 - 5, T0])
def test_already_expired_closes_at_the_next_tick(exp: float) -> None:
    clock = TokenClock(60, T0)  # (a token accepted within the leeway)
    stream = live_stream()
    clock.add(stream, exp, T0)
    clock.tick(T0 + 1)
    assert stream.closed is CloseReason.TOKEN_EXPIRED


# -- to the millisecond: an exp with a fraction --------------------------------------
def test_a_fractional_exp_expires_at_exp_not_a_second_later() -> None:
    clock = TokenClock(60, T0)
    stream = live_stream()
    exp = T0 + 1.5
    clock.add(stream, exp, T0)  # less than the warning left: warned at once
    assert events(stream) == [("token:expiring", {"expiresAt": T0 + 1.5})]
    assert clock.next_due() == exp  # when the pinger must tick
    clock.tick(T0 + 1)
    clock.tick(exp - 0.002)
    assert stream.closed is None
    clock.tick(exp)
    assert stream.closed is CloseReason.TOKEN_EXPIRED
    assert clock.next_due() is None and len(clock) == 0


def test_a_fractional_warning_comes_on_time_too() -> None:
    clock = TokenClock(60, T0)
    stream = live_stream()
    exp = T0 + 100.25
    clock.add(stream, exp, T0)
    assert clock.next_due() == exp - 60
    clock.tick(exp - 60 - 0.002)
    assert events(stream) == []
    clock.tick(exp - 60)
    assert [name for name, _ in events(stream)] == ["token:expiring"]
    assert clock.next_due() == exp
    clock.tick(exp)
    assert stream.closed is CloseReason.TOKEN_EXPIRED


def test_a_far_fractional_deadline_is_met_after_its_slot_comes_near() -> None:
    clock = TokenClock(0, T0)
    stream = live_stream()
    exp = T0 + 3 * SLOT + 0.75
    clock.add(stream, exp, T0)
    assert clock.next_due() is None  # far: no bucket yet, the pinger ticks each second
    now = T0
    while now + 1 < exp:
        now += 1
        clock.tick(now)
    assert stream.closed is None and clock.next_due() == exp
    clock.tick(exp)
    assert stream.closed is CloseReason.TOKEN_EXPIRED


def test_a_deadline_sooner_than_the_others_wakes_the_pinger() -> None:
    clock = TokenClock(0, T0)
    woken: list[float | None] = []
    clock.on_sooner = lambda: woken.append(clock.next_due())
    clock.add(live_stream("a"), T0 + 10, T0)
    clock.add(live_stream("b"), T0 + 20, T0)  # later than the earliest: no need
    clock.add(live_stream("c"), T0 + 5.5, T0)
    assert woken == [T0 + 10, T0 + 5.5]


def test_one_bucket_per_millisecond() -> None:
    clock = TokenClock(0, T0)
    streams = [live_stream(str(i)) for i in range(3)]
    for i, stream in enumerate(streams):
        clock.add(stream, T0 + 2 + i * 0.0004, T0)  # 0, 0.4 and 0.8 ms apart
    clock.tick(T0 + 2)
    assert [s.closed for s in streams] == [CloseReason.TOKEN_EXPIRED, None, None]
    clock.tick(T0 + 2.001)
    assert all(s.closed is CloseReason.TOKEN_EXPIRED for s in streams)
