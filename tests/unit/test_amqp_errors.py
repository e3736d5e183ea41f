"""ssehub.amqp.describe: aiormq's connection errors in words, never the password."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any

import aio_pika
import pytest
import ssehub.amqp
from aiormq.exceptions import (
    AMQPConnectionError,
    ConnectionClosed,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from ssehub.amqp import describe, with_heartbeat

PASSWORD = "s3cr3t-pa55"
URL = f"amqp://alice:{PASSWORD}@mq.example:5673/orders"


def words(exc: BaseException, url: str = URL) -> str:
    text = describe(exc, url)
    assert PASSWORD not in text
    return text


def test_wrong_vhost() -> None:
    # what aiormq raises when the broker answers Connection.Open with a Close
    exc = InvalidFrameError(
        "Expected one of ['Connection.OpenOk'], got <Connection.Close object at 0x7f>"
    )
    assert words(exc) == (
        "RabbitMQ at mq.example:5673 refused vhost 'orders' for user 'alice' "
        "(does the vhost exist, and may the user use it?)"
    )


def test_default_vhost_and_port() -> None:
    exc = InvalidFrameError("Expected one of ['Connection.OpenOk'], got <Connection.Close>")
    assert words(exc, f"amqp://bob:{PASSWORD}@mq.example/") == (
        "RabbitMQ at mq.example:5672 refused vhost '/' for user 'bob' "
        "(does the vhost exist, and may the user use it?)"
    )


def test_bad_login() -> None:
    exc = ProbableAuthenticationError(f"ACCESS_REFUSED - Login was refused using {PASSWORD}")
    assert words(exc) == (
        "RabbitMQ at mq.example:5673 refused the login of user 'alice' (wrong user or password)"
    )


def test_refused_port() -> None:
    exc = AMQPConnectionError(111, "Connect call failed ('127.0.0.1', 1)")
    assert words(exc, f"amqp://guest:{PASSWORD}@127.0.0.1:1/") == (
        "cannot reach RabbitMQ at 127.0.0.1:1 (Connect call failed ('127.0.0.1', 1))"
    )


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
        (OSError(-2, "Name or service not known"), "Name or service not known"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_unreachable(exc: BaseException, text: str) -> None:
    assert words(exc) == f"cannot reach RabbitMQ at mq.example:5673 ({text})"


def test_closed_by_the_broker() -> None:
    exc = ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure")
    assert words(exc) == (
        "RabbitMQ at mq.example:5673 closed the connection: "
        "CONNECTION_FORCED - broker forced connection closure"
    )


def test_anything_else_is_named_by_its_class() -> None:
    assert words(asyncio.InvalidStateError("odd")) == (
        "RabbitMQ at mq.example:5673: InvalidStateError: odd"
    )


def test_heartbeat_is_added_unless_set() -> None:
    assert with_heartbeat("amqp://u:p@h/") == "amqp://u:p@h/?heartbeat=10"
    assert with_heartbeat("amqp://u:p@h/v?heartbeat=3") == "amqp://u:p@h/v?heartbeat=3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connections_in(tb: TracebackType | None) -> list[aio_pika.Connection]:
    found = []
    while tb is not None:
        found += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, aio_pika.Connection)]
        tb = tb.tb_next
    return found


@pytest.mark.parametrize(
    "connect", [ssehub.amqp.connect, aio_pika.connect], ids=["ours", "aio-pika"]
)
async def test_a_failed_connect_leaves_no_open_connection(connect: Any) -> None:
    # aio-pika drops the Connection of a failed connect unclosed. Once the failure's
    # traceback sits in a reference cycle, the collector may free it on a worker
    # thread (the SQLite commit thread), where its __del__ leaves a never-awaited
    # close(): pytest then fails whichever test was running.
    with pytest.raises(OSError) as failed:
        await connect(f"amqp://guest:guest@127.0.0.1:{_free_port()}/", timeout=2)
    left_open = [c for c in _connections_in(failed.tb) if not c.is_closed]
    if connect is aio_pika.connect:
        assert left_open, "aio-pika now closes a failed connect: ssehub.amqp.connect can go"
    else:
        assert left_open == []
