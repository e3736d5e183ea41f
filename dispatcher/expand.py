"""Pure batch planning: dedupe, membership ops in order, conversation fan-out.

Input is a batch of validated messages in consumption order plus the state the
store holds for it; output says who receives what. No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from ssehub.schema import EventMessage, MembershipMessage, Message


@dataclass(frozen=True, slots=True)
class Fanout:
    """One accepted event and the users who get it, in a stable order."""

    message: EventMessage
    recipients: tuple[str, ...]


@dataclass(slots=True)
class Plan:
    fanouts: list[Fanout] = field(default_factory=list)
    # conversation -> its member set after the batch, for the ones the batch changed
    members_after: dict[str, frozenset[str]] = field(default_factory=dict)
    new_keys: list[str] = field(default_factory=list)
    # keys already accepted before this batch: their stored events are re-published,
    # so a redelivery after a crash between commit and publish still reaches edges
    repeated_keys: list[str] = field(default_factory=list)

    @property
    def recipients(self) -> set[str]:
        return {user for f in self.fanouts if not f.message.ephemeral for user in f.recipients}


def apply_op(current: frozenset[str], op: MembershipMessage) -> frozenset[str]:
    if op.op == "set":
        return frozenset(op.users)
    if op.op == "add":
        return current | frozenset(op.users)
    return current - frozenset(op.users)


def recipients_of(message: EventMessage, members: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    if message.kind == "user":
        return (message.target,)
    return tuple(sorted(members.get(message.target, frozenset()) - message.exclude))


def conversations_of(messages: Iterable[Message]) -> set[str]:
    """The conversations whose membership the batch reads or writes."""
    out: set[str] = set()
    for m in messages:
        if isinstance(m, MembershipMessage):
            out.add(m.conversation)
        elif m.kind == "conversation":
            out.add(m.target)
    return out


def keys_of(messages: Iterable[Message]) -> set[str]:
    return {m.key for m in messages if m.key is not None}


def plan_batch(
    messages: Sequence[Message],
    members: Mapping[str, frozenset[str]],
    seen_keys: Set[str],
) -> Plan:
    """Walk the batch in order. A membership op changes who receives every
    conversation event after it; a key seen before (earlier in this batch or
    in the store) makes its message a no-op."""
    plan = Plan()
    view = dict(members)
    batch_keys: set[str] = set()
    for msg in messages:
        if msg.key is not None:
            if msg.key in seen_keys:
                if msg.key not in plan.repeated_keys:
                    plan.repeated_keys.append(msg.key)
                continue
            if msg.key in batch_keys:
                continue
            batch_keys.add(msg.key)
            plan.new_keys.append(msg.key)
        if isinstance(msg, MembershipMessage):
            after = apply_op(view.get(msg.conversation, frozenset()), msg)
            view[msg.conversation] = after
            plan.members_after[msg.conversation] = after
        else:
            plan.fanouts.append(Fanout(msg, recipients_of(msg, view)))
    return plan
