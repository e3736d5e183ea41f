"""dispatcher/scope.py: what one partition's batch keeps and hands on."""

from __future__ import annotations

from ssehub.dispatcher.expand import Fanout, Plan
from ssehub.dispatcher.scope import Scope
from ssehub.partition import partition_of
from ssehub.schema import EventMessage

from tests.unit.dispatcher.messages import event


def test_with_one_partition_everything_is_as_before() -> None:
    scope = Scope(0, 1)
    assert scope.key("k1") == "k1" and scope.node("n1") == "n1" and scope.owns("anyone")
    msg = event("conversation.c1", id="k1")
    plan = Plan(fanouts=[Fanout(msg, ("a", "b", "c"))])
    kept, remote = scope.take_remote(plan)
    assert remote == {} and kept.fanouts == [Fanout(msg, ("a", "b", "c"))]


def test_a_conversation_event_keeps_its_own_members_and_hands_on_the_others() -> None:
    n = 4
    members = tuple(f"u{i}" for i in range(10))
    mine = partition_of("conv", n)
    scope = Scope(mine, n)
    msg = event("conversation.conv", "message:new", {"t": 1}, id="k1", receipt=True)
    own = next(u for u in (f"x{i}" for i in range(100)) if partition_of(u, n) == mine)
    other = event(f"user.{own}", id="k2")
    plan = Plan(fanouts=[Fanout(msg, members), Fanout(other, (own,))])
    kept, remote = scope.take_remote(plan)
    assert kept.fanouts[0] == Fanout(msg, tuple(u for u in members if scope.owns(u)))
    assert kept.fanouts[1] == Fanout(other, (own,))
    handed = {u for part in remote.values() for m in part for u in m.targets}  # type: ignore[union-attr]
    assert handed == {u for u in members if not scope.owns(u)}
    for p, part in remote.items():
        assert p != mine
        (m,) = part
        assert isinstance(m, EventMessage)
        assert (m.kind, m.key, m.receipt, m.event, m.data) == (
            "users",
            "k1",
            True,
            "message:new",
            msg.data,
        )
        assert all(partition_of(u, n) == p for u in m.targets)


def test_keys_and_edges_are_each_partitions_own() -> None:
    assert Scope(2, 4).key("k1") == "2 k1"
    assert Scope(2, 4).node("edge-a") == "edge-a@2"
    assert Scope(3, 4).key("k1") != Scope(2, 4).key("k1")
