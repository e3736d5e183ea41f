"""What a partition's batch publishes, as data: its deliveries routed by the
deployment's design (``SSEHUB_DELIVERY``), the answers to the edges' joins,
and its dead letters, in the order the delivery guarantees need.

One ``Outbound`` per delivery design, chosen once (``outbound_for``); nothing
else in the dispatcher asks which design runs:

- ``ByNode`` (``nodes``): one message per edge holding a recipient, routed by
  the partition's table of who is where (dispatcher/routes.py);
- ``ByUser`` (``bindings``): packs on ``sse.deliver``, routed by the edges'
  per-user bindings (ssehub.pack);
- ``Both`` (``both``): the two at once, for a fleet moving from bindings to
  nodes (k8s/README.md).

Pure but for the routing table, which applying a batch's route rounds updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import aiormq
import orjson
from pamqp.common import FieldTable
from ssehub import topology
from ssehub.config import Settings
from ssehub.dispatcher.intake import DeadLetter
from ssehub.dispatcher.routes import NodePacks, RouteOp, Routes, joined_body
from ssehub.dispatcher.sequence import Delivery
from ssehub.fastpath.marshal import Publish
from ssehub.pack import Packer
from ssehub.topology import Notice, notice_properties


class ByNode:
    """Per-node delivery; the table is the partition's, in memory."""

    def __init__(self, partition: int) -> None:
        self.table: Routes | None = Routes()
        # a resync names the partition whose table is new: its users rejoin
        self._resync_body = orjson.dumps({"partitions": [partition]})

    def messages(
        self,
        deliveries: list[Delivery],
        routes: Sequence[RouteOp],
        heard: Sequence[str],
        *,
        fresh: bool,
    ) -> list[Publish]:
        """``fresh``: this dispatcher just became active for the partition, so
        the table may be stale: clear it and ask the edges to join again first.
        Then the batch's rounds, in order; the deliveries routed by the table;
        the rounds' answers last (the seam rests on it: dispatcher/routes.py)."""
        table = self.table
        assert table is not None
        packs = NodePacks(table)
        if fresh:
            table.clear()
            packs.send(topology.ALL_NODES, self._resync_body, notice_properties(Notice.RESYNC))
        now = time.monotonic()
        for node in heard:
            table.heard(node, now)
        answers = [(op.node, op.ref, table.apply(op, now)) for op in routes]
        packs.add(deliveries)
        for node, ref, shared in answers:
            packs.send(node, joined_body(ref, shared), notice_properties(Notice.JOINED))
        return packs.finish(time.time_ns() // 1000)

    def expire(self, now: float, ttl: float) -> list[Publish]:
        """Drop edges silent for ``ttl`` and tell each to join again: if it is
        only slow, it re-reads its streams."""
        assert self.table is not None
        dead = self.table.expire(now, ttl)
        resync = notice_properties(Notice.RESYNC)
        return [Publish(topology.NODES.name, node, self._resync_body, resync) for node in dead]


class ByUser:
    """Per-user bindings: no table; edges bind what they hold."""

    table: Routes | None = None

    def __init__(self, pack_size: int) -> None:
        self._pack_size = pack_size

    def messages(
        self,
        deliveries: list[Delivery],
        routes: Sequence[RouteOp],
        heard: Sequence[str],
        *,
        fresh: bool,
    ) -> list[Publish]:
        """Packs on sse.deliver, with BCC (ssehub.pack); caps notices go by the
        edges themselves with bindings."""
        packer = Packer(self._pack_size)
        for d in deliveries:
            if d.notice is None:
                packer.add(d.user_id, d.body)
            elif d.notice is not Notice.CAPS:
                props = notice_properties(d.notice, d.key)
                packer.alone(Publish(topology.DELIVER.name, d.user_id, d.body, props))
        return packer.finish(time.time_ns() // 1000)

    def expire(self, now: float, ttl: float) -> list[Publish]:
        return []


class Both:
    """Both designs at once (a fleet in transition)."""

    def __init__(self, partition: int, pack_size: int) -> None:
        self._nodes = ByNode(partition)
        self._users = ByUser(pack_size)
        self.table = self._nodes.table

    def messages(
        self,
        deliveries: list[Delivery],
        routes: Sequence[RouteOp],
        heard: Sequence[str],
        *,
        fresh: bool,
    ) -> list[Publish]:
        return self._nodes.messages(deliveries, routes, heard, fresh=fresh) + self._users.messages(
            deliveries, routes, heard, fresh=fresh
        )

    def expire(self, now: float, ttl: float) -> list[Publish]:
        return self._nodes.expire(now, ttl)


Outbound = ByNode | ByUser | Both


def outbound_for(settings: Settings, partition: int) -> Outbound:
    """The one place the dispatcher decides its delivery design."""
    designs: dict[str, Callable[[], Outbound]] = {
        "nodes": lambda: ByNode(partition),
        "bindings": lambda: ByUser(settings.pack_deliveries),
        "both": lambda: Both(partition, settings.pack_deliveries),
    }
    return designs[settings.delivery]()


MAX_REASON = 1000  # characters of a dead letter's reason header


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot carry written as escapes: a routing
    key's stray bytes (decoded with surrogateescape) as ``\\xNN``, any other
    lone surrogate as ``\\uNNNN``."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def dead_letter(letter: DeadLetter) -> Publish:
    """To ``sse.dead``: the body as it came (or the one bad item), why, and the
    original routing key and properties."""
    message = letter.message
    original = message.header.properties
    ours: FieldTable = {
        topology.ERROR_HEADER: printable(letter.reason)[:MAX_REASON],
        "x-ssehub-routing-key": printable(message.routing_key or ""),
    }
    props = aiormq.spec.Basic.Properties(
        headers={**(original.headers or {}), **ours},
        content_type=original.content_type,
        message_id=original.message_id,
        delivery_mode=2,
    )
    try:  # the original headers are a publisher's: they must not fail the batch's publish
        props.marshal()
    except Exception:
        props = aiormq.spec.Basic.Properties(headers=ours, delivery_mode=2)
    return topology.internal(topology.DEAD.name, letter.body, props)  # via ssehub.internal
