"""What the node queue brings: live events for the streams, and notices.

Called inline by the connection's reader for every delivery (ssehub.fastpath.
inline), so the common cases come first and cost a few attribute reads:

- no headers: one event for the user named by the routing key;
- ``x-ssehub-pack``: many users' events (ssehub.pack), the first of a
  dispatcher batch stamped with its publish time (``x-ssehub-sent-at``);
- a ``Notice`` (ssehub.topology): one handler per kind, given as a table
  that must cover every kind, so adding a kind without a handler fails at
  start, not in production.

Receipts and control ops act on the registry and are handled here; the
others (``joined``, ``resync``, ``caps``) belong to the routing, the seam and
the stream caps, which the node hands in (edge/node.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import get_args

import orjson
from aiormq.abc import DeliveredMessage
from pamqp.common import FieldTable
from ssehub import pack, topology
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.registry import Registry
from ssehub.fastpath.receiver import UNDECODABLE
from ssehub.schema import ControlOp
from ssehub.sse import event_seq, well_formed
from ssehub.topology import Notice

log = logging.getLogger("ssehub.edge")
CONTROL_OPS = frozenset(get_args(ControlOp))

# (user, body, headers): the user is the routing key's, or the notice's own
# ``x-ssehub-user`` when it was sent to the node rather than by the user's key
Handler = Callable[[str, bytes, FieldTable], None]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Inbox:
    def __init__(
        self,
        registry: Registry,
        metrics: EdgeMetrics,
        handlers: Mapping[Notice, Handler],
    ) -> None:
        """``handlers``: for ``JOINED``, ``RESYNC`` and ``CAPS``."""
        self._registry = registry
        self._metrics = metrics
        table: dict[Notice, Handler] = {
            Notice.RECEIPT: self._receipt,
            Notice.CONTROL: self._control,
            **handlers,
        }
        missing = set(Notice) - set(table)
        if missing:
            raise TypeError(f"no handler for notices {sorted(missing)}")
        self._handlers = table

    def __call__(self, message: DeliveredMessage) -> None:
        body = message.body
        user = message.routing_key or ""
        properties = message.header.properties
        headers = properties.headers
        if not headers:  # the hot path: an event to write, nothing else
            if properties is UNDECODABLE or not well_formed(body):
                self._malformed(user)
                return
            self._registry.deliver(user, event_seq(body), body)
            return
        sent_at = headers.get(topology.SENT_AT_HEADER)
        if pack.PACK_HEADER in headers:  # many users' events (ssehub.pack)
            self._pack(body, sent_at)
            return
        if sent_at is not None:  # one delivery per dispatcher batch: its publish time
            if not well_formed(body):
                self._malformed(user)
                return
            if self._registry.has_user(user):  # a stream here writes it: sampled
                self._metrics.sampled(sent_at)
            self._registry.deliver(user, event_seq(body), body)
            return
        try:
            notice = topology.notice_of(headers)
        except topology.UnknownNotice as exc:
            log.warning("dropped a delivery with an unknown notice %s", exc)
            return
        if topology.USER_HEADER in headers:
            user = _text(headers[topology.USER_HEADER])
        if notice is None:
            if not well_formed(body):
                self._malformed(user)
                return
            self._registry.deliver(user, event_seq(body), body)
        else:
            self._handlers[notice](user, body, headers)

    def _malformed(self, user: str) -> None:
        """A delivery that is not one event's SSE bytes: never written. The
        user's streams see the gap at their next event and read the store."""
        log.warning("dropped a malformed delivery for %r", user)

    def _pack(self, body: bytes, sent_at: object) -> None:
        registry = self._registry
        try:
            for user, sse in pack.decode(body):
                if not well_formed(sse):
                    self._malformed(user)
                    continue
                if sent_at is not None and registry.has_user(user):
                    self._metrics.sampled(sent_at)
                    sent_at = None
                registry.deliver(user, event_seq(sse), sse)
        except pack.MalformedPack as exc:  # its users' streams see the gap at their next event
            log.warning("malformed delivery pack: %s", exc)

    def _receipt(self, user: str, body: bytes, headers: FieldTable) -> None:
        seq = event_seq(body)
        if seq is not None and well_formed(body):
            key = headers.get(topology.NOTICE_KEY)
            self._registry.deliver_receipted(user, seq, body, _text(key) if key else None)

    def _control(self, user: str, body: bytes, headers: FieldTable) -> None:
        try:
            op = orjson.loads(body)
        except orjson.JSONDecodeError:
            op = None
        if not isinstance(op, dict) or op.get("op") not in CONTROL_OPS:
            log.warning("malformed control notice for %r", user)
            return
        closed = self._registry.control(user, op)
        log.info("control %s for %r: %d streams closed", op.get("op"), user, closed)
