"""Start ``ssehub`` commands as processes, many at once and cheaply.

Each process is forked from a server that imported ssehub once
(``multiprocessing``'s forkserver, preloaded), so starting one costs its own
start-up only, not the ~1.3 s of CPU that importing FastAPI, SQLAlchemy and
aio-pika takes: twenty rounds of five processes stay within a test's budget,
and the five really do start within milliseconds of each other. Each child
runs ``ssehub.cli.main`` (what the ``ssehub`` command runs) with the given
environment only, in a folder of its own, its output in a log file.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

PRELOAD = [
    "ssehub.cli",
    "ssehub.cli.serve",
    "ssehub.dispatcher.main",
    "ssehub.edge.app",
    "ssehub.edge.server",
    "tests.startup",
]


def _context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _run(args: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """In the child: the command line's own entry point, as ``ssehub ARGS``."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from ssehub.cli import main

    sys.argv = ["ssehub", *args]
    main(args)


@dataclass
class Child:
    process: multiprocessing.process.BaseProcess
    log: Path

    @classmethod
    def start(cls, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Child:
        process = _context().Process(target=_run, args=(args, env, str(cwd), str(log)))
        process.start()
        return cls(process, log)

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join(10)
