"""Pure batch planning: dedupe, membership ops in order, conversation fan-out.

Input is a batch of validated messages in consumption order plus the state the
store holds for it; output says who receives what. No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from ssehub.schema import ControlMessage, EventMessage, MembershipMessage, Message


@dataclass(frozen=True, slots=True)
class Fanout:
    """One accepted event and the users who get it, in a stable order."""

    message: EventMessage
    recipients: tuple[str, ...]


@dataclass(slots=True)
class Plan:
    # events and control ops in batch order: publishing keeps that order per user
    fanouts: list[Fanout | ControlMessage] = field(default_factory=list)
    # conversation -> its member set after the batch, for the ones the batch changed
    members_after: dict[str, frozenset[str]] = field(default_factory=dict)
    new_keys: list[str] = field(default_factory=list)
    # keys already accepted before this batch: their stored events are re-published,
    # so a redelivery after a crash between commit and publish still reaches edges
    repeated_keys: list[str] = field(default_factory=list)
    # the membership the batch was planned on (its diffs are written from it)
    members_before: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # messages the plan refuses, with why (dead-lettered; the batch goes on)
    refused: list[tuple[Message, str]] = field(default_factory=list)

    @property
    def recipients(self) -> set[str]:
        return {
            user
            for f in self.fanouts
            if isinstance(f, Fanout) and not f.message.ephemeral
            for user in f.recipients
        }

    @property
    def revocations(self) -> dict[str, float]:
        """user -> the latest ``before`` of the batch's revokes."""
        out: dict[str, float] = {}
        for f in self.fanouts:
            if isinstance(f, ControlMessage) and f.before is not None:
                out[f.user] = max(out.get(f.user, 0.0), f.before)
        return out


def apply_op(current: frozenset[str], op: MembershipMessage) -> frozenset[str]:
    if op.op == "set":
        return frozenset(op.users)
    if op.op == "add":
        return current | frozenset(op.users)
    return current - frozenset(op.users)


def recipients_of(message: EventMessage, members: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    if message.kind == "user":
        return (message.target,)
    if message.kind == "users":
        return message.targets
    return tuple(sorted(members.get(message.target, frozenset()) - message.exclude))


def conversations_of(messages: Iterable[Message]) -> set[str]:
    """The conversations whose membership the batch reads or writes."""
    out: set[str] = set()
    for m in messages:
        if isinstance(m, MembershipMessage):
            out.add(m.conversation)
        elif isinstance(m, EventMessage) and m.kind == "conversation":
            out.add(m.target)
    return out


def keys_of(messages: Iterable[Message]) -> set[str]:
    return {m.key for m in messages if m.key is not None and not isinstance(m, ControlMessage)}


def plan_batch(
    messages: Sequence[Message],
    members: Mapping[str, frozenset[str]],
    seen_keys: Set[str],
    max_members: int | None = None,
) -> Plan:
    """Walk the batch in order. A membership op changes who receives every
    conversation event after it; a key seen before (earlier in this batch or
    in the store) makes its message a no-op. Control ops are idempotent and
    not deduplicated: a redelivered one applies again (a crash between commit
    and publish must not swallow a revoke's notice to the edges). A change
    that would give a conversation more than ``max_members`` members is
    refused (``plan.refused``), the conversation left as it was."""
    plan = Plan()
    view = dict(members)
    batch_keys: set[str] = set()
    for msg in messages:
        if isinstance(msg, ControlMessage):
            plan.fanouts.append(msg)
            continue
        if msg.key is not None:
            if msg.key in seen_keys:
                if msg.key not in plan.repeated_keys:
                    plan.repeated_keys.append(msg.key)
                continue
            if msg.key in batch_keys:
                continue
        if isinstance(msg, MembershipMessage):
            after = apply_op(view.get(msg.conversation, frozenset()), msg)
            if max_members is not None and len(after) > max_members:
                plan.refused.append((msg, too_many_members(len(after), max_members)))
                continue  # refused: its key stays unused, a redelivery is refused again
            view[msg.conversation] = after
            plan.members_after[msg.conversation] = after
        else:
            plan.fanouts.append(Fanout(msg, recipients_of(msg, view)))
        if msg.key is not None:
            batch_keys.add(msg.key)
            plan.new_keys.append(msg.key)
    return plan


def too_many_members(count: int, limit: int) -> str:
    return (
        f"too_many_members: the change would give the conversation {count} members; "
        f"at most {limit} (SSEHUB_MAX_MEMBERS)"
    )
