"""The aiormq and uvicorn internals ssehub.fastpath relies on are still there.

ssehub.fastpath reaches past aiormq's and uvicorn's public APIs (see its module
docstrings). aiormq is pinned to ``ssehub.fastpath.PINNED`` and uvicorn to
``UVICORN_PINNED``; this module fails with a message naming what moved when an
upgrade (or a loosened pin) breaks one of them, instead of letting the edge or
the dispatcher fail in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
from importlib.metadata import version
from typing import Any, cast

import aiormq
import aiormq.abc
import aiormq.base
import aiormq.channel
import aiormq.connection
import pytest
from aiormq.abc import ChannelFrame, DeliveredMessage
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ssehub.fastpath import PINNED, UVICORN_PINNED

INSTALLED = version("aiormq")


def moved(what: str, detail: str) -> str:
    return (
        f"aiormq {INSTALLED}: {what} {detail}; ssehub.fastpath relies on it "
        f"(pinned to aiormq{PINNED}: fix ssehub.fastpath before moving the pin)"
    )


def source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_installed_aiormq_is_inside_the_pin() -> None:
    assert Version(INSTALLED) in SpecifierSet(PINNED), (
        f"aiormq {INSTALLED} is installed but ssehub.fastpath is pinned to aiormq{PINNED}: "
        "check its internals (this module) before widening PINNED and pyproject.toml"
    )


def test_the_pin_is_the_one_in_the_package_metadata() -> None:
    from importlib.metadata import requires

    pins = [r for r in requires("ssehub") or [] if re.match(r"aiormq\b", r)]
    assert pins, "ssehub's metadata does not require aiormq"
    assert SpecifierSet(pins[0].removeprefix("aiormq").split(";")[0]) == SpecifierSet(PINNED), (
        f"pyproject.toml requires {pins[0]!r} but ssehub.fastpath.PINNED is {PINNED!r}"
    )


# -- aiormq.connection.FrameReceiver (receiver) -----------------------------------


def test_frame_receiver() -> None:
    cls: Any = getattr(aiormq.connection, "FrameReceiver", None)
    assert inspect.isclass(cls), moved("aiormq.connection.FrameReceiver", "is gone")
    while cls.__module__.startswith("ssehub."):  # receiver.install() ran: aiormq's own
        cls = cls.__mro__[1]
    assert cls.__module__ == "aiormq.connection"
    assert inspect.iscoroutinefunction(getattr(cls, "get_frame", None)), moved(
        "FrameReceiver.get_frame", "is no longer a coroutine method"
    )
    loop = asyncio.new_event_loop()  # the suite's may not be current here
    reader = asyncio.StreamReader(loop=loop)
    loop.close()
    receiver: Any = cast(Any, cls)(reader)
    for name in ("reader", "started"):
        assert hasattr(receiver, name), moved(f"FrameReceiver.{name}", "is no longer set")
    assert receiver.reader is reader and receiver.started is False, moved(
        "FrameReceiver(reader)", "no longer keeps the reader and starts unstarted"
    )


def test_connections_build_their_receiver_from_the_module_global() -> None:
    # receiver.install() replaces aiormq.connection.FrameReceiver; that only
    # works while the connection looks the name up when it connects.
    text = source(aiormq.connection.Connection)
    assert re.search(r"=\s*FrameReceiver\(", text), moved(
        "Connection", "no longer builds FrameReceiver(...) by its module-global name"
    )


# -- aiormq.channel.Channel (confirms, outbox, inline) -------------------------


def test_channel_confirm_handler() -> None:
    cls = aiormq.channel.Channel
    handler = getattr(cls, "_on_confirm_frame", None)
    assert inspect.iscoroutinefunction(handler), moved(
        "Channel._on_confirm_frame", "is gone or no longer a coroutine method"
    )
    # BatchPublisher replaces it on the instance: aiormq must look it up on self.
    assert "self._on_confirm_frame(" in source(cls._reader), moved(
        "Channel._reader", "no longer calls self._on_confirm_frame(frame)"
    )


@pytest.mark.parametrize(
    "name",
    [
        "frames",
        "write_queue",
        "delivery_tag",
        "publisher_confirms",
        "max_content_size",
        "number",
    ],
)
def test_channel_instance_attributes(name: str) -> None:
    init = source(aiormq.channel.Channel.__init__)
    assert re.search(rf"self\.{name}\b[^=\n]*=", init), moved(
        f"Channel.{name}", "is no longer set in Channel.__init__"
    )


def test_channel_delivery_tag_counts_publishes() -> None:
    # BatchPublisher numbers its batches from delivery_tag and writes it back
    assert "self.delivery_tag += 1" in source(aiormq.channel.Channel.basic_publish), moved(
        "Channel.basic_publish", "no longer counts delivery tags in self.delivery_tag"
    )


def test_channel_frames_are_fed_by_the_connection_reader() -> None:
    # consume_inline replaces channel.frames; the reader must put into it
    assert re.search(r"\.frames\.put\(\(", source(aiormq.connection.Connection)), moved(
        "Connection", "no longer puts (weight, frame) into channel.frames"
    )


@pytest.mark.parametrize("name", ["is_closed", "closing"])
def test_channel_close_state(name: str) -> None:
    attr = inspect.getattr_static(aiormq.channel.Channel, name, None)
    assert isinstance(attr, property), moved(f"Channel.{name}", "is no longer a property")


class _Closable(aiormq.base.Base):  # Channel's base, without a connection
    def __str__(self) -> str:
        return "closable"

    async def _on_close(self, exc: Any = None) -> None:
        pass


async def test_closing_is_a_future_set_on_close() -> None:
    assert issubclass(aiormq.channel.Channel, aiormq.base.Base), moved(
        "Channel", "no longer derives from aiormq.base.Base"
    )
    base = _Closable(loop=asyncio.get_running_loop())
    closing = base.closing
    assert isinstance(closing, asyncio.Future) and not base.is_closed, moved(
        "Base.closing / is_closed", "are not a future and a bool any more"
    )
    await base.close()
    assert base.is_closed and closing.done(), moved(
        "Base.close()", "no longer sets closing and is_closed"
    )


# -- aiormq.abc ---------------------------------------------------------------


def test_channel_frame() -> None:
    frame = ChannelFrame(payload=b"x", should_close=False)
    assert (frame.payload, frame.should_close, frame.drain_future) == (b"x", False, None), moved(
        "aiormq.abc.ChannelFrame(payload=, should_close=)", "changed"
    )


def test_delivered_message() -> None:
    fields = [f.name for f in dataclasses.fields(DeliveredMessage)]
    assert fields[:4] == ["delivery", "header", "body", "channel"], moved(
        "aiormq.abc.DeliveredMessage(delivery, header, body, channel)", f"has fields {fields}"
    )


# -- uvicorn's httptools protocol (guard) ---------------------------------------

UVICORN = version("uvicorn")


def uvicorn_moved(what: str, detail: str) -> str:
    return (
        f"uvicorn {UVICORN}: {what} {detail}; ssehub.fastpath.guard relies on it "
        f"(pinned to uvicorn{UVICORN_PINNED}: fix ssehub.fastpath.guard before moving the pin)"
    )


def test_installed_uvicorn_is_inside_the_pin() -> None:
    assert Version(UVICORN) in SpecifierSet(UVICORN_PINNED), (
        f"uvicorn {UVICORN} is installed but ssehub.fastpath.guard is pinned to "
        f"uvicorn{UVICORN_PINNED}: check its internals (this module) before widening "
        "UVICORN_PINNED and pyproject.toml"
    )


def test_the_uvicorn_pin_is_the_one_in_the_package_metadata() -> None:
    from importlib.metadata import requires

    pins = [r for r in requires("ssehub") or [] if re.match(r"uvicorn\b", r)]
    assert pins, "ssehub's metadata does not require uvicorn"
    spec = re.sub(r"^uvicorn(\[[^]]*\])?", "", pins[0]).split(";")[0]
    assert SpecifierSet(spec) == SpecifierSet(UVICORN_PINNED), (
        f"pyproject.toml requires {pins[0]!r} but ssehub.fastpath.UVICORN_PINNED is "
        f"{UVICORN_PINNED!r}"
    )


def _httptools() -> Any:
    from uvicorn.protocols.http import httptools_impl

    return httptools_impl


@pytest.mark.parametrize(
    "name",
    [
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "on_response_complete",
        "_start_asgi_task",
    ],
)
def test_protocol_methods(name: str) -> None:
    method = getattr(_httptools().HttpToolsProtocol, name, None)
    assert callable(method), uvicorn_moved(f"HttpToolsProtocol.{name}", "is gone")


def test_start_asgi_task_takes_the_cycle_and_the_app() -> None:
    params = list(inspect.signature(_httptools().HttpToolsProtocol._start_asgi_task).parameters)
    assert params == ["self", "cycle", "app"], uvicorn_moved(
        "HttpToolsProtocol._start_asgi_task", f"takes {params}"
    )


@pytest.mark.parametrize("name", ["connections", "transport", "cycle", "pipeline", "scope"])
def test_protocol_instance_attributes(name: str) -> None:
    init = source(_httptools().HttpToolsProtocol.__init__)
    assert re.search(rf"self\.{name}\b[^=\n]*=", init), uvicorn_moved(
        f"HttpToolsProtocol.{name}", "is no longer set in HttpToolsProtocol.__init__"
    )


@pytest.mark.parametrize(
    "name",
    [
        "scope",
        "response_started",
        "response_complete",
        "chunked_encoding",
        "more_body",
        "keep_alive",
        "disconnected",
        "message_event",
    ],
)
def test_cycle_instance_attributes(name: str) -> None:
    init = source(_httptools().RequestResponseCycle.__init__)
    assert re.search(rf"self\.{name}\b[^=\n]*=", init), uvicorn_moved(
        f"RequestResponseCycle.{name}", "is no longer set in RequestResponseCycle.__init__"
    )


@pytest.mark.parametrize(
    ("method", "needles"),
    [
        # the count of open connections is the server's set, kept by the protocol
        ("connection_made", [r"self\.connections\.add\(self\)", r"self\.transport = transport"]),
        ("connection_lost", [r"self\.connections\.discard\(self\)"]),
        # a request's scope is made at its first byte, the cycle from it at its head;
        # an upgrade returns before making one; a pipelined request waits its turn
        ("on_message_begin", [r"self\.scope = "]),
        (
            "on_headers_complete",
            [
                r"_should_upgrade\(\):\s*return",
                r"self\.cycle = RequestResponseCycle\(\s*scope=self\.scope",
                r"on_response=self\.on_response_complete",
                r"self\._start_asgi_task\(self\.cycle, app\)",
                r"self\.pipeline\.appendleft\(",
            ],
        ),
        ("on_response_complete", [r"self\.pipeline\.pop\(\)", r"self\._start_asgi_task\("]),
    ],
)
def test_protocol_flow(method: str, needles: list[str]) -> None:
    text = source(getattr(_httptools().HttpToolsProtocol, method))
    for needle in needles:
        assert re.search(needle, text), uvicorn_moved(
            f"HttpToolsProtocol.{method}", f"no longer matches {needle!r}"
        )


def test_cycle_send_honours_disconnected_and_keep_alive() -> None:
    # the guard hangs up by setting disconnected (sends dropped from then on) and
    # closes a refused connection after its answer by clearing keep_alive
    text = source(_httptools().RequestResponseCycle.send)
    for needle in (
        r"if self\.disconnected:\s*return",
        r"if not self\.keep_alive:\s*self\.transport\.close\(\)",
        r"self\.on_response\(\)",
    ):
        assert re.search(needle, text), uvicorn_moved(
            "RequestResponseCycle.send", f"no longer matches {needle!r}"
        )


def test_config_takes_a_protocol_class() -> None:
    import uvicorn
    from ssehub.fastpath.guard import Guard, guarded_protocol

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    guard = Guard(head_timeout=1, request_timeout=1, max_connections=1, stream_path="/s")
    protocol = guarded_protocol(guard)
    assert protocol is not None
    config = uvicorn.Config(app, http=protocol, log_config=None)
    config.load()
    assert config.http_protocol_class is protocol, uvicorn_moved(
        "Config(http=<class>)", "no longer serves with the class given"
    )
