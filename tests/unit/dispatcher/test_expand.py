"""ssehub.dispatcher.expand: who receives what, for one batch, in order."""

from __future__ import annotations

from ssehub.dispatcher.expand import Fanout, conversations_of, keys_of, plan_batch
from ssehub.schema import Message

from tests.unit.dispatcher.messages import event, members


def who(fanouts: list[Fanout]) -> list[tuple[str, tuple[str, ...]]]:
    return [(f.message.event, f.recipients) for f in fanouts]


def test_membership_ops_change_who_gets_later_events() -> None:
    batch: list[Message] = [
        members("c", "set", ["a", "b"]),
        event("conversation.c", "e1"),
        members("c", "add", ["d"]),
        event("conversation.c", "e2"),
        members("c", "remove", ["a"]),
        event("conversation.c", "e3"),
        members("c", "set", ["z"]),
        event("conversation.c", "e4"),
    ]
    plan = plan_batch(batch, {"c": frozenset({"old"})}, set())
    assert who(plan.fanouts) == [
        ("e1", ("a", "b")),
        ("e2", ("a", "b", "d")),
        ("e3", ("b", "d")),
        ("e4", ("z",)),
    ]
    assert plan.members_after == {"c": frozenset({"z"})}
    assert plan.recipients == {"a", "b", "d", "z"}


def test_events_before_any_op_use_the_stored_members() -> None:
    batch: list[Message] = [
        event("conversation.c", "e1"),
        members("c", "add", ["b"]),
        event("conversation.c"),
    ]
    plan = plan_batch(batch, {"c": frozenset({"a"})}, set())
    assert who(plan.fanouts) == [("e1", ("a",)), ("e", ("a", "b"))]
    assert plan.members_after == {"c": frozenset({"a", "b"})}


def test_unknown_conversation_has_no_members() -> None:
    plan = plan_batch([event("conversation.nobody")], {}, set())
    assert who(plan.fanouts) == [("e", ())]
    assert plan.recipients == set()
    assert plan.members_after == {}


def test_ops_on_one_conversation_leave_the_other_alone() -> None:
    batch: list[Message] = [members("c", "add", ["x"]), event("conversation.k")]
    plan = plan_batch(batch, {"c": frozenset({"a"}), "k": frozenset({"b"})}, set())
    assert who(plan.fanouts) == [("e", ("b",))]
    assert plan.members_after == {"c": frozenset({"a", "x"})}


def test_exclude_leaves_users_out() -> None:
    batch: list[Message] = [event("conversation.c", exclude=["b", "not-a-member"])]
    plan = plan_batch(batch, {"c": frozenset({"a", "b", "c"})}, set())
    assert who(plan.fanouts) == [("e", ("a", "c"))]


def test_user_events_go_to_their_user() -> None:
    plan = plan_batch([event("user.u1"), event("user.u2")], {}, set())
    assert who(plan.fanouts) == [("e", ("u1",)), ("e", ("u2",))]
    assert plan.recipients == {"u1", "u2"}


def test_key_seen_in_the_store_is_repeated_not_renumbered() -> None:
    batch: list[Message] = [event("user.u1", "old", id="k1"), event("user.u1", "new", id="k2")]
    plan = plan_batch(batch, {}, {"k1"})
    assert who(plan.fanouts) == [("new", ("u1",))]
    assert plan.repeated_keys == ["k1"]
    assert plan.new_keys == ["k2"]


def test_seen_membership_op_is_not_applied_again() -> None:
    batch: list[Message] = [members("c", "add", ["x"], key="m1"), event("conversation.c")]
    plan = plan_batch(batch, {"c": frozenset({"a"})}, {"m1"})
    assert who(plan.fanouts) == [("e", ("a",))]
    assert plan.members_after == {}
    assert plan.repeated_keys == ["m1"]


def test_key_repeated_within_the_batch_counts_once() -> None:
    batch: list[Message] = [
        event("user.u1", "first", id="k"),
        event("user.u1", "second", id="k"),
        event("user.u2", "third", id="k"),
    ]
    plan = plan_batch(batch, {}, set())
    assert who(plan.fanouts) == [("first", ("u1",))]
    assert plan.new_keys == ["k"]
    assert plan.repeated_keys == []


def test_stored_key_repeated_within_the_batch_is_listed_once() -> None:
    batch: list[Message] = [event("user.u1", id="k"), event("user.u1", id="k")]
    plan = plan_batch(batch, {}, {"k"})
    assert plan.fanouts == []
    assert plan.repeated_keys == ["k"]


def test_messages_without_key_are_all_delivered() -> None:
    batch: list[Message] = [event("user.u1", "same"), event("user.u1", "same")]
    plan = plan_batch(batch, {}, set())
    assert who(plan.fanouts) == [("same", ("u1",)), ("same", ("u1",))]
    assert (plan.new_keys, plan.repeated_keys) == ([], [])


def test_ephemeral_recipients_are_not_counted() -> None:
    batch: list[Message] = [
        event("user.u1", ephemeral=True),
        event("conversation.c", "typing", ephemeral=True),
        event("user.u2"),
    ]
    plan = plan_batch(batch, {"c": frozenset({"a", "b"})}, set())
    assert who(plan.fanouts) == [("e", ("u1",)), ("typing", ("a", "b")), ("e", ("u2",))]
    assert plan.recipients == {"u2"}


def test_what_a_batch_reads() -> None:
    batch: list[Message] = [
        members("c1", "set", ["a"], key="m"),
        event("conversation.c2", id="k"),
        event("user.u1"),
    ]
    assert conversations_of(batch) == {"c1", "c2"}
    assert keys_of(batch) == {"m", "k"}
