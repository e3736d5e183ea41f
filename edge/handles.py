"""File handles: how many an edge needs, and the bound that keeps it within them.

Every open connection is a file handle, and so are the broker connection, the
store's pool (up to 30 connections on PostgreSQL), the listening socket, the
event loop's own, the log files and whatever a library opens for a moment.
An edge needs

    RLIMIT_NOFILE >= SSEHUB_MAX_CONNECTIONS + OVERHEAD        (OVERHEAD = 256)

``OVERHEAD``: ``REFUSING`` (64) connections being refused at once over the
bound (ssehub.fastpath.guard), and 192 for everything else, a wide margin
included (an idle edge on SQLite holds 20, on PostgreSQL 20 + its pool).

At start the edge raises its soft limit to the hard one (a Kubernetes pod
cannot set its soft limit, and the runtimes' soft default is often 1,024),
and serves at most ``limit - OVERHEAD`` connections: SSEHUB_MAX_CONNECTIONS
when it fits, else that (with a warning), and that when it is not set.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from ssehub.errors import ConfigError
from ssehub.fastpath.guard import REFUSING

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

OVERHEAD = REFUSING + 192
# What a system without RLIMIT_NOFILE (Windows) serves when not told.
UNLIMITED_DEFAULT = 10_000


@dataclass(frozen=True, slots=True)
class Budget:
    limit: int | None  # the soft RLIMIT_NOFILE the edge runs with (None: no such limit)
    hard: int | None
    max_connections: int  # the bound in effect
    wanted: int | None  # SSEHUB_MAX_CONNECTIONS, when the limit left no room for it

    def describe(self) -> str:
        limits = f"{self.limit} (hard {self.hard})" if self.limit is not None else "no limit"
        return f"file handles: {limits}; at most {self.max_connections} connections"


def raise_soft_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard one; (soft, hard) as they are then."""
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses "unlimited" open files: its ceiling is fs.nr_open.
    ceiling = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY:
        soft = ceiling
    elif soft < ceiling:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
    return soft, ceiling


def budget(max_connections: int | None, limits: tuple[int, int] | None) -> Budget:
    """The bound on connections for ``max_connections`` under ``limits`` (soft, hard)."""
    if limits is None:  # pragma: no cover
        return Budget(None, None, max_connections or UNLIMITED_DEFAULT, None)
    soft, hard = limits
    room = soft - OVERHEAD
    if room < 1:
        raise ConfigError(
            f"RLIMIT_NOFILE: {soft} file handles are too few for an edge, which needs "
            f"SSEHUB_MAX_CONNECTIONS + {OVERHEAD} (docs/architecture.md, File handles)"
        )
    if max_connections is None or max_connections <= room:
        return Budget(soft, hard, max_connections or room, None)
    return Budget(soft, hard, room, max_connections)


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20
