"""Writing a live stream's chunks straight to uvicorn's transport.

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


def direct_writer(send: Send) -> Write | None:
    """For a started, chunked httptools response: write chunks to its transport."""
    cycle: Any = getattr(send, "__self__", None)
    if CYCLE is None or type(cycle) is not CYCLE:
        return None
    if not all(hasattr(cycle, name) for name in NEEDED) or not hasattr(cycle.flow, "write_paused"):
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
