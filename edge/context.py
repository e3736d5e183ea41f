"""What every stream of one edge process shares, built once by the app's lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ssehub.config import Settings
from ssehub.edge.caps import StreamCaps
from ssehub.edge.expiry import TokenClock
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.node import EdgeNode
from ssehub.edge.pump import WriteRound
from ssehub.edge.registry import Registry
from ssehub.storage.store import EventStore


@dataclass(slots=True)
class EdgeContext:
    settings: Settings
    store: EventStore
    registry: Registry
    node: EdgeNode  # the background side: link, routes, seam, caps, receipts
    metrics: EdgeMetrics
    draining: bool = False
    tokens: TokenClock = field(init=False)  # token lifetimes (edge/expiry.py)
    writes: WriteRound = field(default_factory=WriteRound)  # live writes (edge/pump.py)

    def __post_init__(self) -> None:
        self.tokens = TokenClock(self.settings.token_warning, time.time())

    @property
    def caps(self) -> StreamCaps:
        """Streams per user across edges (edge/caps.py)."""
        return self.node.caps
