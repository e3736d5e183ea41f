"""``control`` operations across two edges: disconnect, revoke (logout, bans)."""

from __future__ import annotations

import time

from tests.sse import open_stream
from tests.support import Stack, uid


async def test_disconnect_closes_every_stream_of_the_user_on_every_edge(stack: Stack) -> None:
    user, other = uid(), uid()
    async with (
        open_stream(stack.edges[0], stack.token(user)) as (_, a),
        open_stream(stack.edges[1], stack.token(user)) as (_, b),
        open_stream(stack.edges[0], stack.token(other)) as (_, o),
    ):
        for s in (a, b, o):
            await s.next()
        await stack.publisher.disconnect_user(user, "moderated")
        for s in (a, b):
            ev = await s.next()
            assert (ev.event, ev.json, ev.id) == ("disconnected", {"reason": "moderated"}, None)
            await s.ended.wait()
        await stack.publisher.send_event_to_user(other, "still", None)
        assert (await o.next()).event == "still"  # nobody else was touched
    # the user may come back (the token was not revoked)
    async with open_stream(stack.edge, stack.token(user)) as (resp, c):
        assert resp.status_code == 200
        await c.next()


async def test_revoke_refuses_older_tokens_and_closes_their_streams(stack: Stack) -> None:
    user = uid()
    old = stack.token(user, extra={"iat": int(time.time()) - 60})
    async with (
        open_stream(stack.edges[0], old) as (_, a),
        open_stream(stack.edges[1], old) as (_, b),
    ):
        await a.next()
        await b.next()
        await stack.publisher.send_event_to_user(user, "before", None)
        assert (await a.next()).seq == 1
        await stack.publisher.revoke_tokens(user)
        for s in (a, b):
            ev = await s.until(lambda e: e.event == "disconnected")
            assert ev[-1].json == {"reason": "token_revoked"}
            await s.ended.wait()
    for edge in stack.edges:  # every edge refuses the old token now, from the store
        async with open_stream(edge, old) as (resp, _):
            assert resp.status_code == 401
            await resp.aread()
            assert resp.json()["error"] == "token_revoked"
            assert "token_revoked" in resp.headers["www-authenticate"]
    fresh = stack.token(user, extra={"iat": int(time.time()) + 1})
    async with open_stream(stack.edge, fresh, last_event_id="0") as (resp, c):
        assert resp.status_code == 200
        await c.next()
        assert (await c.next()).event == "before"  # history is intact


async def test_a_token_without_iat_is_covered_by_any_revoke(stack: Stack) -> None:
    user = uid()
    await stack.publisher.revoke_tokens(user, before=time.time() - 3600)
    await stack.publisher.send_event_to_user(user, "sync", None)  # the revoke is committed
    no_iat = stack.token(user, extra={"iat": None})
    async with open_stream(stack.edge, stack.token(user)) as (resp, _):
        assert resp.status_code == 200
    async with open_stream(stack.edge, no_iat) as (resp, _):
        await resp.aread()
        assert (resp.status_code, resp.json()["error"]) == (401, "token_revoked")
