"""Private RabbitMQ and PostgreSQL instances that fault tests may restart and kill.

A fault test never touches the machine's own broker or database: each session
starts its own RabbitMQ node and PostgreSQL cluster from the local binaries, in a
temporary directory, on free ports, and deletes them at the end.

- RabbitMQ: its own node name, AMQP and distribution ports, data, log, config and
  (empty) plugins files, and its own Erlang cookie (``HOME`` is the temp dir), so
  ``rabbitmqctl`` of this module cannot reach any other node even by mistake. The
  scripts in /usr/lib/rabbitmq/bin are used on Debian: the /usr/sbin wrappers run
  as the ``rabbitmq`` user and share the machine node's cookie.
- PostgreSQL: ``initdb`` into the temp dir (as the ``postgres`` user when we are
  root), trust auth, its own port and unix socket dir, ``pg_ctl`` to stop/start.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.faults.procs import free_port

BOOT_TIMEOUT = 180.0  # a cold RabbitMQ boot takes 10-20 s on a loaded 2-core box
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def amqp_accepts(port: int) -> bool:
    """True when the port answers the AMQP 0-9-1 header with a frame (Connection.Start):
    the listener opens only once the broker has fully booted."""
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as s:
            s.settimeout(5)
            s.sendall(AMQP_HEADER)
            return s.recv(1) == b"\x01"
    except OSError:
        return False


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=BOOT_TIMEOUT
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return f"(no {path})"


# -- RabbitMQ -------------------------------------------------------------------
def _rabbitmq_bin() -> Path | None:
    """The directory of the real rabbitmq-server/rabbitmqctl scripts."""
    debian = Path("/usr/lib/rabbitmq/bin")
    if (debian / "rabbitmq-server").exists():
        return debian
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


class PrivateBroker:
    """One RabbitMQ node of our own; ``url`` is its default vhost as guest."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.node = f"ssehub-test-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.pid_file = root / "node.pid"
        self.env = {
            **os.environ,
            "HOME": str(root),  # its own .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),  # not /etc's
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @classmethod
    def create(cls) -> PrivateBroker:
        bindir = _rabbitmq_bin()
        if bindir is None:
            raise FileNotFoundError("rabbitmq-server not installed")
        broker = cls(Path(tempfile.mkdtemp(prefix="ssehub-test-rabbitmq-")), bindir)
        atexit.register(broker.close)  # also when the caller dies before its own cleanup
        try:
            (broker.root / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{broker.port}\n"
            )
            (broker.root / "enabled_plugins").write_text("[].\n")  # no management: boots fast
            (broker.root / "rabbitmq-env.conf").write_text("")
            cookie = broker.root / ".erlang.cookie"
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
            broker.start()
        except BaseException:
            broker.close()
            raise
        return broker

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n <our node>``; our cookie reaches no other node."""
        return _run([str(self.bindir / "rabbitmqctl"), "-q", "-n", self.node, *args], self.env)

    def start(self) -> None:
        """Boot the node on its data dir (durable state survives) and wait for AMQP."""
        self.pid_file.unlink(missing_ok=True)  # stale after a kill -9; the node writes it anew
        with (self.root / "startup.log").open("ab") as out:
            subprocess.run(
                [str(self.bindir / "rabbitmq-server"), "-detached"],
                env=self.env,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=60,
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not amqp_accepts(self.port):
            died = self.pid_file.exists() and self.beam() is None
            if died or time.monotonic() > deadline:
                log = _tail(self.root / "log" / f"{self.node}.log")
                raise RuntimeError(f"private RabbitMQ {self.node} did not boot:\n{log}")
            time.sleep(0.2)  # wait-ok: polling the AMQP port of a booting broker

    def beam(self) -> psutil.Process | None:
        """Our node's Erlang VM, from the pid file it writes; None when that pid is
        gone or is not our node (a stale file after a kill -9: the pid may be reused)."""
        try:
            proc = psutil.Process(int(self.pid_file.read_text().strip()))
            ours = proc.environ().get("RABBITMQ_NODENAME") == self.node
        except (OSError, ValueError, psutil.Error):
            return None
        return proc if ours else None

    def ensure_running(self) -> None:
        if self.beam() is None:
            self.start()
        elif not amqp_accepts(self.port):  # app stopped by a test that failed midway
            self.ctl("start_app")

    async def restart_graceful(self) -> None:
        await asyncio.to_thread(self.ctl, "stop_app")
        await asyncio.to_thread(self.ctl, "start_app")

    async def kill9_and_start(self) -> None:
        beam = self.beam()
        assert beam is not None, f"{self.node} is not running"
        beam.kill()
        await asyncio.to_thread(beam.wait, 30)
        await asyncio.to_thread(self.start)

    @contextlib.contextmanager
    def vhost(self) -> Iterator[str]:
        """A fresh vhost of this node, deleted afterwards (the node outlives a test)."""
        name = f"ssehub-test-{secrets.token_hex(4)}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        try:
            yield f"{self.url}{name}"
        finally:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ensure_running()  # a test that failed midway may have stopped it
                self.ctl("delete_vhost", name)

    def close(self) -> None:
        """Stop the node and delete its directory; safe to call again."""
        beam = self.beam()
        if beam is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("stop")
            with contextlib.suppress(psutil.NoSuchProcess):
                beam.kill()  # a no-op after a clean stop
            with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                beam.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)


# -- PostgreSQL -----------------------------------------------------------------
def _postgres_bin() -> Path | None:
    """The directory of initdb/pg_ctl: Debian's newest /usr/lib/postgresql/<v>/bin, or PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivateDatabase:
    """One PostgreSQL cluster of our own; ``url`` is its ``postgres`` database."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.port = free_port()
        self.data = root / "data"
        # initdb and postgres refuse to run as root
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls) -> PrivateDatabase:
        bindir = _postgres_bin()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not installed")
        db = cls(Path(tempfile.mkdtemp(prefix="ssehub-test-postgres-")), bindir)
        atexit.register(db.close)
        try:
            if db.as_owner:
                shutil.chown(db.root, "postgres", "postgres")
            db._pg("initdb", "-D", str(db.data), "-A", "trust", "-U", "postgres", "--no-sync")
            with (db.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"port = {db.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{db.root}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                )
            db.start()
        except BaseException:
            db.close()
            raise
        return db

    def _pg(self, tool: str, *args: str) -> str:
        return _run([*self.as_owner, str(self.bindir / tool), *args], cwd=self.root)

    def start(self) -> None:
        """Start and wait (``pg_ctl -w``) until it accepts connections."""
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "120", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def running(self) -> bool:
        status = [*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        return (
            subprocess.run(status, cwd=self.root, capture_output=True, timeout=30).returncode == 0
        )

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def close(self) -> None:
        """Stop the cluster and delete its directory; safe to call again."""
        if self.data.exists() and self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
