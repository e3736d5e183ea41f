"""The services' listening sockets, bound at start, before anything else: a
port already in use stops the program with one line saying so (SPEC "Running"),
not with a server's traceback after it has connected to everything."""

from __future__ import annotations

import errno
import socket

from ssehub.errors import PortUnavailable


def bind(host: str, port: int, *, option: str = "--port") -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), for the server to
    listen on (uvicorn and asyncio call ``listen`` with their own backlog).
    ``option``: the command-line option that chooses another port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn and asyncio do: a restart need not wait out TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                f"port {port} on {host} is already in use (by another ssehub or another "
                f"program); stop it, or choose another port with {option}"
            ) from None
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
