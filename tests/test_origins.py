"""The token cookie is sent by the browser whatever page asks for a stream: a
stream it authenticates is refused (403 origin_not_allowed) when the request's
Origin is neither the edge's own nor listed in SSEHUB_CORS_ORIGINS. A token in
the URL or a header is unaffected: a page that sends one had it already."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from tests.sse import open_stream
from tests.support import Stack, make_settings, running_edge, signed, uid

COOKIE = "sse_token"
APP = "https://app.example"


@contextlib.asynccontextmanager
async def cookie_edge(stack: Stack, **overrides: object) -> AsyncIterator[str]:
    settings = make_settings(
        stack.settings.rabbitmq_url,
        stack.settings.database_url,
        jwt_cookie=COOKIE,
        **{"cors_origins": APP, **overrides},
    )
    async with running_edge(settings) as (url, _):
        yield url


def with_cookie(user: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={signed({'sub': user})}", **headers}


async def refused(url: str, headers: dict[str, str]) -> httpx.Response:
    async with open_stream(url, None, headers=headers) as (resp, _):
        await resp.aread()
    return resp


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",  # a sandboxed frame, a file:// page
        "http://app.example",  # the listed origin's scheme matters
        "https://app.example:8443",  # and its port
        "https://app.example.evil.example",
        "garbage",
    ],
)
async def test_a_cookie_from_a_page_of_another_origin_is_403(stack: Stack, origin: str) -> None:
    async with cookie_edge(stack) as url:
        resp = await refused(url, with_cookie(uid(), Origin=origin))
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/json"
    body = orjson.loads(resp.content)
    assert body["error"] == "origin_not_allowed"
    assert "SSEHUB_CORS_ORIGINS" in body["message"]
    # nothing lets that page read the answer, let alone a stream
    assert "access-control-allow-origin" not in resp.headers


async def test_a_cookie_from_the_edges_own_or_a_listed_origin_opens_the_stream(
    stack: Stack,
) -> None:
    user = uid()
    async with cookie_edge(stack) as url:
        own = url  # http://127.0.0.1:PORT
        for origin in (own, own.upper(), own + "/", APP, "HTTPS://APP.EXAMPLE:443", None):
            headers = with_cookie(user) if origin is None else with_cookie(user, Origin=origin)
            async with open_stream(url, None, headers=headers) as (resp, client):
                assert resp.status_code == 200, origin
                assert (await client.next()).json["userId"] == user
                if origin == APP:  # the listed origin reads it with credentials
                    assert resp.headers["access-control-allow-origin"] == APP
                    assert resp.headers["access-control-allow-credentials"] == "true"


async def test_behind_a_tls_proxy_the_own_origin_is_https(stack: Stack) -> None:
    """uvicorn takes X-Forwarded-Proto from a trusted proxy (FORWARDED_ALLOW_IPS,
    127.0.0.1 by default): the page of https://<Host> is the edge's own."""
    user = uid()
    async with cookie_edge(stack, cors_origins="") as url:
        host = url.removeprefix("http://")
        page = {"Origin": f"https://{host}", "X-Forwarded-Proto": "https"}
        async with open_stream(url, None, headers=with_cookie(user, **page)) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).json["userId"] == user
        plain = await refused(url, with_cookie(user, Origin=f"https://{host}"))
        assert plain.status_code == 403  # without the proxy's word it is another origin


@pytest.mark.parametrize("how", ["query", "bearer", "x-auth-token"])
async def test_a_token_not_in_the_cookie_is_unaffected_by_the_origin(
    stack: Stack, how: str
) -> None:
    user = uid()
    async with cookie_edge(stack) as url:
        headers = {"Origin": "https://evil.example", "Cookie": f"{COOKIE}=garbage"}
        async with open_stream(url, signed({"sub": user}), how=how, headers=headers) as (
            resp,
            client,
        ):
            assert resp.status_code == 200
            assert (await client.next()).json["userId"] == user
            assert "access-control-allow-origin" not in resp.headers  # not readable there


async def test_without_a_cookie_setting_the_origin_is_not_checked(stack: Stack) -> None:
    user = uid()
    headers = {"Origin": "https://evil.example"}
    async with open_stream(stack.edge, signed({"sub": user}), headers=headers) as (resp, c):
        assert resp.status_code == 200
        assert (await c.next()).json["userId"] == user
