"""Bounded queues declared again: the bounds a queue already has win.

RabbitMQ compares a queue's ``x-max-length`` and ``x-overflow`` on every
declare and refuses others (PRECONDITION_FAILED), and a queue's arguments
cannot change. A queue declared unbounded by an earlier version (``sse.dead``
before SSEHUB_DEAD_LETTER_MAX), or with another value of the setting, must
not stop a process that starts on an upgraded deployment: the queue is used
as it is, and one warning gives the ``rabbitmqctl set_policy`` line that
bounds it.
"""

from __future__ import annotations

import contextlib
import logging
import re

import aiormq
import orjson

log = logging.getLogger("ssehub.topology")

# Queue arguments that bound a queue, and their names in a policy.
BOUNDS = {"x-max-length": "max-length", "x-overflow": "overflow"}
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']*)'")  # RabbitMQ's own words
_HOLDS = re.compile(r"current is (?:none|(?:the value )?'([^']*)')")
_IN_VHOST = re.compile(r"in vhost '([^']*)'")


async def existing_bounds(
    connection: aiormq.abc.AbstractConnection,
    name: str,
    durable: bool,
    arguments: dict[str, object],
) -> dict[str, object]:
    """``arguments`` with the bounds the queue ``name`` already has, if it exists
    with others (warned about, once). Declares the queue: a refused declare
    closes its channel, so each try has a channel of its own. A refusal that is
    not about a bound is left for the caller's own declare to raise."""
    wanted, vhost, agreed = dict(arguments), "/", False
    for _ in range(len(BOUNDS) + 1):
        scratch = await connection.channel()
        try:
            await scratch.queue_declare(name, durable=durable, arguments=arguments)  # type: ignore[arg-type]
            agreed = True
            break
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            said = str(exc)
            argument, held = _INEQUIVALENT.search(said), _HOLDS.search(said)
            if argument is None or argument.group(1) not in BOUNDS or held is None:
                break
            found = _IN_VHOST.search(said)
            vhost = found.group(1) if found else vhost
            value = held.group(1)
            arguments = dict(arguments)
            if value is None:
                arguments.pop(argument.group(1), None)
            else:
                arguments[argument.group(1)] = int(value) if value.isdigit() else value
        finally:
            with contextlib.suppress(Exception):
                await scratch.close()
    if agreed and arguments != wanted:
        log.warning(unbounded(name, wanted, arguments, vhost))
    return arguments


def unbounded(name: str, wanted: dict[str, object], kept: dict[str, object], vhost: str) -> str:
    """One line: the queue keeps the bounds it has, and the ``rabbitmqctl`` line
    (a policy) that bounds it as asked."""
    policy = orjson.dumps({BOUNDS[k]: v for k, v in wanted.items() if k in BOUNDS}).decode()
    has = ", ".join(f"{k}={kept[k]}" for k in BOUNDS if k in kept) or "no bound"
    return (
        f"queue {name!r} has {has}, not {policy} (it was declared by an earlier "
        "version, or with another setting), and a queue's arguments cannot change: it "
        f"is used as it is; to bound it, run: rabbitmqctl set_policy -p '{vhost}' "
        f"--apply-to queues {name.replace('.', '-')}-bound '^{re.escape(name)}$' "
        f"'{policy}' (a policy can lower a queue's own bound, not raise it; or delete "
        "the queue once empty, and it is declared again as asked)"
    )
