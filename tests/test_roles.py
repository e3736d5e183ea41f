"""The three broker roles (ssehub.roles) on the real broker: each process and
each client runs with the least permissions its role grants, and what a role
must not do the broker refuses. Every test has a vhost of its own and users
made for it with rabbitmqctl (unique names, deleted afterwards); guest is
used by the tests themselves only, to look (sse.dead) or to set a scene."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
import aiormq
import orjson
import pytest
from ssehub import roles, topology
from ssehub.cli import main
from ssehub.config import Delivery, Settings
from ssehub.dispatcher.main import running_dispatcher
from ssehub.edge.app import create_app
from ssehub.errors import ConfigError, PublishError
from ssehub.publisher import Publisher
from ssehub.sender import NO_EXCHANGE, UNROUTABLE
from ssehub.storage.identity import (
    MARKER,
    WrongStore,
    legacy_refused,
    marker_arguments,
)

from tests.sse import SSEClient, open_stream
from tests.support import (
    dead_letter_queue,
    make_settings,
    rabbitmq_vhost,
    run_cli,
    running_edge,
    serve,
    uid,
)
from tests.test_deployment import identity_of
from tests.test_receipts import receipts_of

# -- the roles as data, without a broker ----------------------------------------------
NAMES = {
    "exchanges": [e.name for e in topology.EXCHANGES],
    "dispatch": ["ssehub.dispatch", "ssehub.dispatch.0", "ssehub.dispatch.17"],
    "dead": ["sse.dead"],
    "markers": [topology.PARTITIONS_MARKER, topology.DEPLOYMENT_MARKER],
    "edge": ["ssehub.edge.host.12.ab12", topology.edge_queue("n").name],
    "other": ["amq.default", "amq.topic", "my-app.receipts", "ssehub.dispatchx", "sse.events2"],
}
EVERY = [name for names in NAMES.values() for name in names]


def allowed(regex: str) -> set[str]:
    """The names ``regex`` lets through (RabbitMQ's regexes are PCRE, and these
    few constructs read the same in Python's)."""
    return {name for name in EVERY if re.search(regex, name)}


def role(name: str, delivery: Delivery = "nodes") -> roles.Role:
    return next(r for r in roles.roles(delivery) if r.name == name)


def test_the_publisher_may_write_to_sse_events_and_nothing_else() -> None:
    publisher = role("publisher")
    assert allowed(publisher.write) == {"sse.events"}
    assert allowed(publisher.configure) == allowed(publisher.read) == set()


@pytest.mark.parametrize("delivery", ["nodes", "bindings", "both"])
def test_an_edge_may_not_publish_as_the_app_nor_declare_shared_things(delivery: Delivery) -> None:
    edge = role("edge", delivery)
    deliver = {"sse.deliver"} if delivery != "nodes" else set()
    assert allowed(edge.configure) == {*NAMES["edge"], *NAMES["markers"]}
    assert allowed(edge.write) == {"ssehub.internal", "sse.receipts", *deliver, *NAMES["edge"]}
    assert allowed(edge.read) == {*NAMES["edge"], "ssehub.nodes", *deliver, MARKER}


def test_the_dispatcher_declares_the_topology_but_cannot_publish_as_the_app() -> None:
    dispatcher = role("dispatcher")
    shared = {*NAMES["exchanges"], *NAMES["dispatch"], *NAMES["dead"], *NAMES["markers"]}
    assert allowed(dispatcher.configure) == shared
    assert "sse.events" not in allowed(dispatcher.write)
    assert "amq.default" not in allowed(dispatcher.write)  # no queue by its name
    assert allowed(dispatcher.read) == {*NAMES["dispatch"], "sse.events", "ssehub.internal", MARKER}


def test_ssehub_roles_prints_the_lines_of_the_data() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        main(["roles", "--vhost", "prod chat", "--delivery", "bindings"])
    lines = out.getvalue().splitlines()
    assert "rabbitmqctl add_vhost 'prod chat'  # if it does not exist yet" in lines
    granted = [shlex.split(line) for line in lines if line.startswith("rabbitmqctl set_perm")]
    assert granted == [
        ["rabbitmqctl", "set_permissions", "-p", "prod chat", r.user, r.configure, r.write, r.read]
        for r in roles.roles("bindings")
    ]
    # a placeholder the shell refuses to run unset, never a password
    assert 'rabbitmqctl add_user ssehub-publisher "${SSEHUB_PUBLISHER_PASSWORD:?}"' in lines

    out = io.StringIO()
    with redirect_stdout(out):
        main(["roles", "--vhost", "/", "--generate"])
    text = out.getvalue()
    assert "${" not in text and "add_vhost" not in text
    urls = re.findall(r"SSEHUB_RABBITMQ_URL=(amqp://\S+)", text)
    assert [urlsplit(u).username for u in urls] == [r.user for r in roles.roles()]
    for url in urls:  # the password of the line that makes the user
        parts = urlsplit(url)
        assert f"rabbitmqctl add_user {parts.username} {parts.password}\n" in text


def test_an_earlier_markers_refusal_is_one_line_with_the_way_out() -> None:
    said = (
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue "
        "'ssehub.deployment' in vhost 'prod': received 'ssehub.internal' but current is ''"
    )
    refused = (
        "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'prod' refused for user 'e'"
    )
    message = str(legacy_refused(said, refused))
    assert "\n" not in message
    assert "broker user 'e' may not check" in message
    assert "rabbitmqctl delete_queue -p 'prod' ssehub.deployment" in message


# -- on the broker: users of this test's own -----------------------------------------
def ctl(*args: str) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl is not None
    subprocess.run([rabbitmqctl, "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Users:
    """A vhost and one user of each role on it (AMQP URLs); ``guest``: the tests' own."""

    guest: str
    dispatcher: str
    edge: str
    publisher: str

    @property
    def vhost(self) -> str:
        return unquote(urlsplit(self.guest).path[1:])


@contextlib.contextmanager
def role_users(broker_url: str, delivery: Delivery = "nodes") -> Iterator[Users]:
    parts = urlsplit(broker_url)
    if shutil.which("rabbitmqctl") is None or parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("needs rabbitmqctl for the local broker, to make users")
    with rabbitmq_vhost(broker_url) as guest:
        vhost = unquote(urlsplit(guest).path[1:])
        made: list[str] = []
        urls: dict[str, str] = {}
        try:
            for r in roles.roles(delivery):
                user, password = f"{r.user}-{uuid.uuid4().hex[:8]}", secrets.token_hex(12)
                ctl("add_user", user, password)
                made.append(user)
                ctl("set_permissions", "-p", vhost, user, r.configure, r.write, r.read)
                where = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
                urls[r.name] = urlunsplit(urlsplit(guest)._replace(netloc=where))
            yield Users(guest, **urls)
        finally:
            for user in made:
                ctl("delete_user", user)


@dataclass
class RoleStack:
    users: Users
    settings: Settings  # the edge's
    edge: str


@contextlib.asynccontextmanager
async def role_stack(users: Users, db: str, **overrides: object) -> AsyncIterator[RoleStack]:
    """A dispatcher and an edge, each as its role's user."""
    dispatcher = make_settings(users.dispatcher, db, **overrides)
    edge = make_settings(users.edge, db, **overrides)
    async with running_dispatcher(dispatcher), running_edge(edge, declare=False) as (url, _):
        yield RoleStack(users, edge, url)


@pytest.fixture(scope="module")
def users(broker_url: str) -> Iterator[Users]:
    with role_users(broker_url) as made:
        yield made


@pytest.fixture(scope="module")
async def stack(users: Users, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RoleStack]:
    db = f"sqlite:///{tmp_path_factory.mktemp('roles') / 'ssehub.db'}"
    async with role_stack(users, db) as s:
        yield s


@contextlib.asynccontextmanager
async def listening(stack: RoleStack, user: str) -> AsyncIterator[SSEClient]:
    from ssehub.edge.auth import mint_token

    async with open_stream(stack.edge, mint_token(stack.settings, user)) as (_, client):
        assert (await client.next()).event == "connected"
        yield client


async def publish_cli(*args: str, url: str) -> tuple[int, str]:
    """``ssehub ARGS`` as a publisher would run it: only the broker's URL set,
    in a folder without the checkout's .env."""
    folder = Path(tempfile.gettempdir())
    return await run_cli(*args, env={"SSEHUB_RABBITMQ_URL": url}, cwd=folder)


async def test_the_publisher_role_publishes_with_the_python_client(stack: RoleStack) -> None:
    user, conv = uid(), uid("c")
    async with listening(stack, user) as client, Publisher(stack.users.publisher) as publisher:
        await publisher.send_event_to_user(user, "note", {"n": 1})
        await publisher.set_members(conv, [user])
        await publisher.broadcast_to_conversation(conv, "message:new", "hi")
        got = await client.take(2)
        assert [(e.event, e.seq, e.json) for e in got] == [
            ("note", 1, {"n": 1}),
            ("message:new", 2, "hi"),
        ]


async def test_the_publisher_role_publishes_with_ssehub_publish(stack: RoleStack) -> None:
    user = uid()
    async with listening(stack, user) as client:
        code, out = await publish_cli(
            "publish", "user", user, "note", '{"from": "cli"}', url=stack.users.publisher
        )
        assert code == 0, out
        assert out.startswith(f"published user.{user}: note (idempotency key ")
        event = await client.next()
        assert (event.event, event.json) == ("note", {"from": "cli"})


async def refused(url: str, exchange: str, routing_key: str = "user.x") -> str:
    """Publish one confirmed message as ``url``'s user; the broker's refusal."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as info:
            await target.publish(aio_pika.Message(b"{}"), routing_key, timeout=10)
        return str(info.value)
    finally:
        await connection.close()


async def test_the_broker_refuses_what_a_role_may_not_do(stack: RoleStack) -> None:
    users = stack.users
    said = await refused(users.edge, "sse.events")  # an edge cannot publish as the app
    assert said.startswith("ACCESS_REFUSED - access to exchange 'sse.events'")
    for exchange in ("ssehub.internal", "ssehub.nodes", "sse.deliver", "sse.receipts", ""):
        said = await refused(users.publisher, exchange, "ssehub.dispatch")
        assert "ACCESS_REFUSED" in said, exchange
    # a publisher may not declare, bind or read either
    connection = await aio_pika.connect(users.publisher)
    try:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await (await connection.channel()).declare_queue("mine", exclusive=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            queue = await (await connection.channel()).get_queue(topology.DEAD.name)
            await queue.get(timeout=5)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "header",
    [
        topology.FORWARD_HEADER,
        topology.PRESENCE_HEADER,
        topology.ROUTE_HEADER,
        topology.PROBE_HEADER,
        topology.NOTICE_HEADER,
    ],
)
async def test_nothing_that_comes_through_sse_events_is_internal(
    stack: RoleStack, header: str
) -> None:
    user = uid()
    forged = {
        topology.FORWARD_HEADER: [["e", "user", user, "x\nid: 999999", "1", None, [], 0, 0, []]],
        topology.PRESENCE_HEADER: {"node": "n", "user": user, "online": True},
        topology.ROUTE_HEADER: {"node": "n", "ref": 1, "ops": [[user, 1]]},
        topology.PROBE_HEADER: "",
        topology.NOTICE_HEADER: {"user": user},
    }[header]
    message_id = f"forged-{uuid.uuid4().hex}"
    async with listening(stack, user) as client, dead_letter_queue(stack.users.guest) as dead:
        connection = await aio_pika.connect(stack.users.publisher)
        try:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(topology.EVENTS.name, ensure=False)
            value = "caps" if header == topology.NOTICE_HEADER else 1
            message = aio_pika.Message(
                orjson.dumps(forged), message_id=message_id, headers={header: value}
            )
            await events.publish(message, topology.DISPATCH.name, timeout=10)
        finally:
            await connection.close()
        async with asyncio.timeout(30):
            while (letter := await dead.get()).message_id != message_id:
                pass
        headers = letter.headers or {}
        assert headers["x-ssehub-routing-key"] == topology.DISPATCH.name
        assert "routing key 'ssehub.dispatch': expected user.<id>" in str(
            headers[topology.ERROR_HEADER]
        )
        # nothing of it reached the user; the next event does, numbered 1
        async with Publisher(stack.users.publisher) as publisher:
            await publisher.send_event_to_user(user, "next", 1)
        event = await client.next()
        assert (event.event, event.seq) == ("next", 1)


async def test_the_bindings_design_runs_with_role_users(broker_url: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ssehub.db'}"
    with role_users(broker_url, "bindings") as made:
        async with role_stack(made, db, delivery="bindings") as stack:
            user = uid()
            async with (
                receipts_of(made.guest, user) as receipts,  # the edge's user writes them
                listening(stack, user) as client,
                Publisher(made.publisher) as publisher,
            ):
                await publisher.send_event_to_user(user, "note", 1, key=f"k-{user}", receipt=True)
                event = await client.next()
                assert (event.event, event.seq, event.json) == ("note", 1, 1)
                receipt = await asyncio.wait_for(receipts.get(), 10)
                assert (receipt["userId"], receipt["id"]) == (user, f"k-{user}")


async def test_publishing_before_any_dispatcher_fails_in_words(broker_url: str) -> None:
    with role_users(broker_url) as made:
        async with Publisher(made.publisher, attempts=2) as publisher:
            with pytest.raises(PublishError) as info:
                await publisher.send_event_to_user(uid(), "e", 1)
        assert str(info.value).endswith(f"not confirmed after 2 attempts: {NO_EXCHANGE}")

        code, out = await publish_cli("publish", "user", "u", "e", "1", url=made.publisher)
        assert code == 2 and out.count("\n") == 1, out
        assert out.startswith("ssehub: user.u: not confirmed after 5 attempts: the exchange")

        # exchanges, but no queue bound yet: the broker returns the message
        connection = await aio_pika.connect(made.guest)
        try:
            await topology.declare_exchanges(await connection.channel())
        finally:
            await connection.close()
        async with Publisher(made.publisher, attempts=2) as publisher:
            with pytest.raises(PublishError) as info:
                await publisher.send_event_to_user(uid(), "e", 1)
        assert str(info.value).endswith(UNROUTABLE)


async def test_an_edge_waits_for_a_dispatcher_in_one_line(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"sqlite:///{tmp_path / 'ssehub.db'}"
    with role_users(broker_url) as made:
        settings = make_settings(made.edge, db)
        app = create_app(settings)
        async with serve(app):
            link = app.state.edge.node.link
            with caplog.at_level(logging.INFO, logger="ssehub.amqp"):
                async with asyncio.timeout(15):
                    while "waiting for a dispatcher" not in caplog.text:
                        await asyncio.sleep(0.05)  # wait-ok: polling the log for the line
            said = [r for r in caplog.records if "waiting for" in r.getMessage()]
            line = said[0].getMessage()
            assert "waiting for a dispatcher to declare the exchange 'sse.events'" in line
            assert "\n" not in line and "Traceback" not in caplog.text
            # the usual start of a deployment: said at INFO, then WARNING if it lasts
            assert [r.levelno for r in said[:2]] == [logging.INFO, logging.WARNING][: len(said)]
            assert not link.ready
            async with running_dispatcher(make_settings(made.dispatcher, db)):
                async with asyncio.timeout(30):
                    await link.supervisor.ready.wait()


async def test_an_edge_still_refuses_another_partition_count_and_store(
    broker_url: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'ssehub.db'}"
    with role_users(broker_url) as made:
        async with running_dispatcher(make_settings(made.dispatcher, db)) as dispatcher:
            async with asyncio.timeout(30):  # the first process sets the partition count
                await dispatcher.supervisor.ready.wait()
            for settings, error in (
                (make_settings(made.edge, db, partitions=3), "SSEHUB_PARTITIONS=3 but"),
                (make_settings(made.edge, f"sqlite:///{tmp_path / 'other.db'}"), "SSEHUB_DATAB"),
            ):
                app = create_app(settings)
                failures: list[BaseException] = []
                app.state.fatal = failures.append
                async with serve(app):
                    async with asyncio.timeout(30):
                        while not failures:
                            await asyncio.sleep(0.05)  # wait-ok: polling the edge's failure
                assert isinstance(failures[0], ConfigError), failures
                assert str(failures[0]).startswith(error)
                assert "\n" not in str(failures[0])
            assert isinstance(failures[0], WrongStore)


def queue_of(url: str, name: str) -> dict[str, object]:
    """The broker's own account of queue ``name``: its arguments and policy."""
    vhost = unquote(urlsplit(url).path[1:])
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl is not None
    out = subprocess.run(
        [rabbitmqctl, "-q", "list_queues", "-p", vhost, "name", "arguments", "policy",
         "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    found = next(q for q in orjson.loads(out) if q["name"] == name)
    return {"arguments": {k: v for k, _, v in found["arguments"]}, "policy": found["policy"]}


async def test_sse_dead_is_bounded_and_drops_the_oldest(broker_url: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ssehub.db'}"
    with role_users(broker_url) as made:
        async with running_dispatcher(make_settings(made.dispatcher, db, dead_letter_max=3)) as d:
            async with asyncio.timeout(30):
                await d.supervisor.ready.wait()
            connection = await aio_pika.connect(made.dispatcher)
            try:  # as the dispatcher dead-letters: through ssehub.internal
                channel = await connection.channel(publisher_confirms=True)
                internal = await channel.get_exchange(topology.INTERNAL.name, ensure=False)
                for i in range(5):
                    await internal.publish(aio_pika.Message(b"%d" % i), topology.DEAD.name)
            finally:
                await connection.close()
        bound = {"x-max-length": 3, "x-overflow": "drop-head"}
        assert queue_of(made.guest, topology.DEAD.name)["arguments"] == bound
        connection = await aio_pika.connect(made.guest)
        try:
            queue = await (await connection.channel()).get_queue(topology.DEAD.name)
            kept = [(await queue.get(no_ack=True)).body for _ in range(3)]
            assert kept == [b"2", b"3", b"4"]  # the oldest dropped first
        finally:
            await connection.close()


async def test_an_earlier_versions_sse_dead_starts_with_one_warning(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"sqlite:///{tmp_path / 'ssehub.db'}"
    with role_users(broker_url) as made:
        connection = await aio_pika.connect(made.guest)
        try:  # as an earlier version declared it: no bound
            await (await connection.channel()).declare_queue(topology.DEAD.name, durable=True)
        finally:
            await connection.close()
        with caplog.at_level(logging.WARNING, logger="ssehub.topology"):
            async with running_dispatcher(make_settings(made.dispatcher, db)) as d:
                async with asyncio.timeout(30):
                    await d.supervisor.ready.wait()
                user = uid()
                async with dead_letter_queue(made.guest) as dead:
                    async with Publisher(made.publisher) as publisher:
                        await publisher.publish(f"user.{user}", b"{nope", key=f"bad-{user}")
                    async with asyncio.timeout(30):  # dead letters still go there
                        while (await dead.get()).message_id != f"bad-{user}":
                            pass
        warnings = [r.getMessage() for r in caplog.records if r.name == "ssehub.topology"]
        assert len(warnings) == 1, warnings
        assert "queue 'sse.dead' has no bound" in warnings[0]
        # the line it gives works
        line = warnings[0][warnings[0].index("rabbitmqctl set_policy") :]
        command = shlex.split(line[: line.index(" (a policy")])
        ctl(*command[1:])
        assert queue_of(made.guest, topology.DEAD.name)["policy"] == "sse-dead-bound"


async def test_an_earlier_versions_deployment_marker_is_still_checked(
    broker_url: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'ssehub.db'}"
    with role_users(broker_url) as made:
        ours = await identity_of(db)
        legacy = marker_arguments(ours.deployment, "")  # the default exchange, as before
        connection = await aio_pika.connect(made.guest)
        try:
            await (await connection.channel()).declare_queue(
                MARKER,
                durable=True,
                arguments=legacy,  # type: ignore[arg-type]
            )
        finally:
            await connection.close()
        async with role_stack(made, db) as stack:  # same store: both start
            user = uid()
            async with listening(stack, user) as client:
                async with Publisher(made.publisher) as publisher:
                    await publisher.send_event_to_user(user, "e", 1)
                assert (await client.next()).seq == 1
            with pytest.raises(WrongStore):  # another store: refused as ever
                other = make_settings(made.dispatcher, f"sqlite:///{tmp_path / 'other.db'}")
                async with running_dispatcher(other) as refused:
                    assert refused.running is not None
                    async with asyncio.timeout(30):
                        await asyncio.wait([refused.running])
