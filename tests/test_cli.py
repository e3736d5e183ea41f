"""The ``ssehub`` command as a new user meets it: version, tokens, typos, broker
and store errors, a busy port, ``publish``'s output, ``--help``."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import pytest
from ssehub.config import DEV_JWT_SECRET, setting_names

from tests.sse import open_stream
from tests.support import Stack, declare_topology, make_settings, uid

CLI = [sys.executable, "-m", "ssehub.cli"]
README = Path(__file__).resolve().parents[1] / "README.md"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    return env | extra


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=clean_env(**env), capture_output=True, text=True, timeout=60, cwd=cwd
    )


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def stderr_until(
    proc: asyncio.subprocess.Process, done: Callable[[list[str]], bool], timeout: float = 30
) -> list[str]:
    """The process's stderr lines, read until ``done`` says enough."""
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(lines):
                line = (await proc.stderr.readline()).decode()
                if not line:
                    break
                lines.append(line)
    except TimeoutError:
        raise AssertionError(f"timed out; stderr so far: {''.join(lines)}") from None
    return lines


def test_version() -> None:
    from ssehub import __version__

    done = run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"ssehub {__version__}")


def test_token_without_a_secret_uses_the_dev_servers_secret() -> None:
    done = run("token", "alice")
    assert done.returncode == 0, done.stderr
    assert "development secret" in done.stderr
    claims = jwt.decode(done.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"


def test_a_typo_in_a_setting_is_warned_about() -> None:
    done = run("token", "alice", SSEHUB_JWT_SECRT="x" * 40)
    assert done.returncode == 0
    assert "SSEHUB_JWT_SECRT is not a setting of ssehub" in done.stderr


def test_a_typo_in_dotenv_is_warned_about_like_one_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SSEHUB_PING_INTERVL=5\nOTHER_TOOL_SETTING=1\n")
    done = run("token", "alice", cwd=tmp_path, SSEHUB_RETRY_MSS="1")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "ssehub: warning: SSEHUB_RETRY_MSS is not a setting of ssehub "
        "(did you mean SSEHUB_RETRY_MS?); ignored",
        "ssehub: warning: .env: SSEHUB_PING_INTERVL is not a setting of ssehub "
        "(did you mean SSEHUB_PING_INTERVAL?); ignored",
    ]


SERVICES = ["dev", "edge", "dispatcher"]


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    defaults = {
        "SSEHUB_JWT_SECRET": "s" * 40,
        "SSEHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'ssehub.db'}",
        "SSEHUB_LOG_FORMAT": "text",
        "SSEHUB_RECONNECT_MAX_DELAY": "0.2",
        # never the machine's default vhost: a test that needs the broker passes its own
        "SSEHUB_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/",
    }
    return clean_env(**(defaults | extra))


@pytest.mark.parametrize("command", SERVICES)
def test_a_busy_port_is_one_line(command: str, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        done = subprocess.run(
            [*CLI, command, "--host", "127.0.0.1", "--port", str(port)],
            env=service_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert done.stdout == ""  # no "open http://..." for a server that never started
    assert done.stderr.splitlines() == [
        f"ssehub: port {port} on 127.0.0.1 is already in use (by another ssehub or another "
        "program); stop it, or choose another port with --port"
    ]


@pytest.mark.parametrize("command", SERVICES)
async def test_an_unreachable_database_is_one_line_per_attempt(
    command: str, tmp_path: Path
) -> None:
    port, http_port = closed_port(), closed_port()
    env = service_env(
        tmp_path, SSEHUB_DATABASE_URL=f"postgresql://ssehub:pw-2718x@127.0.0.1:{port}/events"
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        command,
        "--port",
        str(http_port),
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        lines = await stderr_until(proc, lambda ls: sum("retrying" in x for x in ls) >= 3)
        if command == "dispatcher":  # its probes answer while it waits, and say why
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
                assert (await http.get("/healthz")).status_code == 200
                ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert (
                f"store: cannot reach PostgreSQL at 127.0.0.1:{port} (database 'events'): "
                "Connection refused"
            ) in ready.json()["problems"]
    finally:
        proc.kill()
        out, _ = await proc.communicate()
    retries = [line for line in lines if "retrying" in line]
    assert all(
        f"cannot reach PostgreSQL at 127.0.0.1:{port} (database 'events'): Connection refused"
        in line
        for line in retries
    ), retries
    text = "".join(lines)
    assert "pw-2718x" not in text and "Traceback" not in text
    assert b"open http" not in out  # the demo is not offered before it can work


@pytest.mark.postgres
async def test_a_missing_database_is_named_and_waited_for(
    pg_server_url: str, tmp_path: Path
) -> None:
    parts = urlsplit(pg_server_url)
    missing = urlunsplit(parts._replace(path=f"/ssehub_{uid('db').replace('-', '_')}"))
    env = service_env(tmp_path, SSEHUB_DATABASE_URL=missing)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "dispatcher", env=env, cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        lines = await stderr_until(proc, lambda ls: sum("retrying" in x for x in ls) >= 2)
    finally:
        proc.kill()
        await proc.wait()
    name = missing.rsplit("/", 1)[1]
    where = f"{parts.hostname}:{parts.port or 5432}"
    assert f"PostgreSQL at {where} has no database {name!r}" in lines[-1]
    assert "Traceback" not in "".join(lines)


async def test_a_store_that_comes_later_is_used(amqp_url: str, tmp_path: Path) -> None:
    """SQLite in a directory that does not exist yet: retried until it does."""
    later = tmp_path / "later"
    env = service_env(
        tmp_path,
        SSEHUB_DATABASE_URL=f"sqlite:///{later / 'ssehub.db'}",
        SSEHUB_RABBITMQ_URL=amqp_url,
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI, "dispatcher", env=env, cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        lines = await stderr_until(proc, lambda ls: any("retrying" in x for x in ls))
        assert f"cannot open the SQLite database '{later / 'ssehub.db'}'" in lines[-1]
        later.mkdir()
        lines += await stderr_until(proc, lambda ls: any("answers" in x for x in ls))
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    assert "Traceback" not in "".join(lines)


def test_publish_says_what_it_published(amqp_url: str) -> None:
    # a dispatcher declares the topology: `ssehub publish` declares nothing
    asyncio.run(declare_topology(make_settings(amqp_url, "sqlite://")))
    done = run(
        "publish", "user", "alice", "message:new", '{"text":"hi"}', SSEHUB_RABBITMQ_URL=amqp_url
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"published user\.alice: message:new \(idempotency key [0-9a-f]{32}\)\n", done.stdout
    ), done.stdout
    done = run("publish", "members", "conv1", "set", "alice", "bob", SSEHUB_RABBITMQ_URL=amqp_url)
    assert done.stdout.startswith("published members.conv1: set alice bob (idempotency key ")


def test_publish_with_the_broker_down_is_one_line() -> None:
    port = closed_port()
    done = run(
        "publish",
        "user",
        "alice",
        "message:new",
        "{}",
        SSEHUB_RABBITMQ_URL=f"amqp://guest:pw-1618x@127.0.0.1:{port}/",
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"cannot reach RabbitMQ at 127.0.0.1:{port}" in line
    assert "pw-1618x" not in line


@pytest.mark.parametrize("command", SERVICES)
def test_the_help_of_a_service_gives_every_option_a_meaning_and_names_its_settings(
    command: str,
) -> None:
    done = run(command, "--help")
    assert done.returncode == 0
    options = re.findall(r"^  (--\w+) \w+\s+(.+?)(?=^  \S|^$)", done.stdout, re.M | re.S)
    pin = {"--partitions"} if command == "dispatcher" else set()
    assert {name for name, _ in options} == {"--host", "--port", *pin}
    assert all("default" in text for _, text in options), options
    named = set(re.findall(r"SSEHUB_[A-Z_]+[A-Z]", done.stdout))
    assert {"SSEHUB_RABBITMQ_URL", "SSEHUB_DATABASE_URL"} <= named
    assert named <= setting_names(), named - setting_names()
    if command != "dispatcher":
        assert "SSEHUB_JWT_SECRET" in named


def test_a_wrong_vhost_is_said_in_words(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    wrong = urlunsplit(parts._replace(path="/no-such-vhost"))
    done = run("publish", "user", "alice", "e", "1", SSEHUB_RABBITMQ_URL=wrong)
    assert done.returncode == 2
    assert "refused vhost 'no-such-vhost'" in done.stderr
    assert "Connection.OpenOk" not in done.stderr


async def test_a_service_logs_one_line_per_failed_connect(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    wrong = urlunsplit(
        parts._replace(netloc=f"guest:pw-3141x@{parts.hostname}:{parts.port or 5672}")
    )
    env = clean_env(
        SSEHUB_RABBITMQ_URL=wrong,
        SSEHUB_DATABASE_URL=f"sqlite:///{Path(os.environ.get('TMPDIR', '/tmp')) / uid()}.db",
        SSEHUB_RECONNECT_MAX_DELAY="0.2",
        SSEHUB_LOG_FORMAT="text",
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI, "dispatcher", env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while sum("refused the login" in line for line in lines) < 3:
                lines.append((await proc.stderr.readline()).decode())
    finally:
        proc.kill()
        await proc.wait()
    retries = [line for line in lines if "RabbitMQ" in line]
    assert all("refused the login of user 'guest' (wrong user or password)" in r for r in retries)
    assert "pw-3141x" not in "".join(lines)  # never the password
    assert not any("Traceback" in line or "creating transport" in line for line in lines)


@pytest.mark.skipif(shutil.which("amqp-publish") is None, reason="amqp-tools not installed")
async def test_the_readmes_amqp_publish_command_works_as_pasted(stack: Stack) -> None:
    block = re.search(r"```sh\n(amqp-publish .*?)\n```", README.read_text(), re.S)
    assert block is not None
    command = block.group(1).replace("\\\n", " ")
    user = uid()
    local = "amqp://guest:guest@localhost:5672"
    assert local + " " in command  # no trailing slash: that would name the empty vhost
    vhost = stack.settings.rabbitmq_url.rsplit("/", 1)[1]
    command = command.replace(local, f"{local}/{vhost}").replace("user.alice", f"user.{user}")
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        await client.next()
        proc = await asyncio.create_subprocess_shell(command)
        assert await proc.wait() == 0
        ev = await client.next()
    assert (ev.event, ev.json) == ("message:new", {"text": "hi"})


# -- trust and limits -----------------------------------------------------------------


def test_token_expires_in_a_day_unless_told() -> None:
    for args, life in (((), 86400), (("--ttl", "600"), 600)):
        done = run("token", "alice", *args, SSEHUB_JWT_SECRET="t" * 40)
        assert done.returncode == 0, done.stderr
        claims = jwt.decode(done.stdout.strip(), "t" * 40, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == life


@pytest.mark.parametrize(
    ("ttl", "line"),
    [
        (
            "2592001",
            "a token valid for 2592001 s would be refused: SSEHUB_MAX_TOKEN_LIFETIME is "
            "30 days (2592000 s)",
        ),
        ("0", "--ttl 0: must be a number of seconds above 0"),
        ("nan", "--ttl nan: must be a number of seconds above 0"),
    ],
)
def test_token_refuses_a_ttl_the_edge_would_refuse(ttl: str, line: str) -> None:
    done = run("token", "alice", "--ttl", ttl, SSEHUB_JWT_SECRET="t" * 40)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [f"ssehub: {line}"]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"SSEHUB_JWT_SECRET": "secret"},
            "SSEHUB_JWT_SECRET: 6 bytes is too short for HS256, which needs at least 32 "
            "(e.g. `openssl rand -hex 32`)",
        ),
        (
            {"SSEHUB_JWT_COOKIE": "sse", "SSEHUB_CORS_ORIGINS": "https://a.example,*"},
            "SSEHUB_CORS_ORIGINS=* cannot go with SSEHUB_JWT_COOKIE: any web page could read "
            "a signed-in user's stream; list the origins that may open streams",
        ),
        (
            {"SSEHUB_OPS_PORT": "{port}"},
            "SSEHUB_OPS_PORT={port} is the port of the streams (--port): choose another",
        ),
    ],
)
def test_an_unsafe_edge_setting_stops_it_in_one_line(
    env: dict[str, str], line: str, tmp_path: Path
) -> None:
    port = str(closed_port())
    env = {k: v.format(port=port) for k, v in env.items()}
    done = subprocess.run(
        [*CLI, "edge", "--port", port],
        env=service_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"ssehub: {line.format(port=port)}"]


def test_the_dispatchers_port_is_this_machines_only_by_default() -> None:
    done = run("dispatcher", "--help")
    assert "default 127.0.0.1: this machine only" in " ".join(done.stdout.split())


async def test_an_edge_with_an_ops_port_serves_metrics_there_only(tmp_path: Path) -> None:
    public, ops = closed_port(), closed_port()
    env = service_env(tmp_path, SSEHUB_OPS_PORT=str(ops), SSEHUB_OPS_HOST="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        *CLI, "edge", "--port", str(public), env=env, cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        lines = await stderr_until(proc, lambda ls: any("ops endpoints" in x for x in ls))
        async with httpx.AsyncClient() as http:
            async with asyncio.timeout(30):
                while True:  # uvicorn listens a moment after the line
                    try:
                        on_ops = await http.get(f"http://127.0.0.1:{ops}/metrics")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)  # wait-ok: the server is starting
            on_public = await http.get(f"http://127.0.0.1:{public}/metrics")
            health = await http.get(f"http://127.0.0.1:{public}/healthz")
    finally:
        proc.kill()
        await proc.wait()
    assert f"on http://127.0.0.1:{ops}/ only" in lines[-1]
    assert on_ops.status_code == 200 and "ssehub_connections_open" in on_ops.text
    assert on_public.status_code == 404
    assert health.status_code == 200
