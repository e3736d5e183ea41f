"""One store per deployment: the store and the broker know each other's identity.

A deployment is one RabbitMQ vhost, and it has one store (docs/contract.md,
"Delivery guarantees"): two dispatchers pointed at different databases would
each number a user's events from their own cursor and hand out the same ids
twice. So the store and the broker each hold the deployment's id:

- the store: the one row of ``ssehub_deployment``, made by whichever process
  comes first (insert if absent, then read back: processes racing on a new
  store all read the winner's id);
- RabbitMQ: the durable queue ``ssehub.deployment``, whose
  ``x-dead-letter-routing-key`` argument is the id. RabbitMQ compares that
  argument on every declare of the queue and refuses another value with
  PRECONDITION_FAILED, atomically (of processes that declare it first with
  different ids, one wins), in words that ``refusal`` reads (RabbitMQ 3.10):
  "inequivalent arg 'x-dead-letter-routing-key' for queue 'ssehub.deployment'
  in vhost 'v': received 'b…' but current is 'a…'". Not every argument is
  compared: an unknown ``x-`` argument would be accepted with any value.
  ``x-dead-letter-routing-key`` needs ``x-dead-letter-exchange``, which is
  ``ssehub.internal``: RabbitMQ checks that the declaring user may read the
  queue and write to that exchange (3.10: when it creates the queue), and the
  dispatcher's and the edges' users may (ssehub.roles); ``x-max-length`` 0
  keeps the queue empty (nothing is routed to it anyway). Earlier versions
  named the default exchange (``""``), which only a user allowed to publish to
  every queue may name: such a marker is still checked with those arguments,
  and a user the broker refuses them is told, in one line, how to replace it.

Every process declares the queue with its store's id on every broker
(re)connect, before it consumes anything (``check_deployment``, from the
dispatcher's and the edge's link setup), so that neither a process started
on another store nor a standby on one can number an event. To give a deployment
another store on purpose, delete the queue: the next process declares it
with its store's id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass

import aiormq.exceptions
from aio_pika.abc import AbstractConnection
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine
from ssehub import topology
from ssehub.errors import ConfigError
from ssehub.storage import models
from ssehub.storage.db import WRITE_LOCK_FIRST, insert_ignore, store_errors

log = logging.getLogger("ssehub.identity")

MARKER = topology.DEPLOYMENT_MARKER  # the queue that holds the deployment's id on the broker
ID_ARGUMENT = "x-dead-letter-routing-key"
DEAD_LETTER_EXCHANGE = topology.INTERNAL.name  # which the processes' users may write to
LEGACY_EXCHANGE = ""  # what versions before the broker roles named: the default exchange


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    deployment: str  # the id the store holds
    store: str  # this process's database, in words, never with a password


class WrongStore(ConfigError):
    """This process's store is not its deployment's: RabbitMQ holds another id."""


def marker_arguments(deployment: str, exchange: str = DEAD_LETTER_EXCHANGE) -> dict[str, object]:
    return {"x-dead-letter-exchange": exchange, ID_ARGUMENT: deployment, "x-max-length": 0}


def describe_store(url: str) -> str:
    """The database of ``url`` in words: the SQLite file's absolute path, or the
    PostgreSQL database, host and port; never the user's password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "a database of an unreadable URL"
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            return "an in-memory SQLite database"
        return f"the SQLite file {os.path.abspath(path)}"
    return (
        f"the PostgreSQL database {parsed.database!r} at "
        f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    )


_ARGUMENT = re.compile(r"inequivalent arg '([^']*)'")
_VHOST = re.compile(r"in vhost '([^']*)'")
_CURRENT = re.compile(r"current is (?:the value )?'([^']*)'")


def refusal(identity: StoreIdentity, broker_said: str) -> ConfigError:
    """RabbitMQ's PRECONDITION_FAILED on the marker queue, in one line naming both
    sides: the id the vhost holds, and this process's store and its id."""
    argument = _ARGUMENT.search(broker_said)
    vhost = _VHOST.search(broker_said)
    where = f"RabbitMQ vhost {vhost.group(1)!r}" if vhost else "this RabbitMQ vhost"
    if argument is None or argument.group(1) != ID_ARGUMENT:
        return ConfigError(
            f"SSEHUB_RABBITMQ_URL: the queue {MARKER!r} of {where}, which holds the "
            f"deployment's id, was declared by something else than ssehub ({broker_said}); "
            "delete it and ssehub declares it again"
        )
    current = _CURRENT.search(broker_said)
    theirs = f"deployment {current.group(1)}" if current else "another deployment"
    return WrongStore(
        f"SSEHUB_DATABASE_URL: {identity.store} is the store of deployment "
        f"{identity.deployment}, but {where} belongs to {theirs}, which has another "
        "store (one deployment, one store); point SSEHUB_DATABASE_URL at that store, or "
        "SSEHUB_RABBITMQ_URL at a vhost of its own (to give that deployment this store "
        f"on purpose, delete the queue {MARKER!r} first)"
    )


async def store_identity(engine: AsyncEngine, url: str) -> StoreIdentity:
    """The store's deployment id, made now if the store has none yet. Needs the
    schema (``create_schema``). Processes racing on a new store all get the id of
    the one whose insert went first."""
    table = models.DeploymentRow.__table__  # type: ignore[attr-defined]
    row = {"slot": 1, "deployment": secrets.token_hex(8), "created_at": time.time()}
    with store_errors():
        async with engine.connect() as db:
            await db.execution_options(**{WRITE_LOCK_FIRST: True})
            async with db.begin():
                await db.execute(insert_ignore(db, table), [row])
                found = await db.execute(
                    text("SELECT deployment FROM ssehub_deployment WHERE slot = 1")
                )
                deployment = str(found.scalar_one())
    return StoreIdentity(deployment, describe_store(url))


async def check_deployment(connection: AbstractConnection, identity: StoreIdentity) -> None:
    """Declare the deployment's id on the broker, as this store's: a new vhost
    takes it, a vhost that holds it already agrees. Raises WrongStore when the
    vhost holds another id (ConfigError when the queue is not ssehub's, or is an
    earlier version's that this broker user may not check); broker trouble
    raises as it comes (aiormq, aio-pika)."""
    try:
        await _declare_marker(connection, identity, DEAD_LETTER_EXCHANGE)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        said = str(exc)
        argument, current = _ARGUMENT.search(said), _CURRENT.search(said)
        legacy = current is not None and current.group(1) == LEGACY_EXCHANGE
        if argument is None or argument.group(1) != "x-dead-letter-exchange" or not legacy:
            raise refusal(identity, said) from None
        try:  # an earlier version's marker: checked with its own arguments
            await _declare_marker(connection, identity, LEGACY_EXCHANGE)
        except aiormq.exceptions.ChannelPreconditionFailed as again:
            raise refusal(identity, str(again)) from None
        except aiormq.exceptions.ChannelAccessRefused as refused:
            raise legacy_refused(said, str(refused)) from None


async def _declare_marker(
    connection: AbstractConnection, identity: StoreIdentity, exchange: str
) -> None:
    """On a channel of its own: a refused declare closes the channel it was made on."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(
            MARKER,
            durable=True,
            arguments=marker_arguments(identity.deployment, exchange),  # type: ignore[arg-type]
        )
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


_USER = re.compile(r"refused for user '([^']*)'")


def legacy_refused(broker_said: str, refused: str) -> ConfigError:
    """An earlier version's marker, which this broker user may not declare (it
    names the default exchange), in one line with the way out."""
    vhost = _VHOST.search(broker_said)
    user = _USER.search(refused)
    name = vhost.group(1) if vhost else "/"
    return ConfigError(
        f"SSEHUB_RABBITMQ_URL: the queue {MARKER!r} of RabbitMQ vhost {name!r} holds the "
        "deployment's id as an earlier ssehub declared it (dead-lettering to the default "
        f"exchange), which broker user {user.group(1) if user else '?'!r} may not check "
        "(rightly: it may not write to the default exchange); replace it once: with no "
        "process of an earlier version running, and SSEHUB_DATABASE_URL naming this "
        f"deployment's store, run: rabbitmqctl delete_queue -p '{name}' {MARKER} (the "
        "next process declares it again with its store's id)"
    )
