"""The ``ssehub dev`` demo page in headless chromium (issue 8): two users chat,
a reload keeps the conversation, presence, no 404s; (issue 18) any event shows
its name and data, a bad user name is explained, and the connection says
whether it is a first one, resumed, or could not resume."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from ssehub.dispatcher.main import running_dispatcher
from ssehub.edge.app import create_app
from ssehub.edge.demo import add_demo_routes
from ssehub.publisher import Publisher

from tests.browser.cdp import Browser, Tab
from tests.browser.conftest import needs_chromium
from tests.support import make_settings, rabbitmq_vhost, serve, uid

pytestmark = needs_chromium

# Resolves once ``condition`` (JS) holds, re-checked on every DOM change.
WAIT_DOM = """new Promise((resolve, reject) => {
  const check = () => { try { return (%s); } catch { return false; } };
  if (check()) return resolve(true);
  const seen = new MutationObserver(() => { if (check()) { seen.disconnect(); resolve(true); } });
  seen.observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
  setTimeout(() => { seen.disconnect(); reject(new Error('timed out')); }, %d);
})"""


@pytest.fixture(scope="module")
def demo_amqp(broker_url: str) -> Iterator[str]:
    """The demo's vhost, for tests that publish to it like a backend would."""
    with rabbitmq_vhost(broker_url) as amqp:
        yield amqp


@pytest.fixture(scope="module")
async def demo(demo_amqp: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """What ``ssehub dev`` runs: an edge with the demo routes and a dispatcher."""
    async with running_demo(demo_amqp, tmp_path_factory) as url:
        yield url


@contextlib.asynccontextmanager
async def running_demo(
    amqp: str, tmp_path_factory: pytest.TempPathFactory, **overrides: object
) -> AsyncIterator[str]:
    db = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'd.db'}"
    settings = make_settings(amqp, db, presence=True, presence_grace=0.5, **overrides)
    publisher = Publisher(amqp)

    @contextlib.asynccontextmanager
    async def with_dispatcher(_app: FastAPI) -> AsyncIterator[None]:
        async with running_dispatcher(settings):
            yield

    app = create_app(settings, extra=with_dispatcher)
    add_demo_routes(app, settings, publisher)
    try:
        async with serve(app) as url:
            await app.state.edge.node.link.supervisor.ready.wait()
            yield url
    finally:
        await publisher.close()


async def wait_dom(tab: Tab, condition: str, ms: int = 20000) -> None:
    try:
        await tab.evaluate(WAIT_DOM % (condition, ms), timeout=ms / 1000 + 10)
    except Exception as exc:
        text = await tab.evaluate("document.body.innerText")
        raise AssertionError(f"{condition}: {exc}\npage: {text}\nconsole: {tab.console}") from exc


def text_of(element: str) -> str:
    return f"document.getElementById({element!r}).textContent"


async def sign_in(browser: Browser, url: str, user: str) -> Tab:
    tab = await browser.new_tab(url)
    await tab.evaluate(
        f"document.getElementById('login-user').value = {json.dumps(user)};"
        "document.getElementById('login').requestSubmit()"
    )
    await wait_dom(tab, f"{text_of('state')} === 'open'")
    return tab


async def say(tab: Tab, text: str) -> None:
    await tab.evaluate(
        f"document.getElementById('text').value = {json.dumps(text)};"
        "document.getElementById('send').requestSubmit()"
    )


def shown(text: str) -> str:
    return f"{text_of('messages')}.includes({json.dumps(text)})"


async def test_chat_survives_a_reload(demo: str, browser: Browser) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await sign_in(browser, demo, alice)
    b = await sign_in(browser, demo, bob)
    try:
        await say(b, "hello from bob")
        await wait_dom(a, shown("hello from bob"))
        await say(a, "hi bob")
        await wait_dom(b, shown("hi bob"))
        await wait_dom(a, shown("hi bob"))  # the sender's own line, once its send returned

        await a.reload()
        # what was shown before (received and sent) is still there ...
        await wait_dom(a, f"{text_of('state')} === 'open'")
        assert await a.evaluate(shown("hello from bob"))
        assert await a.evaluate(shown("hi bob"))
        assert await a.evaluate(text_of("me")) == alice
        # away to another page and back: what was sent meanwhile is replayed, once
        await a.goto("about:blank")
        await say(b, "while you were away")
        await a.goto(demo)
        await wait_dom(a, shown("while you were away"))
        texts = await a.evaluate(
            "[...document.querySelectorAll('#messages .text')].map(e => e.textContent)"
        )
        assert texts == ["hello from bob", "hi bob", "while you were away"]
        assert await a.evaluate(text_of("connection")) == "resumed"
        assert not [c for c in a.console + b.console if c.startswith("uncaught")]
        assert [r for r in a.responses + b.responses if r[0] >= 400] == []  # no favicon 404
    finally:
        for tab in (a, b):
            await tab.close()


async def test_first_user_sees_the_second_come_online(demo: str, browser: Browser) -> None:
    first = await sign_in(browser, demo, uid("first"))
    second_user = uid("second")
    second = await sign_in(browser, demo, second_user)
    try:
        await wait_dom(first, f"{text_of('online')}.includes({json.dumps(second_user)})")
    finally:
        for tab in (first, second):
            await tab.close()


async def test_second_user_sees_who_is_already_online(demo: str, browser: Browser) -> None:
    first_user = uid("first")
    first = await sign_in(browser, demo, first_user)
    second = await sign_in(browser, demo, uid("second"))
    try:
        await wait_dom(second, f"{text_of('online')}.includes({json.dumps(first_user)})")
    finally:
        for tab in (first, second):
            await tab.close()


def rows() -> str:
    """The list as the reader sees it: one string per row."""
    return "[...document.querySelectorAll('#messages li')].map(li => li.innerText)"


async def test_any_event_shows_its_name_and_its_data(
    demo: str, demo_amqp: str, browser: Browser
) -> None:
    alice = uid("alice")
    tab = await sign_in(browser, demo, alice)
    try:
        async with Publisher(demo_amqp) as backend:
            # the README's `ssehub publish user alice message:new '{"text":"hi"}'`
            await backend.send_event_to_user(alice, "message:new", {"text": "hi"})
            await wait_dom(tab, shown('{"text":"hi"}'))
            await backend.send_event_to_user(alice, "notification", {"unread": 3})
            await wait_dom(tab, shown('{"unread":3}'))
            # a name the page does not listen to: the next one says what it missed
            await backend.send_event_to_user(alice, "invoice:paid", {"id": 7})
            await backend.send_event_to_user(alice, "announcement", "maintenance at 6")
            await wait_dom(tab, shown('"maintenance at 6"'))
        shown_rows = await tab.evaluate(rows())
        assert not [r for r in shown_rows if "undefined" in r], shown_rows
        events = await tab.evaluate(
            "[...document.querySelectorAll('#messages li.event')]"
            ".map(li => [li.querySelector('.from').textContent.trim(),"
            " li.querySelector('.text').textContent])"
        )
        assert events == [
            ["message:new", '{"text":"hi"}'],
            ["notification", '{"unread":3}'],
            ["announcement", '"maintenance at 6"'],
        ]
        missed = [r for r in shown_rows if r.startswith("#3 not shown")]
        assert missed == ["#3 not shown: sent under an event name this page does not listen to"]
    finally:
        await tab.close()


async def test_a_bad_user_name_is_explained(demo: str, browser: Browser) -> None:
    tab = await browser.new_tab(demo)
    try:
        await tab.evaluate(
            "document.getElementById('login-user').value = 'alice smith';"
            "document.getElementById('login').requestSubmit()"
        )
        await wait_dom(tab, f"{text_of('error')} !== ''")
        assert await tab.evaluate(text_of("error")) == (
            "Sign-in failed: A user name cannot contain spaces (try 'alice_smith')."
        )
        assert await tab.evaluate("document.getElementById('app').hidden")
    finally:
        await tab.close()


async def test_the_connection_says_first_resumed_or_could_not_resume(
    demo: str, browser: Browser
) -> None:
    tab = await sign_in(browser, demo, uid("carol"))
    try:
        connection = text_of("connection")
        await wait_dom(tab, f"{connection} === 'first connection'")
        assert "first connection" in await tab.evaluate(text_of("messages"))
        assert "not recovered" not in await tab.evaluate("document.body.innerText")

        await tab.reload()  # the page keeps its cursor: the stream resumes from it
        await wait_dom(tab, f"{connection} === 'resumed'")

        # a cursor the store does not know (older than the history kept, or
        # from another database): the page starts its list again
        await tab.evaluate("sessionStorage.setItem('ssehub.cursor', '999999')")
        await tab.reload()
        await wait_dom(tab, f"{connection} === 'could not resume, reloaded'")
        notes = await tab.evaluate(rows())
        assert len(notes) == 1 and notes[0].startswith("could not resume from #999999"), notes
    finally:
        await tab.close()


async def test_the_page_answers_head_like_get(demo: str) -> None:
    async with httpx.AsyncClient(base_url=demo) as http:
        got, head = await http.get("/"), await http.head("/")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == got.headers["content-type"] == "text/html; charset=utf-8"


async def test_chat_without_tokens_in_urls(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """SSEHUB_QUERY_TOKENS=false (as ``ssehub dev`` sets it up: the demo's login
    sets the token cookie): the page chats, and no URL it asks for carries a token."""
    with rabbitmq_vhost(broker_url) as amqp:
        async with running_demo(
            amqp, tmp_path_factory, query_tokens=False, jwt_cookie="ssehub_token"
        ) as url:
            alice, bob = uid("alice"), uid("bob")
            a = await sign_in(browser, url, alice)
            b = await sign_in(browser, url, bob)  # the cookie is bob's now
            try:
                await say(b, "hello from bob")
                await wait_dom(a, shown("hello from bob"))
                await say(a, "hi bob")
                await wait_dom(b, shown("hi bob"))
                await a.reload()  # alice's stream again: her cookie is set anew first
                await wait_dom(a, f"{text_of('state')} === 'open'")
                await say(b, "still there?")
                await wait_dom(a, shown("still there?"))
                assert await a.evaluate(text_of("me")) == alice
                urls = [u for _, u in a.responses + b.responses]
                assert any("/sse/connect" in u for u in urls)
                assert not [u for u in urls if "token=" in u]
                assert [r for r in a.responses + b.responses if r[0] >= 400] == []
            finally:
                for tab in (a, b):
                    await tab.close()
