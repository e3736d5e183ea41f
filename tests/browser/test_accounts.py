"""ssehub.js keeps users apart: tabs share a stream only with tabs of the same
user (known from the `user` option, the token's `sub`, or, with a cookie, the
edge's word), and a leader whose stream turns out to be another user's (an
account switch under it) shows nothing of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.browser.cdp import Browser, Tab
from tests.browser.conftest import needs_chromium
from tests.browser.test_helper import EVENT, close_tabs, open_tabs, streams_of, until
from tests.conftest import make_stack
from tests.support import Stack, rabbitmq_vhost, uid

pytestmark = needs_chromium
COOKIE = "sse_token"
# connect() as an app that names neither the key nor the user
BY_TOKEN = {"key": None, "user": None}


async def send(stack: Stack, user: str, count: int) -> None:
    for n in range(count):
        await stack.publisher.send_event_to_user(user, EVENT, {"n": n, "to": user})


async def whose(tab: Tab) -> list[str]:
    got: list[str] = await tab.evaluate("harness.to")
    return got


async def test_tabs_of_two_users_on_one_page_url_never_share(
    stack: Stack, browser: Browser
) -> None:
    """No `key`, no `user`: a token() function's token tells the user (its
    `sub`, read in the tab); before, both users' tabs shared the URL's stream."""
    alice, bob = uid("alice"), uid("bob")
    tabs = []
    try:
        for user in (alice, bob, alice):
            tabs += await open_tabs(browser, stack.edge, user, 1, options=BY_TOKEN)
        leaders = [await t.evaluate("harness.hub.leader") for t in tabs]
        assert leaders == [True, True, False]  # alice's second tab follows her first
        await send(stack, alice, 3)
        await send(stack, bob, 2)
        await until(tabs[0], "harness.to.length >= 3")
        await until(tabs[2], "harness.to.length >= 3")
        await until(tabs[1], "harness.to.length >= 2")
        assert [await whose(t) for t in tabs] == [[alice] * 3, [bob] * 2, [alice] * 3]
        assert (streams_of(stack, alice), streams_of(stack, bob)) == (1, 1)
        # the token fetched to learn the user is the first stream's: one call a tab
        assert [await t.evaluate("harness.tokenCalls") for t in tabs] == [1, 1, 1]
    finally:
        await close_tabs(tabs)


@pytest.fixture(scope="module")
async def renewing(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """An edge that warns of a token's expiry 2 s ahead (a renewal every 2 s)."""
    db = f"sqlite:///{tmp_path_factory.mktemp('accounts') / 'a.db'}"
    with rabbitmq_vhost(broker_url) as amqp:
        async with make_stack(amqp, db, edges=1, token_warning=2) as stack:
            yield stack


async def test_a_leader_whose_renewed_token_is_another_users_shows_none_of_it(
    renewing: Stack, browser: Browser
) -> None:
    """The account switched under two tabs of alice (their backend now signs
    bob's tokens): at the next renewal the leader's stream is bob's. Neither tab
    shows any of it; both stop, saying why."""
    stack = renewing
    alice, bob = uid("alice"), uid("bob")
    tabs = await open_tabs(browser, stack.edge, alice, 2, ttl=4, options=BY_TOKEN)
    try:
        await send(stack, alice, 2)
        for tab in tabs:
            await until(tab, "harness.to.length >= 2")
        for tab in tabs:
            await tab.evaluate(f"harness.as = {json.dumps(bob)}")
        sending = asyncio.create_task(send(stack, bob, 30))
        for tab in tabs:
            await until(tab, "harness.statuses.includes('closed:user_changed')")
        await sending
        await send(stack, bob, 1)
        assert [await whose(t) for t in tabs] == [[alice] * 2, [alice] * 2]
        for tab in tabs:
            users = [c["userId"] for c in await tab.evaluate("harness.connected")]
            assert set(users) == {alice}, users
        assert streams_of(stack, bob) == 0  # nothing left open for bob either
    finally:
        await close_tabs(tabs)


@pytest.fixture(scope="module")
async def cookies(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """An edge that takes the token from a cookie."""
    db = f"sqlite:///{tmp_path_factory.mktemp('cookies') / 'c.db'}"
    with rabbitmq_vhost(broker_url) as amqp:
        async with make_stack(amqp, db, edges=1, jwt_cookie=COOKIE) as stack:
            yield stack


async def test_with_a_cookie_a_tab_asks_the_edge_whose_it_is(
    cookies: Stack, browser: Browser
) -> None:
    """The helper cannot read an HttpOnly cookie: it learns the user from a
    stream the edge opens for it. Bob signs in while alice's tab holds her
    stream (one cookie for the whole browser): his tab gets a stream of its own,
    and neither sees the other's events."""
    stack = cookies
    alice, bob = uid("alice"), uid("bob")
    options = {**BY_TOKEN, "cookie": True}
    tabs = await open_tabs(browser, stack.edge, alice, 2, options=options, cookie=COOKIE)
    try:
        # bob signs in, in a new tab: the browser's cookie is his from now on
        tabs += await open_tabs(browser, stack.edge, bob, 1, options=options, cookie=COOKIE)
        leaders = [await t.evaluate("harness.hub.leader") for t in tabs]
        assert leaders == [True, False, True]
        await send(stack, alice, 3)
        await send(stack, bob, 2)
        await until(tabs[1], "harness.to.length >= 3")
        await until(tabs[2], "harness.to.length >= 2")
        assert [await whose(t) for t in tabs] == [[alice] * 3, [alice] * 3, [bob] * 2]
        assert (streams_of(stack, alice), streams_of(stack, bob)) == (1, 1)
    finally:
        await close_tabs(tabs)
