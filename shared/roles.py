"""The deployment's three broker users, as data: who may do what on RabbitMQ.

RabbitMQ grants a user, per vhost, three regular expressions over the names
of exchanges and queues alike (docs/security.md):

- *configure*: declare and delete;
- *write*: publish to an exchange, and bind a queue (the queue's name);
- *read*: consume from a queue, and bind from an exchange (the exchange's).

A passive declare (does it exist?) needs no permission at all. Declaring a
queue with ``x-dead-letter-exchange`` also needs read on the queue and write
on that exchange (the deployment marker's: ``ssehub.internal``).

- **publisher**: write to ``sse.events``, nothing else. Cannot declare, read,
  or reach an edge, another queue or the internal exchange.
- **edge**: its own exclusive queue ``ssehub.edge.<node>``, bound on
  ``ssehub.nodes`` (and, with per-user bindings, ``sse.deliver``); the two
  markers (the partition count, the store's id), declared so that the broker
  compares them; writes signals to ``ssehub.internal`` and receipts to
  ``sse.receipts`` (and, with per-user bindings, caps notices to
  ``sse.deliver``). Never ``sse.events``: an edge cannot publish as the app.
- **dispatcher**: declares the whole topology, consumes the dispatch queues,
  publishes deliveries, forwards, probes and dead letters.

Pure: ``commands`` renders the ``rabbitmqctl`` lines (``ssehub roles``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from ssehub import topology
from ssehub.config import Delivery


@dataclass(frozen=True, slots=True)
class Role:
    name: str  # publisher, edge, dispatcher
    user: str  # the RabbitMQ user ssehub suggests
    purpose: str  # what it is for, in words
    configure: str  # regexes, as RabbitMQ takes them
    write: str
    read: str


def only(*patterns: str) -> str:
    """A permission that matches the names of ``patterns`` (regexes) and nothing else."""
    return f"^({'|'.join(patterns)})$" if patterns else "^$"


def _name(name: str) -> str:
    return re.escape(name)


# Names a deployment's processes make up as they go: partition queues, edge queues.
PARTITION_QUEUES = _name(topology.dispatch_queue(0, 2).removesuffix("0")) + "[0-9]+"
EDGE_QUEUES = _name(topology.edge_queue("").name) + ".+"

_EXCHANGES = tuple(_name(e.name) for e in topology.EXCHANGES)
_DISPATCH = (_name(topology.DISPATCH.name), PARTITION_QUEUES)
_MARKERS = (_name(topology.PARTITIONS_MARKER), _name(topology.DEPLOYMENT_MARKER))
_DEAD = _name(topology.DEAD.name)
_INTERNAL = _name(topology.INTERNAL.name)
_DELIVER = _name(topology.DELIVER.name)


def roles(delivery: Delivery = "nodes") -> tuple[Role, ...]:
    """The three roles; the edge's depends on the delivery design (per-user
    bindings need ``sse.deliver``, which per-node delivery does not give edges)."""
    bindings = delivery != "nodes"  # "both": a fleet moving between the designs
    deliver = (_DELIVER,) if bindings else ()
    return (
        Role(
            "dispatcher",
            "ssehub-dispatcher",
            "declares the topology; consumes the dispatch queues; publishes deliveries, "
            "forwards, probes and dead letters",
            configure=only(*_EXCHANGES, *_DISPATCH, _DEAD, *_MARKERS),
            # publishes to the exchanges; binds the queues (write on the queue)
            write=only(
                _INTERNAL,
                _name(topology.NODES.name),
                _DELIVER,
                *_DISPATCH,
                _DEAD,
            ),
            # consumes the dispatch queues; binds from sse.events and ssehub.internal;
            # the deployment marker (its dead-letter exchange)
            read=only(
                *_DISPATCH,
                _name(topology.EVENTS.name),
                _INTERNAL,
                _name(topology.DEPLOYMENT_MARKER),
            ),
        ),
        Role(
            "edge",
            "ssehub-edge",
            "one edge node: its own queue and the two markers; signals to the "
            "dispatchers, receipts to the app; never sse.events",
            configure=only(EDGE_QUEUES, *_MARKERS),
            write=only(_INTERNAL, _name(topology.RECEIPTS.name), *deliver, EDGE_QUEUES),
            read=only(
                EDGE_QUEUES,
                _name(topology.NODES.name),
                *deliver,
                _name(topology.DEPLOYMENT_MARKER),
            ),
        ),
        Role(
            "publisher",
            "ssehub-publisher",
            "the app's backends (the Python and Node clients, ssehub publish): "
            "publishes to sse.events only, declares nothing",
            configure=only(),
            write=only(_name(topology.EVENTS.name)),
            read=only(),
        ),
    )


def password_variable(role: Role) -> str:
    """The shell variable a password placeholder names."""
    return f"SSEHUB_{role.name.upper()}_PASSWORD"


def commands(
    vhost: str,
    delivery: Delivery = "nodes",
    passwords: Mapping[str, str] | None = None,
) -> list[str]:
    """``rabbitmqctl`` lines that create the three users with their permissions
    on ``vhost``, with comments. ``passwords`` by role name; missing ones are
    ``"${SSEHUB_<ROLE>_PASSWORD:?}"``, which a shell refuses to run unset."""
    passwords = passwords or {}
    q = shlex.quote
    lines = [
        f"# ssehub's broker users for vhost {vhost!r} (SSEHUB_DELIVERY={delivery}); "
        "run as a RabbitMQ administrator",
    ]
    if vhost != "/":
        lines.append(f"rabbitmqctl add_vhost {q(vhost)}  # if it does not exist yet")
    for role in roles(delivery):
        password = passwords.get(role.name)
        secret = q(password) if password else f'"${{{password_variable(role)}:?}}"'
        lines += [
            f"# {role.name}: {role.purpose}",
            f"rabbitmqctl add_user {q(role.user)} {secret}",
            f"rabbitmqctl set_permissions -p {q(vhost)} {q(role.user)} "
            f"{q(role.configure)} {q(role.write)} {q(role.read)}",
        ]
    return lines


def table(vhost: str, delivery: Delivery = "nodes") -> list[str]:
    """One tab-separated line per role, for scripts: vhost, role, user,
    configure, write, read."""
    return [
        "\t".join((vhost, r.name, r.user, r.configure, r.write, r.read)) for r in roles(delivery)
    ]
