"""Packed deliveries: many recipients' events in one ``sse.deliver`` message.

One message per recipient made the second broker hop cost more than the first
(and an AMQP message each to marshal, route and decode). A pack carries up to
``SSEHUB_PACK_DELIVERIES`` deliveries. It keeps the per-user bindings: its
routing key is its first recipient, the others are in the ``BCC`` header, so
RabbitMQ's sender-selected distribution puts ONE copy in each edge queue bound
for any of them, and strips ``BCC`` before delivery. An edge writes the records
of the users it holds and skips the rest: a pack costs an edge bytes for users
it does not hold, never an event.

Body: records of ``>H`` user id length, user id (UTF-8), ``>I`` SSE length,
the SSE bytes, in publish order (so each user's events stay in order).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import aiormq
from pamqp.common import FieldArray
from ssehub.errors import SsehubError
from ssehub.fastpath.marshal import Publish
from ssehub.topology import DELIVER, DELIVERY_PROPERTIES, SENT_AT_HEADER

PACK_HEADER = "x-ssehub-pack"  # its value: the number of records
# The BCC header rides in the content header frame, which must fit one frame
# (frame_max is 128 KiB by default): user ids are at most 255 bytes.
MAX_KEY_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20

_USER = struct.Struct(">H")
_SSE = struct.Struct(">I")


class MalformedPack(SsehubError):
    """A pack's body does not parse (it was not written by ssehub.pack)."""


def encode(records: Sequence[tuple[str, bytes]]) -> bytes:
    out: list[bytes] = []
    for user, sse in records:
        u = user.encode()
        out += (_USER.pack(len(u)), u, _SSE.pack(len(sse)), sse)
    return b"".join(out)


def decode(body: bytes) -> Iterator[tuple[str, bytes]]:
    """The records of a pack, in order. Raises MalformedPack (after the good ones)."""
    i, end = 0, len(body)
    try:
        while i < end:
            (n,) = _USER.unpack_from(body, i)
            user = body[i + 2 : i + 2 + n].decode()
            i += 2 + n
            (n,) = _SSE.unpack_from(body, i)
            i += 4
            if i + n > end:
                raise MalformedPack(f"a record runs past the body ({i + n} > {end})")
            yield user, body[i : i + n]
            i += n
    except (struct.error, UnicodeDecodeError) as exc:
        raise MalformedPack(str(exc)) from exc


class Records:
    """One open pack: its records, in order, and their encoded size."""

    __slots__ = ("records", "size")

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.size = 0

    def add(self, user: str, sse: bytes) -> bool:
        """Add a record; True once the pack is full (``MAX_BODY_BYTES``)."""
        self.records.append((user, sse))
        self.size += len(sse) + len(user) + 6
        return self.size >= MAX_BODY_BYTES

    def __len__(self) -> int:
        return len(self.records)


def stamp(out: list[Publish], sent_at_us: int, *, per_key: bool) -> None:
    """The batch's publish time on its first delivery (the edges' publish-to-
    write latency, sampled once per batch): the first one of all, or with
    ``per_key`` the first pack to each routing key (each edge). Notices are
    never stamped."""
    stamped: set[str] = set()
    for i, message in enumerate(out):
        props = message.properties
        headers = props.headers or {}
        if props is DELIVERY_PROPERTIES:
            headers = {}
        elif PACK_HEADER not in headers:
            if per_key:
                continue
            return
        if message.routing_key in stamped:
            continue
        stamped.add(message.routing_key)
        new = aiormq.spec.Basic.Properties(headers={**headers, SENT_AT_HEADER: sent_at_us})
        out[i] = message._replace(properties=new)
        if not per_key:
            return


def _publish(records: list[tuple[str, bytes]], users: list[str]) -> Publish:
    if len(records) == 1:  # a pack of one is the plain fast path
        user, sse = records[0]
        return Publish(DELIVER.name, user, sse, DELIVERY_PROPERTIES)
    bcc: FieldArray = list(users[1:])
    props = aiormq.spec.Basic.Properties(headers={PACK_HEADER: len(records), "BCC": bcc})
    return Publish(DELIVER.name, users[0], encode(records), props)


class Packer:
    """Plain deliveries → packs of at most ``size`` records, in order.

    ``add`` each plain delivery; ``alone`` a message that must travel by itself
    (a notice: it carries headers), after everything added before it; ``finish``
    at the end. ``size`` 1 is one message per delivery (the previous design,
    kept for comparison)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._open = Records()
        self._users: dict[str, None] = {}  # distinct, in first-seen order
        self._key_bytes = 0
        self.out: list[Publish] = []

    def add(self, user: str, sse: bytes) -> None:
        if user not in self._users:
            key = len(user.encode()) + 5  # a long string in a field array
            if self._key_bytes + key > MAX_KEY_BYTES:
                self.flush()
            self._users[user] = None
            self._key_bytes += key
        if self._open.add(user, sse) or len(self._open) >= self._size:
            self.flush()

    def alone(self, message: Publish) -> None:
        """``message`` by itself, behind what was added so far (a user's order)."""
        self.flush()
        self.out.append(message)

    def flush(self) -> None:
        if self._open.records:
            self.out.append(_publish(self._open.records, list(self._users)))
        self._open, self._users, self._key_bytes = Records(), {}, 0

    def finish(self, sent_at_us: int) -> list[Publish]:
        """Flush, and stamp the first delivery with the publish time."""
        self.flush()
        stamp(self.out, sent_at_us, per_key=False)
        return self.out
