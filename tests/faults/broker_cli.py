"""A private RabbitMQ node for the tests of other languages (clients/node).

``python -m tests.faults.broker_cli`` boots one (tests/faults/services.py),
prints its URL, then obeys one command a line on stdin: ``restart`` (the
broker app stopped and started again, durable state kept) or ``kill9`` (the
VM killed and booted again), answering ``ok <command>`` when done. At the end
of stdin it stops the node and deletes it.
"""

from __future__ import annotations

import asyncio
import sys

from tests.faults.services import PrivateBroker

COMMANDS = {
    "restart": PrivateBroker.restart_graceful,
    "kill9": PrivateBroker.kill9_and_start,
}


def main() -> None:
    broker = PrivateBroker.create()
    try:
        print(broker.url, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command in COMMANDS:
                asyncio.run(COMMANDS[command](broker))
                print(f"ok {command}", flush=True)
            elif command:
                print(f"unknown command {command!r}", flush=True)
    finally:
        broker.close()


if __name__ == "__main__":
    main()
