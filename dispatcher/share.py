"""Which partitions a dispatcher process works on: its fair share, or a pin.

Every process consumes every partition queue (``x-single-active-consumer``:
RabbitMQ delivers each queue to one consumer, the first in line, and moves
it to the next when that one goes). So partitions move to the processes
alive on their own, but not evenly: the first process to start holds them
all. The fair share evens them out: with K processes alive, a process that
holds more than ceil(N / K) partitions releases the extra ones (after the
batch in hand is acked) and lines up again behind the others, so the next
consumer in line takes each over. A process at its share that receives one
more passes it on the same way, so each released partition ends, after at
most K moves, with a process below its share (one always exists while one
is above it). K is the number of consumers of the intake queue, which every
process consumes.

A pinned process (``ssehub dispatcher --partitions 0-3,7``) consumes only its
partitions and never releases them. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Collection


def ceiling(partitions: int, processes: int) -> int:
    """The most partitions a process may hold once settled: ceil(N / K)."""
    return -(-partitions // max(1, processes))


def to_release(held: Collection[int], partitions: int, processes: int) -> list[int]:
    """The partitions to release: beyond the share, highest numbers first (the
    choice is arbitrary; the same rule everywhere keeps moves few)."""
    extra = len(held) - ceiling(partitions, processes)
    return sorted(held, reverse=True)[:extra] if extra > 0 else []


def parse_pin(spec: str, partitions: int) -> frozenset[int]:
    """``0-3,7`` → {0, 1, 2, 3, 7}. Raises ValueError naming what is wrong."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ValueError(f"{part!r} is not a partition number or a range a-b") from None
        if first > last:
            raise ValueError(f"{part!r}: the range runs backwards")
        if first < 0 or last >= partitions:
            raise ValueError(f"{part!r}: partitions are 0-{partitions - 1} (SSEHUB_PARTITIONS)")
        out.update(range(first, last + 1))
    if not out:
        raise ValueError("names no partition")
    return frozenset(out)
