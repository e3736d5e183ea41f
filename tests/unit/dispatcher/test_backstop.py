"""The redelivery backstop: a message that keeps coming back is set aside."""

from __future__ import annotations

from collections.abc import Sequence

from ssehub.dispatcher.backstop import Backstop, fingerprint
from ssehub.errors import StoreUnavailable

from tests.unit.dispatcher.delivered import delivered

BODY = b'{"event": "x", "data": 1}'


class Counts:
    """The store's count, in memory: one more per redelivered sighting."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.calls = 0

    async def __call__(self, prints: Sequence[str]) -> dict[str, int]:
        self.calls += 1
        for p in set(prints):
            self.seen[p] = self.seen.get(p, 0) + 1
        return dict(self.seen)


async def test_first_deliveries_cost_nothing() -> None:
    counts = Counts()
    batch = [delivered("user.a", BODY, tag=i) for i in range(3)]
    kept, dead = await Backstop(counts, 3, quorum=False).screen(batch)
    assert kept == batch and dead == [] and counts.calls == 0


async def test_a_classic_queue_message_is_set_aside_on_its_limit() -> None:
    counts = Counts()
    backstop = Backstop(counts, 3, quorum=False)
    poison = delivered("user.a", BODY, message_id="p", redelivered=True)
    other = delivered("user.b", BODY, message_id="o", redelivered=False)
    for _ in range(2):  # second and third deliveries
        kept, dead = await backstop.screen([other, poison])
    assert kept == [other]
    [letter] = dead
    assert letter.message is poison
    assert letter.reason == (
        "redelivered: delivered 3 times without being handled (SSEHUB_MAX_DELIVERIES=3)"
    )


async def test_a_quorum_queue_counts_for_us() -> None:
    counts = Counts()
    backstop = Backstop(counts, 3, quorum=True)
    young = delivered("user.a", BODY, headers={"x-delivery-count": 1}, redelivered=True)
    old = delivered("user.a", BODY, headers={"x-delivery-count": 2}, redelivered=True)
    kept, dead = await backstop.screen([young, old])
    assert kept == [young] and [d.message for d in dead] == [old]
    assert counts.calls == 0


async def test_an_unreachable_store_lets_the_batch_go_on() -> None:
    async def down(_: Sequence[str]) -> dict[str, int]:
        raise StoreUnavailable("store: down")

    batch = [delivered("user.a", BODY, redelivered=True)]
    assert await Backstop(down, 2, quorum=False).screen(batch) == (batch, [])


def test_a_fingerprint_is_the_message_not_its_delivery() -> None:
    a = delivered("user.a", BODY, message_id="m", tag=1)
    again = delivered("user.a", BODY, message_id="m", tag=9, redelivered=True)
    other = delivered("user.a", BODY + b" ", message_id="m")
    stray = delivered(b"user.\xff".decode("utf-8", "surrogateescape"), BODY)
    assert fingerprint(a) == fingerprint(again) != fingerprint(other)
    assert len(fingerprint(stray)) == 32
