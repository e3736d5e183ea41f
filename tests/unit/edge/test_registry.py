"""ssehub.edge.registry: the open streams of a node, by user."""

from __future__ import annotations

from ssehub.edge.registry import Registry
from ssehub.edge.stream import Stream

from tests.unit.edge.streams import live, sse


def stream(user: str, n: int) -> Stream:
    return Stream(user, f"{user}-c{n}", max_buffer=1 << 20)


def test_first_and_last_stream_of_a_user() -> None:
    reg = Registry()
    a1, a2, b1 = stream("a", 1), stream("a", 2), stream("b", 1)
    assert reg.add(a1) is True
    assert reg.add(a2) is False
    assert reg.add(b1) is True
    assert (len(reg), sorted(reg.users())) == (3, ["a", "b"])
    assert reg.remove(a1) is False
    assert reg.has_user("a")
    assert reg.remove(a2) is True
    assert not reg.has_user("a")
    assert (len(reg), reg.users()) == (1, ["b"])


def test_removing_an_unknown_stream_changes_nothing() -> None:
    reg = Registry()
    a1 = stream("a", 1)
    reg.add(a1)
    assert reg.remove(stream("a", 2)) is False
    assert reg.remove(stream("z", 1)) is False
    assert reg.remove(a1) is True
    assert reg.remove(a1) is False  # twice
    assert (len(reg), reg.users(), list(reg.streams())) == (0, [], [])


def test_a_user_back_after_the_last_stream_is_first_again() -> None:
    reg = Registry()
    a1 = stream("a", 1)
    reg.add(a1)
    reg.remove(a1)
    assert reg.add(stream("a", 2)) is True


async def test_deliver_reaches_every_stream_of_the_user_and_no_other() -> None:
    reg = Registry()
    a1, a2, b1 = stream("a", 1), stream("a", 2), stream("b", 1)
    for s in (a1, a2, b1):
        await live(s)
        reg.add(s)
    reg.deliver("a", 1, sse(1))
    reg.deliver("a", None, sse(None, "typing"))
    reg.deliver("nobody", 1, sse(1))  # no stream: nothing happens
    assert a1.take() == (sse(1) + sse(None, "typing"), 2)
    assert a2.take() == (sse(1) + sse(None, "typing"), 2)
    assert b1.take() == (b"", 0)


def test_streams_lists_each_open_stream_once() -> None:
    reg = Registry()
    all_ = [stream("a", 1), stream("a", 2), stream("b", 1)]
    for s in all_:
        reg.add(s)
    listed = list(reg.streams())
    assert sorted(s.stream_id for s in listed) == ["a-c1", "a-c2", "b-c1"]
    for s in reg.streams():  # removing while iterating is safe (streams close so)
        reg.remove(s)
    assert len(reg) == 0
