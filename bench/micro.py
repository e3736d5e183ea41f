"""Where a dispatcher batch's time goes, measured in-process, part by part.

``python -m bench.micro [--store sqlite|postgres] [--batches N] [--batch-size N]
[--profile]`` times, for batches of ``--batch-size`` user events to distinct
users (500, ``SSEHUB_BATCH_SIZE``'s default; 1 is a dispatcher at a low rate):
validation (``parse_message``), the store transaction
(``DispatchStore.commit_batch``), and routing the deliveries to ``sse.deliver``
three ways (see ``publish``). With
``--profile`` the commit is run under pyinstrument and its tree is printed.
No edge and no consumer: each part alone, on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiormq
from ssehub import topology
from ssehub.config import Settings, normalize_database_url
from ssehub.dispatcher.persist import DispatchStore
from ssehub.dispatcher.sequence import Delivery
from ssehub.fastpath.confirms import BatchPublisher
from ssehub.fastpath.marshal import Publish
from ssehub.pack import Packer
from ssehub.schema import Message, parse_message
from ssehub.storage.db import create_engine, create_schema

from bench import stack
from bench.publish import event_body


def make_batch(b: int, size: int, users: int) -> list[tuple[str, bytes, str]]:
    return [
        (
            f"user.m{(b * size + i) % users:06d}",
            event_body(b * size + i, "x" * 64, f"k{b}-{i}"),
            f"k{b}-{i}",
        )
        for i in range(size)
    ]


@contextlib.asynccontextmanager
async def store_engine(kind: str) -> AsyncIterator[DispatchStore]:
    with tempfile.TemporaryDirectory() as tmp:
        async with stack.database(kind, Path(tmp)) as url:
            engine = create_engine(normalize_database_url(url), writer=True)
            await create_schema(engine)
            try:
                yield DispatchStore(engine, 86400)
            finally:
                await engine.dispose()


async def run(kind: str, batches: int, size: int, users: int, profile: bool) -> None:
    raw = [make_batch(b, size, users) for b in range(batches)]
    t0 = time.perf_counter()
    parsed: list[list[Message]] = [
        [parse_message(rk, body, key, 262144) for rk, body, key in batch] for batch in raw
    ]
    t_parse = time.perf_counter() - t0
    deliveries: list[list[Delivery]] = []
    async with store_engine(kind) as store:
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="enabled")
            profiler.start()
        t0 = time.perf_counter()
        for batch in parsed:
            deliveries.append((await store.commit_batch(batch)).deliveries)
        t_commit = time.perf_counter() - t0
        if profiler is not None:
            profiler.stop()
    with stack.rabbitmq_vhost() as url:
        t_aiopika = await publish(url, deliveries, "aio-pika")
        t_publish = await publish(url, deliveries, "aiormq")
        t_batch = await publish(url, deliveries, "batch")
        t_packs = await publish(url, deliveries, "packs")
    n = batches * size
    print(f"{kind}: {batches} batches of {size} user events ({users} users)")
    parts = (
        ("parse_message", t_parse),
        ("commit_batch", t_commit),
        ("publish: aio-pika", t_aiopika),
        ("publish: aiormq", t_publish),
        ("publish: BatchPublisher", t_batch),
        ("publish: packs", t_packs),
    )
    for name, t in parts:
        print(f"  {name:24s} {1e6 * t / n:7.1f} µs/event  → at most {n / t:9,.0f} events/s")
    total = t_parse + t_commit + t_packs
    print(
        f"  {'dispatcher, serially':24s} {1e6 * total / n:7.1f} µs/event  → at most "
        f"{n / total:9,.0f} events/s"
    )
    if profiler is not None:
        print(profiler.output_text(unicode=True, color=False, show_all=False))


async def publish(url: str, deliveries: list[list[Delivery]], mode: str) -> float:
    """Route the deliveries with publisher confirms, a batch at a time.

    ``aio-pika``: ``Exchange.publish`` per delivery (the dispatcher before 7e44b6f).
    ``aiormq``: ``Channel.basic_publish`` per delivery (the dispatcher until
    5714887): each call takes the channel lock and waits until its frames are
    drained to the socket.
    ``batch``: ``ssehub.fastpath.BatchPublisher`` (the dispatcher until
    2026-12-01): the batch as one write, confirms counted by delivery tag.
    ``packs``: the same, with the deliveries in packs of 256 (``ssehub.pack``):
    what the dispatcher does now.
    """
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        deliver = (await topology.declare_core(ch))[topology.DELIVER.name]
        raw = await ch.get_underlay_channel()
        publisher = BatchPublisher(raw) if mode in ("batch", "packs") else None
        name = topology.DELIVER.name
        props = aiormq.spec.Basic.Properties(delivery_mode=1)
        t0 = time.perf_counter()
        for ds in deliveries:
            if mode == "aio-pika":
                await asyncio.gather(
                    *(
                        deliver.publish(aio_pika.Message(d.body), d.user_id, mandatory=False)
                        for d in ds
                    )
                )
            elif mode == "aiormq":
                await asyncio.gather(
                    *(
                        raw.basic_publish(
                            d.body, exchange=name, routing_key=d.user_id, properties=props
                        )
                        for d in ds
                    )
                )
            elif mode == "packs":
                packer = Packer(Settings.model_fields["pack_deliveries"].default)
                for d in ds:
                    packer.add(d.user_id, d.body)
                await publisher.publish(packer.finish(time.time_ns() // 1000))
            else:
                await publisher.publish([Publish(name, d.user_id, d.body, props) for d in ds])
        return time.perf_counter() - t0
    finally:
        await conn.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    asyncio.run(run(args.store, args.batches, args.batch_size, args.users, args.profile))


if __name__ == "__main__":
    main()
