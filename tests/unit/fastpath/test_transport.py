"""ssehub.fastpath.transport on a real uvicorn: chunks written past ASGI interleave
with ASGI's own, byte for byte as HTTP/1.1 chunked encoding; a full socket is
left to ASGI; anything but uvicorn's httptools cycle gets no writer.

If uvicorn renames one of the attributes the writer uses, the first test
fails and names them (the edge itself would quietly fall back to ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import FastAPI
from ssehub.fastpath.transport import NEEDED, direct_writer
from starlette.types import Message, Receive, Scope, Send

from tests.support import serve

Handler = Callable[[Receive, Send], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[Handler]]]:
    """uvicorn (httptools) serving whatever handler the test puts in the list."""
    handlers: list[Handler] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await handlers.pop(0)(receive, send)

    app.state = SimpleNamespace()  # type: ignore[attr-defined]  # serve() looks there
    async with serve(cast(FastAPI, app)) as url:
        yield url, handlers


async def request(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    return reader, writer


async def chunked_body(reader: asyncio.StreamReader) -> list[bytes]:
    """The chunks of a chunked body, up to its terminating empty chunk."""
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        data = await reader.readexactly(size + 2)
        assert data.endswith(b"\r\n")
        if size == 0:
            return chunks
        chunks.append(data[:-2])


def body(data: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


START: Message = {"type": "http.response.start", "status": 200, "headers": []}


async def test_direct_chunks_interleave_with_asgi_ones(server: Any) -> None:
    url, handlers = server

    async def handler(receive: Receive, send: Send) -> None:
        assert direct_writer(send) is None  # not before the response has started
        await send(START)
        write = direct_writer(send)
        assert write is not None, (
            "uvicorn's httptools RequestResponseCycle no longer has all of "
            f"{NEEDED} (and flow.write_paused): ssehub.fastpath.transport needs updating"
        )
        assert write(b"id: 1\ndata: one\n\n")
        await send(body(b"id: 2\ndata: two\n\n"))
        assert write(b"id: 3\ndata: \xc3\xa9\n\n")
        await send(body(b"", more=False))

    handlers.append(handler)
    reader, writer = await request(url)
    try:
        async with asyncio.timeout(10):
            chunks = await chunked_body(reader)
    finally:
        writer.close()
    assert chunks == [
        b"id: 1\ndata: one\n\n",
        b"id: 2\ndata: two\n\n",
        b"id: 3\ndata: \xc3\xa9\n\n",
    ]


async def test_a_full_socket_is_left_to_asgi_and_a_gone_client_raises(server: Any) -> None:
    url, handlers = server
    checked = asyncio.Event()

    async def handler(receive: Receive, send: Send) -> None:
        await send(START)
        write = direct_writer(send)
        assert write is not None
        cycle = cast(Any, send).__self__
        cycle.flow.pause_writing()  # as the transport does above its high-water mark
        assert write(b"data: later\n\n") is False  # the caller's ASGI send waits
        cycle.flow.resume_writing()
        assert write(b"data: now\n\n") is True
        await send(body(b"", more=False))
        # once the client has gone a write says so (uvicorn's send drops it
        # silently): the stream closes and reports no receipt for it
        assert (await receive())["type"] == "http.disconnect"
        with pytest.raises(ConnectionResetError):
            write(b"data: nobody\n\n")
        checked.set()

    handlers.append(handler)
    reader, writer = await request(url)
    async with asyncio.timeout(10):
        assert await chunked_body(reader) == [b"data: now\n\n"]
        writer.close()
        await checked.wait()


def test_no_writer_for_another_server() -> None:
    async def send(message: Message) -> None:
        del message

    assert direct_writer(send) is None
