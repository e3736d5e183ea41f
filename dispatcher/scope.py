"""What one partition's batch may touch in the one shared store.

Partitions share the store (one PostgreSQL database) and write disjoint rows:
a partition numbers and stores the events of its own users, keeps the
membership of its own conversations, its own idempotency keys and its own
view of which edges are alive. With one partition every rule here is the
identity: the store's layout and contents are those of before partitions.

- ``key``: idempotency keys are scoped to their partition (``"<p> <key>"``):
  a ``users`` message split between partitions, or a conversation event
  whose members span them, is deduped by each partition on its own part.
- ``take_remote``: the recipients of a planned batch who belong to other
  partitions are taken out of it, to be handed on (dispatcher/forward.py).
- ``node``: a partition's record that an edge is alive (presence).

Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ssehub.dispatcher.expand import Fanout, Plan
from ssehub.dispatcher.forward import by_partition
from ssehub.partition import partition_of
from ssehub.schema import ControlMessage, EventMessage, Message


@dataclass(frozen=True, slots=True)
class Scope:
    partition: int
    partitions: int

    def owns(self, user: str) -> bool:
        return self.partitions == 1 or partition_of(user, self.partitions) == self.partition

    def key(self, key: str) -> str:
        """A key as stored in the dedupe table (ids hold no space: unambiguous)."""
        return key if self.partitions == 1 else f"{self.partition} {key}"

    def node(self, node_id: str) -> str:
        """An edge's liveness row, this partition's own."""
        return node_id if self.partitions == 1 else f"{node_id}@{self.partition}"

    def nodes_suffix(self) -> str:
        return "" if self.partitions == 1 else f"@{self.partition}"

    def take_remote(self, plan: Plan) -> tuple[Plan, dict[int, list[Message]]]:
        """``plan`` with only this partition's recipients, and the events for
        the others' by partition, in batch order: ``users`` messages with the
        event's key (each partition dedupes its part)."""
        if self.partitions == 1:
            return plan, {}
        remote: dict[int, list[Message]] = {}
        fanouts: list[Fanout | ControlMessage] = []
        for fanout in plan.fanouts:
            if not isinstance(fanout, Fanout) or all(map(self.owns, fanout.recipients)):
                fanouts.append(fanout)
                continue
            local = tuple(u for u in fanout.recipients if self.owns(u))
            fanouts.append(Fanout(fanout.message, local))
            away = [u for u in fanout.recipients if not self.owns(u)]
            for p, users in by_partition(away, self.partitions).items():
                remote.setdefault(p, []).append(as_users(fanout.message, users))
        plan.fanouts = fanouts
        return plan, remote

    def split(
        self, events: Sequence[EventMessage]
    ) -> tuple[list[EventMessage], dict[int, list[Message]]]:
        """``users`` events (presence announcements) into this partition's part
        and the others', by partition."""
        local: list[EventMessage] = []
        remote: dict[int, list[Message]] = {}
        for event in events:
            mine = [u for u in event.targets if self.owns(u)]
            if mine:
                local.append(replace(event, targets=tuple(mine)))
            if self.partitions > 1:
                away = [u for u in event.targets if not self.owns(u)]
                for p, users in by_partition(away, self.partitions).items():
                    remote.setdefault(p, []).append(replace(event, targets=tuple(users)))
        return local, remote


def as_users(message: EventMessage, users: Sequence[str]) -> EventMessage:
    """``message`` for ``users`` only (its members or listed users resolved)."""
    return replace(message, kind="users", target="", exclude=frozenset(), targets=tuple(users))
