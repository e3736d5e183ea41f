"""What a dispatcher batch publishes, as data: its deliveries routed by the
deployment's design (``SSEHUB_DELIVERY``), the answers to the edges' joins,
and its dead letters, in the order the delivery guarantees need.

Pure but for the routing table, which applying a batch's route rounds
updates (dispatcher/routes.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiormq
from ssehub import topology
from ssehub.config import Settings
from ssehub.dispatcher.intake import DeadLetter
from ssehub.dispatcher.routes import NodePacks, RouteOp, Routes, joined_body
from ssehub.dispatcher.sequence import Delivery
from ssehub.fastpath.marshal import Publish
from ssehub.pack import Packer
from ssehub.topology import Notice, notice_properties


def batch(
    settings: Settings,
    table: Routes | None,
    deliveries: list[Delivery],
    dead: list[DeadLetter],
    routes: Sequence[RouteOp] = (),
    heard: Sequence[str] = (),
    *,
    resync: bool = False,
) -> list[Publish]:
    """One batch's messages, to publish as one write (ssehub.fastpath).
    ``resync``: the dispatcher just became active on its link, so its table
    may be stale: clear it and ask every edge to join again first."""
    sends: list[Publish] = []
    if table is not None:
        sends = by_node(table, deliveries, routes, heard, resync=resync)
    if settings.delivery != "nodes":  # bindings, or both for a fleet in transition
        plain = [d for d in deliveries if d.notice is not Notice.CAPS]
        sends += by_user(settings.pack_deliveries, plain)
    sends += (dead_letter(letter) for letter in dead)
    return sends


def by_node(
    table: Routes,
    deliveries: list[Delivery],
    routes: Sequence[RouteOp],
    heard: Sequence[str],
    *,
    resync: bool = False,
) -> list[Publish]:
    """Per-node delivery: the batch's route rounds applied, in order, then its
    deliveries routed by the table, then the rounds' answers (after the
    deliveries: the seam rests on it; dispatcher/routes.py)."""
    packs = NodePacks(table)
    if resync:
        table.clear()
        packs.send(topology.ALL_NODES, b"", notice_properties(Notice.RESYNC))
    now = time.monotonic()
    for node in heard:
        table.heard(node, now)
    answers = [(op.node, op.ref, table.apply(op, now)) for op in routes]
    packs.add(deliveries)
    for node, ref, shared in answers:
        packs.send(node, joined_body(ref, shared), notice_properties(Notice.JOINED))
    return packs.finish(time.time_ns() // 1000)


def by_user(pack_size: int, deliveries: list[Delivery]) -> list[Publish]:
    """Per-user bindings: packs on sse.deliver, with BCC (ssehub.pack)."""
    packer = Packer(pack_size)
    for d in deliveries:
        if d.notice is None:
            packer.add(d.user_id, d.body)
        else:
            props = notice_properties(d.notice, d.key)
            packer.alone(Publish(topology.DELIVER.name, d.user_id, d.body, props))
    packer.flush()
    packer.stamp(time.time_ns() // 1000)
    return packer.out


def dead_letter(letter: DeadLetter) -> Publish:
    """To ``sse.dead``: the body as it came (or the one bad item), why, and the
    original routing key and properties."""
    message = letter.message
    original = message.header.properties
    headers = dict(original.headers or {})
    headers[topology.ERROR_HEADER] = letter.reason
    headers["x-ssehub-routing-key"] = message.routing_key or ""
    props = aiormq.spec.Basic.Properties(
        headers=headers,
        content_type=original.content_type,
        message_id=original.message_id,
        delivery_mode=2,
    )
    return Publish("", topology.DEAD.name, letter.body, props)
