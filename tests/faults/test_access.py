"""Faults on the access paths: a revoke while an edge dies, a receipt across a
dispatcher crash between commit and delivery."""

from __future__ import annotations

import asyncio
import signal
import time

import jwt
from ssehub.publisher import Publisher

from tests.faults.procs import Cluster
from tests.sse import open_stream
from tests.support import SECRET, uid
from tests.test_receipts import receipts_of


def old_token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now - 60, "exp": now + 3600}, SECRET, "HS256")


async def test_a_revoke_in_flight_while_an_edge_dies_holds_everywhere_after(
    cluster: Cluster, publisher: Publisher
) -> None:
    await cluster.dispatcher("dispatcher")
    victim, survivor = await cluster.edge("edge-1"), await cluster.edge("edge-2")
    user = uid("banned")
    token = old_token(user)
    async with open_stream(survivor.url, token) as (_, s):
        await s.next()
        victim.signal(signal.SIGKILL)  # the revoke is published while it dies
        revoking = asyncio.create_task(publisher.revoke_tokens(user))
        ev = await s.until(lambda e: e.event == "disconnected", timeout=20)
        assert ev[-1].json == {"reason": "token_revoked"}
        await revoking
    restarted = await cluster.respawn(victim)
    for edge in (restarted, survivor):  # the stored revocation holds on every edge
        async with open_stream(edge.url, token) as (resp, _):
            await resp.aread()
            assert (resp.status_code, resp.json()["error"]) == (401, "token_revoked")


async def test_a_receipt_survives_a_dispatcher_killed_after_commit(
    cluster: Cluster, publisher: Publisher
) -> None:
    # Batch 1 of the active dispatcher is the receipt-bearing event (no presence
    # traffic to count): committed, then SIGKILL before it is published.
    env = {"SSEHUB_PRESENCE": "false"}
    active = await cluster.dispatcher("dispatcher-a", SSEHUB_FAILPOINT="after_commit:1", **env)
    await cluster.dispatcher("dispatcher-b", **env)
    edge = await cluster.edge("edge-1", **env)
    user = uid("r")
    async with (
        receipts_of(cluster.env["SSEHUB_RABBITMQ_URL"], user) as receipts,
        open_stream(edge.url, old_token(user)) as (_, s),
    ):
        await s.next()
        await publisher.send_event_to_user(user, "message:new", {"m": 1}, key=uid(), receipt=True)
        assert await active.wait_exit(30) == -signal.SIGKILL
        await publisher.send_event_to_user(user, "after", None)
        got = await s.take(2, timeout=30)
        assert [(e.event, e.seq) for e in got] == [("message:new", 1), ("after", 2)]  # once
        receipt = await asyncio.wait_for(receipts.get(), 30)
    assert (receipt["seq"], receipt["event"]) == (1, "message:new")
