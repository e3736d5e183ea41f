"""ssehub.js in headless chromium against the real stack: tabs of one browser
share one stream, survive the leader tab's close, and renew tokens.

The tabs open the edge's own ``/healthz`` (any page of the edge's origin does:
Web Locks and BroadcastChannel are per origin) and import ``/ssehub.js`` from
there, so no test-only route is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser.cdp import Browser, Tab
from tests.browser.conftest import needs_chromium
from tests.conftest import make_stack
from tests.sse import open_stream
from tests.support import SECRET, Stack, rabbitmq_vhost, uid

pytestmark = needs_chromium
HARNESS = (Path(__file__).parent / "harness.js").read_text()
EVENT = "test:event"
WAIT_MS = 20000


async def open_tabs(
    browser: Browser,
    edge: str,
    user: str,
    count: int,
    ttl: int = 3600,
    ttls: tuple[int | None, ...] = (),
    connected: bool = True,
    options: dict[str, object] | None = None,
    cookie: str | None = None,
) -> list[Tab]:
    """``count`` tabs running ssehub.js for ``user`` (see harness.js for the
    token lifetimes, connect()'s ``options`` and the ``cookie``), once each has
    been told of the stream when ``connected``."""
    tabs = []
    for _ in range(count):
        tab = await browser.new_tab(f"{edge}/healthz")
        await tab.evaluate(HARNESS)
        args = {
            "user": user,
            "secret": SECRET,
            "ttl": ttl,
            "event": EVENT,
            "ttls": ttls,
            "options": options or {},
            "cookie": cookie,
        }
        await tab.evaluate(f"harness.start({json.dumps(args)})")
        tabs.append(tab)
    for tab in tabs if connected else ():
        await until(tab, "harness.connected.length >= 1")
    return tabs


async def until(tab: Tab, condition: str, ms: int = WAIT_MS) -> None:
    try:
        await tab.evaluate(f"harness.until(() => {condition}, {ms})", timeout=ms / 1000 + 10)
    except Exception as exc:
        raise AssertionError(f"{condition}: {exc}\nconsole: {tab.console}") from exc


async def log(tab: Tab) -> list[list[int]]:
    result: list[list[int]] = await tab.evaluate("harness.log")
    return result


def streams_of(stack: Stack, user: str) -> int:
    return sum(
        1 for app in stack.apps for s in app.state.edge.registry.streams() if s.user_id == user
    )


async def publish(stack: Stack, user: str, numbers: range, pace: float = 0.0) -> None:
    for n in numbers:
        await stack.publisher.send_event_to_user(user, EVENT, {"n": n})
        if pace:
            await asyncio.sleep(pace)  # wait-ok: spreads the events over a hand-over/renewal


def assert_exactly_once_in_order(got: list[list[int]], numbers: range) -> None:
    assert [n for _, n in got] == list(numbers)
    ids = [i for i, _ in got]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # consecutive, none twice


async def the_leader(tabs: list[Tab]) -> Tab:
    leaders = [t for t in tabs if await t.evaluate("harness.hub.leader")]
    assert len(leaders) == 1
    return leaders[0]


async def close_tabs(tabs: list[Tab]) -> None:
    for tab in tabs:
        with contextlib.suppress(Exception):
            await tab.close()


async def test_serves_the_module(stack: Stack) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        res = await client.get(f"{stack.edge}/ssehub.js")
    assert res.status_code == 200
    assert res.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "max-age" in res.headers["cache-control"]
    assert "export function connect" in res.text


async def test_three_tabs_share_one_stream(stack: Stack, browser: Browser) -> None:
    user = uid("tabs")
    tabs = await open_tabs(browser, stack.edge, user, 3)
    try:
        leaders = [await tab.evaluate("harness.hub.leader") for tab in tabs]
        assert leaders == [True, False, False]
        await publish(stack, user, range(5))
        for tab in tabs:
            await until(tab, "harness.log.length >= 5")
        logs = [await log(tab) for tab in tabs]
        assert_exactly_once_in_order(logs[0], range(5))
        assert logs[1] == logs[0] and logs[2] == logs[0]
        assert streams_of(stack, user) == 1
        # every tab was told about the stream, and none was asked to reload
        for tab in tabs:
            connected = await tab.evaluate("harness.connected")
            assert connected[0]["userId"] == user
    finally:
        await close_tabs(tabs)


async def test_leader_closes_and_another_tab_takes_over(stack: Stack, browser: Browser) -> None:
    user = uid("handover")
    tabs = await open_tabs(browser, stack.edge, user, 3)
    try:
        await publish(stack, user, range(3))
        for tab in tabs:
            await until(tab, "harness.log.length >= 3")
        leader = await the_leader(tabs)
        rest = [t for t in tabs if t is not leader]

        sending = asyncio.create_task(publish(stack, user, range(3, 13), pace=0.05))
        closed_at = time.time()
        await leader.close()
        waits = [asyncio.create_task(until(t, "harness.leaderAt !== null", 5000)) for t in rest]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await next(iter(done))
        leader_at = [await t.evaluate("harness.leaderAt") for t in rest]
        new = [at for at in leader_at if at is not None]
        assert len(new) == 1, leader_at
        assert new[0] / 1000 - closed_at < 1.0

        await sending
        for tab in rest:
            await until(tab, "harness.log.length >= 13")
        for tab in rest:
            assert_exactly_once_in_order(await log(tab), range(13))
            # the new leader's stream resumed where it was: nobody reloads
            connected = await tab.evaluate("harness.connected")
            assert len(connected) >= 2 and connected[-1]["recovered"] is True, connected
        async with asyncio.timeout(10):
            while streams_of(stack, user) != 1:
                await asyncio.sleep(0.05)  # wait-ok: the old stream ends when its socket does
    finally:
        await close_tabs(tabs)


async def test_refused_token_is_renewed(stack: Stack, browser: Browser) -> None:
    user = uid("refused")
    # the first token has expired already: the edge answers 401, the helper
    # reads that status and asks token() for a new one
    (tab,) = await open_tabs(browser, stack.edge, user, 1, ttls=(-60,))
    try:
        assert await tab.evaluate("harness.tokenCalls") == 2
        await publish(stack, user, range(2))
        await until(tab, "harness.log.length >= 2")
        assert_exactly_once_in_order(await log(tab), range(2))
        assert streams_of(stack, user) == 1
    finally:
        await close_tabs([tab])


async def test_token_callback_failure_stops_every_tab(stack: Stack, browser: Browser) -> None:
    user = uid("signedout")
    tabs = await open_tabs(browser, stack.edge, user, 2, ttls=(None,), connected=False)
    try:
        for tab in tabs:
            await until(tab, "harness.statuses.includes('closed:token: signed out')")
        assert await tabs[0].evaluate("harness.tokenCalls") == 1
        assert await tabs[1].evaluate("harness.tokenCalls") == 0  # it did not try in turn
        assert streams_of(stack, user) == 0
    finally:
        await close_tabs(tabs)


@pytest.fixture(scope="module")
async def limits(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """An edge that warns of a token's expiry 2 s ahead and allows 2 streams a user."""
    db = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'b.db'}"
    with rabbitmq_vhost(broker_url) as amqp:
        async with make_stack(amqp, db, edges=1, token_warning=2, max_streams_per_user=2) as stack:
            yield stack


async def test_token_renewed_without_a_gap(limits: Stack, browser: Browser) -> None:
    stack = limits
    user = uid("renew")
    # 4 s tokens, warned 2 s before: three renewals while the events flow
    tabs = await open_tabs(browser, stack.edge, user, 2, ttl=4)
    try:
        await publish(stack, user, range(40), pace=0.2)
        for tab in tabs:
            await until(tab, "harness.log.length >= 40")
        for tab in tabs:
            assert_exactly_once_in_order(await log(tab), range(40))
        leader = await the_leader(tabs)
        state = await leader.evaluate("harness.state()")
        assert state["expiring"] >= 2 and state["tokenCalls"] >= 3, state
        assert not any(s.startswith("closed") for s in state["statuses"]), state
    finally:
        await close_tabs(tabs)


async def test_too_many_streams_stops_without_retrying(limits: Stack, browser: Browser) -> None:
    stack = limits
    user = uid("capped")
    token = stack.token(user)
    async with open_stream(stack.edge, token), open_stream(stack.edge, token):
        # the user's two streams are open elsewhere: the helper's is refused with
        # 429 and it stops, in every tab, instead of retrying (or kicking another)
        tabs = await open_tabs(browser, stack.edge, user, 2, connected=False)
        try:
            for tab in tabs:
                await until(tab, "harness.statuses.includes('closed:too_many_streams')")
            assert await tabs[1].evaluate("harness.tokenCalls") == 0
            assert streams_of(stack, user) == 2
        finally:
            await close_tabs(tabs)
