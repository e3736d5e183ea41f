"""Write deploy/rabbitmq/definitions.json from ssehub.roles (the one place the
broker roles are defined), with password placeholders that entrypoint.sh fills.

    .venv/bin/python deploy/rabbitmq/make-definitions.py

tests/test_deploy_local.py fails while the file differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssehub import roles

HERE = Path(__file__).resolve().parent
TARGET = HERE / "definitions.json"
ADMIN = "ssehub-admin"  # people only (the management UI), never a service
SANDBOX = "ssehub-sandbox"  # the compose demo's and test suite's own vhosts
SANDBOX_VHOSTS = ("ssehub-demo", "ssehub-tests")
ALL = {"configure": ".*", "write": ".*", "read": ".*"}


def placeholder(user: str) -> str:
    """``ssehub-edge`` -> ``${RABBITMQ_EDGE_PASSWORD}`` (docker-compose.yml's names)."""
    return "${RABBITMQ_" + user.removeprefix("ssehub-").upper() + "_PASSWORD}"


def definitions() -> dict[str, list[dict[str, object]]]:
    deployment = roles.roles("nodes")  # compose runs the default delivery design
    users = [ADMIN, *(r.user for r in deployment), SANDBOX]
    permissions: list[dict[str, object]] = [
        {"user": ADMIN, "vhost": vhost, **ALL} for vhost in ("/", *SANDBOX_VHOSTS)
    ]
    permissions += [
        {"user": r.user, "vhost": "/", "configure": r.configure, "write": r.write, "read": r.read}
        for r in deployment
    ]
    permissions += [{"user": SANDBOX, "vhost": vhost, **ALL} for vhost in SANDBOX_VHOSTS]
    return {
        "users": [
            {
                "name": user,
                "password": placeholder(user),
                "tags": ["administrator"] if user == ADMIN else [],
            }
            for user in users
        ],
        "vhosts": [{"name": vhost} for vhost in ("/", *SANDBOX_VHOSTS)],
        "permissions": permissions,
    }


def render() -> str:
    return json.dumps(definitions(), indent=2) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"make-definitions: wrote {TARGET}", file=sys.stderr)
