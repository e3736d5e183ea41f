"""Chaos soak: two edges, two dispatchers, many browsers, random faults; then a ledger check.

    scripts/soak --duration 600 --users 200 --conns 2 [--postgres]

Every browser reconnects like EventSource; at the end each user's stream must
be exactly 1..N. Prints ``lost=0 duplicated=0 reordered=0`` (exit 0) or what
went wrong (exit 1). The RabbitMQ it restarts and kills, and the PostgreSQL it
stops (``--postgres``), are private instances started for the run from the
local binaries (tests/faults/services.py) and deleted afterwards; the machine's
own services are never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from ssehub.config import normalize_database_url
from ssehub.publisher import Publisher
from ssehub.storage.db import create_engine
from ssehub.storage.store import EventStore

from tests.faults.ledger import Browser, Ledger
from tests.faults.procs import Cluster, Proc, process_env, queue_type_under_test
from tests.faults.scenario import token
from tests.faults.services import PrivateBroker, PrivateDatabase
from tests.support import postgres_database, uid

Fault = Callable[[], Awaitable[str]]


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


@contextlib.asynccontextmanager
async def private_broker() -> AsyncIterator[PrivateBroker]:
    broker = await asyncio.to_thread(PrivateBroker.create)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.close)


@contextlib.asynccontextmanager
async def database(use_pg: bool, tmp: Path) -> AsyncIterator[tuple[str, PrivateDatabase | None]]:
    """The store's URL, and the private PostgreSQL cluster behind it (``--postgres``)."""
    if not use_pg:
        yield f"sqlite:///{tmp / 'soak.db'}", None
        return
    cluster = await asyncio.to_thread(PrivateDatabase.create)
    try:
        async with postgres_database(cluster.url) as url:
            yield url, cluster
            await asyncio.to_thread(cluster.ensure_running)  # for the DROP
    finally:
        await asyncio.to_thread(cluster.close)


class Chaos:
    def __init__(
        self, cluster: Cluster, broker: PrivateBroker, postgres: PrivateDatabase | None
    ) -> None:
        self.cluster = cluster
        self.postgres = postgres
        self.faults: dict[str, Fault] = {
            "dispatcher SIGKILL": lambda: self._dispatcher(signal.SIGKILL),
            "dispatcher SIGTERM": lambda: self._dispatcher(signal.SIGTERM),
            "edge SIGKILL": lambda: self._edge(signal.SIGKILL),
            "edge SIGTERM": lambda: self._edge(signal.SIGTERM),
            "rabbitmq restart": self._broker(broker.restart_graceful),
            "rabbitmq kill -9": self._broker(broker.kill9_and_start),
        }
        if postgres is not None:
            self.faults["postgres stopped 5 s"] = self._postgres

    def procs(self, edge: bool) -> list[Proc]:
        return [p for p in self.cluster.procs if (p.port is not None) == edge]

    async def _dispatcher(self, sig: int) -> str:
        victim = random.choice(self.procs(edge=False))
        victim.signal(sig)
        await victim.wait_exit(30)
        await self.cluster.respawn(victim)
        return victim.name

    async def _edge(self, sig: int) -> str:
        victim = random.choice(self.procs(edge=True))
        victim.signal(sig)
        await victim.wait_exit(30)
        await asyncio.sleep(1)  # wait-ok: the node stays down for a moment, like a real crash
        await self.cluster.respawn(victim)
        return victim.name

    def _broker(self, restart: Callable[[], Awaitable[None]]) -> Fault:
        async def run() -> str:
            await restart()
            for edge in self.procs(edge=True):
                await edge.wait_ready(timeout=120)
            return "rabbitmq"

        return run

    async def _postgres(self) -> str:
        assert self.postgres is not None
        await asyncio.to_thread(self.postgres.stop)
        try:
            await asyncio.sleep(5)  # wait-ok: the outage itself
        finally:
            await asyncio.to_thread(self.postgres.start)
        return "postgres"


async def soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ssehub-soak-"))
    log("starting a private RabbitMQ" + (" and PostgreSQL" if args.postgres else ""))
    async with private_broker() as broker, database(args.postgres, tmp) as (db, postgres):
        env = process_env(
            broker.url, db, reconnect_max_delay="2", drain_seconds="2", log_level="WARNING"
        )
        cluster = Cluster(env, tmp)
        try:
            return await _run(args, cluster, Chaos(cluster, broker, postgres))
        finally:
            cluster.stop()
            log(f"logs in {tmp}")


async def _run(args: argparse.Namespace, cluster: Cluster, chaos: Chaos) -> int:
    amqp = cluster.env["SSEHUB_RABBITMQ_URL"]
    for i in (1, 2):
        await cluster.dispatcher(f"dispatcher-{i}")
    edges = [(await cluster.edge(f"edge-{i}")).url for i in (1, 2)]
    users = [uid("s") for _ in range(args.users)]
    rng = random.Random(args.seed)
    conversations = {
        uid("c"): rng.sample(users, min(5, len(users))) for _ in range(args.users // 5)
    }
    publisher = Publisher(amqp, queue_type=queue_type_under_test())
    for conv, members in conversations.items():
        await publisher.set_members(conv, members)
    browsers = [
        Browser(u, token(u), edges[k % 2 :] + edges[: k % 2])
        for u in users
        for k in range(args.conns)
    ]
    ledger = Ledger(publisher, users, conversations)
    stop_b, stop_p = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(b.run(stop_b)) for b in browsers]
    # a fresh stream starts at the user's latest event: publish once all are open
    async with asyncio.timeout(120):
        for b in browsers:
            await b.reconnected.wait()
    publishing = asyncio.create_task(ledger.publish(stop_p, args.pause))
    log(
        f"soak: {len(browsers)} streams of {len(users)} users, {len(conversations)} "
        f"conversations, {args.duration:.0f} s, faults: {', '.join(chaos.faults)}"
    )
    deadline = time.monotonic() + args.duration
    done: list[tuple[str, float]] = []
    while time.monotonic() + args.interval < deadline:
        await asyncio.sleep(args.interval * (0.5 + rng.random()))  # wait-ok: time between faults
        name = rng.choice(list(chaos.faults))
        t0 = time.monotonic()
        target = await chaos.faults[name]()
        done.append((name, time.monotonic() - t0))
        log(
            f"fault {name} ({target}): recovered in {done[-1][1]:.1f} s; "
            f"published {ledger.published}"
        )
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))  # wait-ok: rest of the run
    stop_p.set()
    await publishing
    with contextlib.suppress(TimeoutError):
        await ledger.settle(browsers, timeout=120)
    stop_b.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await publisher.close()
    report = ledger.report(browsers)
    if any(report.values()):
        await diagnose(cluster.env["SSEHUB_DATABASE_URL"], ledger, browsers)
    events = sum(ledger.sent.values())
    log(
        f"faults injected: {len(done)}; events expected by clients: {events}; "
        f"publisher retries: {ledger.errors}; reconnects: {sum(b.connects for b in browsers)}; "
        f"resumes refused: {sum(b.not_recovered for b in browsers)}"
    )
    print(" ".join(f"{k}={v}" for k, v in report.items()), flush=True)
    return 0 if not any(report.values()) else 1


async def diagnose(db: str, ledger: Ledger, browsers: list[Browser]) -> None:
    """Where did it go wrong: never stored, or stored but not delivered?"""
    engine = create_engine(normalize_database_url(db))
    store = EventStore(engine)
    try:
        shown = 0
        for b in browsers:
            expected = ledger.sent[b.user]
            missing = sorted(set(range(1, expected + 1)) - set(b.seqs))
            if not missing or shown >= 8:
                continue
            shown += 1
            pos = await store.position(b.user)
            log(
                f"  {b.user}: expected {expected}, stored up to {pos.last_seq}, "
                f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                f"connects {b.connects}, last id {b.last_id}"
            )
    finally:
        await engine.dispose()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--conns", type=int, default=2, help="streams per user")
    p.add_argument("--interval", type=float, default=30, help="mean seconds between faults")
    p.add_argument("--pause", type=float, default=0.002, help="publisher pause between events")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL store (adds DB outages)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
