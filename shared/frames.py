"""SSE wire format: pure functions from data to the exact bytes on the socket."""

from __future__ import annotations

import random

import orjson

PING = b": ping\n\n"


def event_frame(seq: int | None, event: str, data: bytes) -> bytes:
    """One event. ``data`` is compact JSON, which never holds a raw newline."""
    head = b"" if seq is None else b"id: %d\n" % seq
    return b"%sevent: %s\ndata: %s\n\n" % (head, event.encode(), data)


def frame_seq(frame: bytes) -> int | None:
    """The sequence number a frame carries in its ``id:`` line (None: ephemeral).
    Edges read it from the frame itself, so deliveries need no AMQP headers."""
    if not frame.startswith(b"id: "):
        return None
    end = frame.find(b"\n", 4)
    try:
        return int(frame[4:end])
    except ValueError:
        return None


def retry_frame(base_ms: int, rng: random.Random | None = None) -> bytes:
    """``retry:`` jittered to 50-150 % of the base so clients do not reconnect in lockstep."""
    r = rng or random
    return b"retry: %d\n\n" % int(base_ms * (0.5 + r.random()))


def connected_frame(cursor: int, user_id: str, connection_id: str, recovered: bool) -> bytes:
    data = orjson.dumps({"userId": user_id, "connectionId": connection_id, "recovered": recovered})
    return event_frame(cursor, "connected", data)


def parse_last_event_id(raw: str | None) -> int | None:
    """A usable cursor, or None: garbage is treated as absent, never as an error."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)
