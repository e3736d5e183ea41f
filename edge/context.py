"""What every stream of one edge process shares, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from ssehub.config import Settings
from ssehub.edge.metrics import EdgeMetrics
from ssehub.edge.node import EdgeNode
from ssehub.edge.registry import Registry
from ssehub.store import EventStore


@dataclass(slots=True)
class EdgeContext:
    settings: Settings
    store: EventStore
    registry: Registry
    node: EdgeNode
    metrics: EdgeMetrics
    draining: bool = False
