"""Writing a live stream's chunks straight to uvicorn's transport, and
aborting the connection of a client that stopped reading.

A live write is one chunk to one socket, and an edge does tens of thousands
a second (a 1,000-member conversation event is 1,000 of them). Through ASGI
each one is a coroutine for uvicorn's ``send``, run by hand (edge/pump.py),
which checks the cycle's state, frames the chunk and calls
``transport.write``: ~2 µs of the ~8 µs a write costs here, the kernel's
share included. ``direct_writer`` does the same framing and the same checks
without the coroutine, for uvicorn's httptools cycle only:

- uvicorn private attributes used: ``RequestResponseCycle.transport``,
  ``.flow.write_paused``, ``.disconnected``, ``.chunked_encoding``,
  ``.response_started``, ``.response_complete`` (checked by
  tests/unit/edge/test_transport.py against the installed uvicorn);
- anything else (h11, another server, a cycle without one of those) gets
  None and the stream writes through ASGI, as before;
- a full socket (``write_paused``) is left to ASGI's ``send``, which waits
  for the drain under the write timeout; the headers, the replay and the
  last chunk always go through ASGI.

``aborter`` gives the way to drop a connection at once, its unsent bytes
with it (``transport.abort()``: an RST, not a close that waits to flush what a
client that stopped reading will never take). The server then sees the
client gone and does not complain that the response never completed. With
another server there is none, and the stream ends with a plain close.

uvicorn is pinned (``ssehub.fastpath.UVICORN_PINNED``); the test names the
attribute an upgrade moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Send

CYCLE: type[Any] | None
try:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    CYCLE = RequestResponseCycle
except ImportError:  # httptools not installed: uvicorn serves with h11
    CYCLE = None

# The server's own ``send``, put in the scope by the app (edge/app.py) before any
# middleware wraps it: CORS wraps it for the headers, never for body chunks.
RAW_SEND = "ssehub.raw_send"

# (chunk) -> True when written; False when the socket is full and the caller
# must use ASGI. Raises ConnectionResetError when the client has gone (where
# uvicorn's own send drops the chunk silently): the stream closes, and a
# receipt is not reported for a write nobody received.
Write = Callable[[bytes], bool]
NEEDED = (
    "transport",
    "flow",
    "disconnected",
    "chunked_encoding",
    "response_started",
    "response_complete",
)


def _cycle(send: Send) -> Any:
    """uvicorn's httptools cycle behind ``send``, if it has what we use; else None."""
    cycle: Any = getattr(send, "__self__", None)
    if CYCLE is None or type(cycle) is not CYCLE:
        return None
    if not all(hasattr(cycle, name) for name in NEEDED) or not hasattr(cycle.flow, "write_paused"):
        return None
    return cycle


def direct_writer(send: Send) -> Write | None:
    """For a started, chunked httptools response: write chunks to its transport."""
    cycle = _cycle(send)
    if cycle is None:
        return None
    if not cycle.response_started or cycle.chunked_encoding is not True:
        return None
    transport, flow = cycle.transport, cycle.flow

    def write(chunk: bytes) -> bool:
        if flow.write_paused:
            return False
        if cycle.disconnected or cycle.response_complete:
            raise ConnectionResetError("the client has gone")
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True

    return write


def aborter(send: Send) -> Callable[[], None] | None:
    """For an httptools response: drop its connection at once (an RST), unsent
    bytes and all; the server sees the client gone. None with another server."""
    cycle = _cycle(send)
    if cycle is None:
        return None
    transport = cycle.transport
    return transport.abort  # type: ignore[no-any-return]
