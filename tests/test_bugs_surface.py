"""A bug in a service's broker setup ends the service with its traceback, once,
instead of one WARNING line retried forever; a broker that cannot be reached
is still retried (tests/test_cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.procs import free_port
from tests.support import SECRET

INJECT = """
import sys
from ssehub.{module} import {cls}

async def broken(self, connection):
    raise AttributeError("injected: a bug in the setup")

{cls}._setup = broken
from ssehub.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    ("module", "cls", "args"),
    [
        ("edge.link", "EdgeLink", ["edge", "--host", "127.0.0.1", "--port", "{port}"]),
        ("dispatcher.service", "Dispatcher", ["dispatcher"]),
    ],
)
def test_an_attribute_error_in_the_amqp_setup_ends_the_service_with_its_traceback(
    amqp_url: str, tmp_path: Path, module: str, cls: str, args: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    env |= {
        "SSEHUB_RABBITMQ_URL": amqp_url,
        "SSEHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'ssehub.db'}",
        "SSEHUB_JWT_SECRET": SECRET,
        "SSEHUB_LOG_FORMAT": "text",
    }
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-c", INJECT.format(module=module, cls=cls)]
        + [a.format(port=port) for a in args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # it must end by itself: a retry loop would run into this
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" in out and "AttributeError: injected: a bug in the setup" in out
    assert out.count("AttributeError: injected") == 1  # once, not once per retry
    assert "retrying" not in out
