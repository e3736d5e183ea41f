"""Who may hold a stream, and for how long: the token cookie (with CORS), and
token lifetimes on open streams (``token:expiring``, ``token:expired``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import jwt
import orjson
import pytest
from ssehub.edge.app import create_app
from ssehub.errors import ConfigError

from tests.sse import open_stream
from tests.support import SECRET, Stack, make_settings, running_edge, uid

COOKIE = "sse_token"
ORIGIN = "https://app.example"


@contextlib.asynccontextmanager
async def edge_with(stack: Stack, **overrides: object) -> AsyncIterator[str]:
    settings = make_settings(stack.settings.rabbitmq_url, stack.settings.database_url, **overrides)
    async with running_edge(settings) as (url, _):
        yield url


def token(user: str, ttl: float | None = 3600) -> str:
    claims: dict[str, object] = {"sub": user, "iat": int(time.time())}
    if ttl is not None:
        claims["exp"] = int(time.time() + ttl)
    return jwt.encode(claims, SECRET, "HS256")


# -- the token cookie -----------------------------------------------------------


async def test_cookie_opens_a_cross_origin_stream_like_eventsource(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """``new EventSource(url, {withCredentials: true})`` from another origin: no
    custom header, the browser adds Origin and the cookie."""
    caplog.set_level(logging.DEBUG)
    user = uid()
    tok = token(user)
    async with edge_with(stack, jwt_cookie=COOKIE, cors_origins=ORIGIN) as url:
        headers = {
            "Origin": ORIGIN,
            "Accept": "text/event-stream",
            "Cookie": f"theme=dark; {COOKIE}={tok}; lang=en",
        }
        async with open_stream(url, None, headers=headers) as (resp, client):
            assert resp.status_code == 200
            assert resp.headers["access-control-allow-origin"] == ORIGIN  # never "*"
            assert resp.headers["access-control-allow-credentials"] == "true"
            assert "origin" in resp.headers["vary"].lower()
            ev = await client.next()
            assert ev.event == "connected" and ev.json["userId"] == user
            await stack.publisher.send_event_to_user(user, "message:new", {"n": 1})
            assert (await client.next()).event == "message:new"
        # a refused cookie token gets the usual 401, CORS headers included (so the
        # page can read it)
        bad = {"Origin": ORIGIN, "Cookie": f"{COOKIE}={token(user, ttl=-60)}"}
        async with open_stream(url, None, headers=bad) as (resp, _):
            assert resp.status_code == 401
            assert resp.headers["access-control-allow-origin"] == ORIGIN
            assert orjson.loads(await resp.aread())["error"] == "token_expired"
    # the cookie (its value) reached no log record, whatever its level
    assert tok not in caplog.text
    assert all(tok not in r.getMessage() for r in caplog.records)


async def test_any_origin_with_a_cookie_stops_the_edge_at_start(stack: Stack) -> None:
    settings = make_settings(
        stack.settings.rabbitmq_url,
        stack.settings.database_url,
        jwt_cookie=COOKIE,
        cors_origins="*",
    )
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    assert str(info.value) == (
        "SSEHUB_CORS_ORIGINS=* cannot go with SSEHUB_JWT_COOKIE: any web page could read a "
        "signed-in user's stream; list the origins that may open streams"
    )


async def test_other_sources_win_over_the_cookie(stack: Stack) -> None:
    cookie_user, query_user = uid(), uid()
    async with edge_with(stack, jwt_cookie=COOKIE) as url:
        headers = {"Cookie": f"{COOKIE}={token(cookie_user)}"}
        async with open_stream(url, token(query_user), headers=headers) as (_, client):
            assert (await client.next()).json["userId"] == query_user


async def test_cookie_is_ignored_unless_configured(stack: Stack) -> None:
    headers = {"Cookie": f"{COOKIE}={token(uid())}"}
    async with open_stream(stack.edge, None, headers=headers) as (resp, _):
        assert resp.status_code == 401
        assert orjson.loads(await resp.aread())["error"] == "missing_token"


@pytest.mark.parametrize("value", ["", "garbage", '"unterminated'])
async def test_bad_cookie_is_401(stack: Stack, value: str) -> None:
    async with edge_with(stack, jwt_cookie=COOKIE) as url:
        headers = {"Cookie": f"{COOKIE}={value}"}
        async with open_stream(url, None, headers=headers) as (resp, _):
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert orjson.loads(await resp.aread())["error"] in {"missing_token", "invalid_token"}


def test_a_logged_cookie_header_is_redacted() -> None:
    from ssehub.logs import RedactTokens

    tok = token("u1")
    record = logging.LogRecord(
        "ssehub.edge", logging.INFO, __file__, 1, "headers: %s", (f"cookie: {COOKIE}={tok}",), None
    )
    RedactTokens().filter(record)
    assert tok not in record.getMessage()


# -- SSEHUB_QUERY_TOKENS=false ------------------------------------------------------


async def refused_in_the_url(url: str, tok: str, **kw: object) -> None:
    async with open_stream(url, tok, **kw) as (resp, _):  # type: ignore[arg-type]
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Bearer error="query_token_disabled"'
        assert resp.headers["content-type"] == "application/json"
        body = orjson.loads(await resp.aread())
        assert body["error"] == "query_token_disabled"
        assert "URL" in body["message"] and tok not in body["message"]


async def test_without_query_tokens_a_token_in_the_url_is_refused(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = uid()
    tok = token(user)
    async with edge_with(stack, query_tokens=False, jwt_cookie=COOKIE) as url:
        await refused_in_the_url(url, tok)
        # with the token in a header too: still refused, the URL carried one
        await refused_in_the_url(url, tok, headers={"Authorization": f"Bearer {tok}"})
        await refused_in_the_url(url, tok, headers={"Cookie": f"{COOKIE}={tok}"})
        # an empty ?token= is the parameter all the same ...
        await stack.publisher.send_event_to_user(user, "n", 1)  # (published while refused)
        async with open_stream(url, "", headers={"X-Auth-Token": tok}) as (resp, _):
            assert resp.status_code == 401
            assert orjson.loads(await resp.aread())["error"] == "query_token_disabled"
        # ... while other parameters of the URL are fine
        async with open_stream(
            url, None, headers={"X-Auth-Token": tok}, last_event_id="0", last_id_query=True
        ) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).json["recovered"] is True
        # headers and the cookie open streams as before, and nothing was lost
        for how in ({"Authorization": f"Bearer {tok}"}, {"Cookie": f"{COOKIE}={tok}"}):
            async with open_stream(url, None, headers=how, last_event_id="0") as (resp, client):
                assert resp.status_code == 200
                assert (await client.next()).event == "connected"
                replayed = await client.next()
                assert (replayed.seq, replayed.event, replayed.json) == (1, "n", 1)
    # the refused URLs' tokens reached none of the edge's log records
    edge_records = [r for r in caplog.records if r.name.startswith("ssehub")]
    assert any("query_token_disabled" in r.getMessage() for r in edge_records)
    assert all(tok not in r.getMessage() for r in edge_records)


# -- token lifetime ---------------------------------------------------------------


async def test_warning_then_expiry_closes_the_stream(stack: Stack) -> None:
    user = uid()
    exp = int(time.time()) + 4
    tok = jwt.encode({"sub": user, "exp": exp}, SECRET, "HS256")
    async with edge_with(stack, token_warning=2) as url, open_stream(url, tok) as (_, client):
        assert (await client.next()).event == "connected"
        expiring = await client.next()
        at = time.time()
        assert expiring.event == "token:expiring"
        assert expiring.id is None  # ephemeral
        assert expiring.json == {"expiresAt": exp}
        assert exp - 2 - 0.05 <= at <= exp - 2 + 2.0  # about a second's precision
        expired = await client.next()
        at = time.time()
        assert (expired.event, expired.id) == ("token:expired", None)
        assert exp - 0.05 <= at <= exp + 2.0
        with pytest.raises(EOFError):  # and the stream is closed
            await client.next()
        assert client.last_id == "0"  # so a client resumes where it was


async def test_less_left_than_the_warning_warns_after_connected_and_the_replay(
    stack: Stack,
) -> None:
    user = uid()
    async with open_stream(stack.edge, stack.token(user)) as (_, client):
        assert (await client.next()).event == "connected"
        await stack.publisher.send_event_to_user(user, "message:new", {"n": 1})
        assert (await client.until(lambda e: e.event == "message:new"))[-1].seq == 1
    exp = int(time.time()) + 3
    tok = jwt.encode({"sub": user, "exp": exp}, SECRET, "HS256")
    async with open_stream(stack.edge, tok, last_event_id="0") as (_, client):
        names = [(e.event, e.id) for e in await client.take(3)]
        assert names == [("connected", "0"), ("message:new", "1"), ("token:expiring", None)]
        assert (await client.next(timeout=10)).event == "token:expired"
        with pytest.raises(EOFError):
            await client.next()


@pytest.mark.parametrize("left", [1.5, 0.4])
async def test_a_fractional_exp_is_on_time(stack: Stack, left: float) -> None:
    """exp with a fraction: accepted until exp (PyJWT's whole seconds refused
    exp = now + 0.4 more often than not), and the stream ends at exp, not up to a
    second or two later; then the token is refused."""
    user = uid()
    exp = time.time() + left
    tok = jwt.encode({"sub": user, "exp": exp}, SECRET, "HS256")
    async with open_stream(stack.edge, tok) as (resp, client):
        assert resp.status_code == 200
        assert (await client.next()).event == "connected"
        expiring = await client.next()  # less than the warning left: at once
        assert (expiring.event, expiring.json) == ("token:expiring", {"expiresAt": exp})
        expired = await client.next(timeout=5)
        at = time.time()
        assert expired.event == "token:expired"
        assert exp <= at <= exp + 0.5, at - exp
        with pytest.raises(EOFError):
            await client.next()
    async with open_stream(stack.edge, tok) as (resp, _):
        assert resp.status_code == 401
        assert orjson.loads(await resp.aread())["error"] == "token_expired"


@pytest.mark.parametrize("how", ["query", "bearer", "cookie"])
async def test_a_token_without_exp_or_living_too_long_is_refused(stack: Stack, how: str) -> None:
    user = uid()
    now = int(time.time())
    week = jwt.encode({"sub": user, "iat": now, "exp": now + 7 * 86400}, SECRET, "HS256")
    async with edge_with(stack, jwt_cookie=COOKIE, max_token_lifetime=86400) as url:
        for tok, said in ((token(user, ttl=None), "has no expiry"), (week, "lives too long")):
            cookie = {"Cookie": f"{COOKIE}={tok}"}
            async with (
                open_stream(url, None, headers=cookie)
                if how == "cookie"
                else open_stream(url, tok, how=how)
            ) as (resp, _):
                body = orjson.loads(await resp.aread())
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"] == 'Bearer error="token_lifetime"'
            assert body["error"] == "token_lifetime"
            assert said in body["message"] and "at most 1 day after" in body["message"]
        async with open_stream(url, token(user, ttl=86400)) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).event == "connected"


async def test_cookie_stream_resumes_with_a_renewed_cookie(stack: Stack) -> None:
    """The browser sends the refreshed cookie on its reconnect: the stream resumes."""
    user = uid()
    async with edge_with(stack, jwt_cookie=COOKIE, token_warning=1) as url:
        exp = int(time.time()) + 2
        first = jwt.encode({"sub": user, "exp": exp}, SECRET, "HS256")
        async with open_stream(url, None, headers={"Cookie": f"{COOKIE}={first}"}) as (_, c):
            assert (await c.next()).event == "connected"
            await stack.publisher.send_event_to_user(user, "message:new", {"n": 1})
            await c.until(lambda e: e.event == "token:expired")
            last = c.last_id
        assert last is not None
        await stack.publisher.send_event_to_user(user, "message:new", {"n": 2})
        headers = {"Cookie": f"{COOKIE}={token(user)}"}
        async with open_stream(url, None, headers=headers, last_event_id=last) as (_, c):
            got = await c.until(lambda e: e.event == "message:new" and e.json == {"n": 2})
            assert got[0].json["recovered"] is True
