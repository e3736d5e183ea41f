"""The edge's HTTP surface over a real socket: auth errors, CORS, pings, probes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.sse import open_stream
from tests.support import SECRET, Stack, make_settings, running_edge, signed, uid


def b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def bad_tokens(user: str) -> dict[str, tuple[str, str]]:
    """name -> (token, expected error code)"""
    now = int(time.time())
    other = "another-secret-0123456789abcdef0123456789"
    return {
        "bad signature": (signed({"sub": user}, other), "invalid_token"),
        "expired": (signed({"sub": user, "exp": now - 60}, SECRET), "token_expired"),
        "not yet valid": (
            signed({"sub": user, "nbf": now + 3600}, SECRET),
            "token_not_yet_valid",
        ),
        "alg none": (
            b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": user}) + ".",
            "invalid_token",
        ),
        "garbage": ("not-a-jwt", "invalid_token"),
        "three dots": ("a.b.c", "invalid_token"),
        "no sub": (signed({"name": user}, SECRET), "invalid_token"),
        "no exp": (signed({"sub": user}, expiring=False), "token_lifetime"),
        "too long": (
            signed({"sub": user, "iat": now, "exp": now + 31 * 86400}),
            "token_lifetime",
        ),
    }


@pytest.mark.parametrize("case", list(bad_tokens("x")))
@pytest.mark.parametrize("how", ["query", "bearer", "x-auth-token"])
async def test_bad_tokens_get_401_json_and_no_stream(stack: Stack, case: str, how: str) -> None:
    token, code = bad_tokens(uid())[case]
    async with open_stream(stack.edge, token, how=how) as (resp, _):
        assert resp.status_code == 401
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["www-authenticate"].startswith("Bearer")
        body = orjson.loads(await resp.aread())
        assert body["error"] == code
        assert body["message"]
        assert token not in body["message"]


async def test_missing_token_is_401(stack: Stack) -> None:
    async with open_stream(stack.edge, None) as (resp, _):
        assert resp.status_code == 401
        assert orjson.loads(await resp.aread())["error"] == "missing_token"


@contextlib.asynccontextmanager
async def edge_with(stack: Stack, **overrides: object) -> AsyncIterator[str]:
    settings = make_settings(stack.settings.rabbitmq_url, stack.settings.database_url, **overrides)
    async with running_edge(settings) as (url, _):
        yield url


async def test_audience_and_issuer_when_configured(stack: Stack) -> None:
    user = uid()
    async with edge_with(stack, jwt_audience="chat", jwt_issuer="https://id.example") as url:
        good = signed({"sub": user, "aud": "chat", "iss": "https://id.example"}, SECRET)
        wrong_aud = signed({"sub": user, "aud": "other", "iss": "https://id.example"}, SECRET)
        wrong_iss = signed({"sub": user, "aud": "chat", "iss": "https://evil"}, SECRET)
        async with open_stream(url, good) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).json["userId"] == user
        for token, code in ((wrong_aud, "invalid_audience"), (wrong_iss, "invalid_issuer")):
            async with open_stream(url, token) as (resp, _):
                assert resp.status_code == 401
                assert orjson.loads(await resp.aread())["error"] == code


async def test_rs256_and_algorithm_confusion(stack: Stack) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    user = uid()
    async with edge_with(stack, jwt_algorithm="RS256", jwt_public_key=public_pem.decode()) as url:
        async with open_stream(url, signed({"sub": user}, key, "RS256")) as (resp, client):
            assert resp.status_code == 200
            assert (await client.next()).json["userId"] == user
        # HS256 signed with the public key as the shared secret: the classic confusion
        import hashlib
        import hmac

        signing_input = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64({"sub": user})
        sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        forged = signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
        async with open_stream(url, forged) as (resp, _):
            assert resp.status_code == 401
        async with open_stream(url, signed({"sub": user}, SECRET)) as (resp, _):
            assert resp.status_code == 401


async def test_pings_on_an_idle_stream(stack: Stack) -> None:
    async with (
        edge_with(stack, ping_interval=0.2) as url,
        open_stream(url, signed({"sub": uid()}, SECRET)) as (_, client),
    ):
        await client.next()
        async with asyncio.timeout(5):
            while client.comments.count("ping") < 2:
                client.comment_seen.clear()
                await client.comment_seen.wait()
        assert client.pending() == []  # pings are comments, not events


async def test_cors_lets_another_origin_open_the_stream(stack: Stack) -> None:
    origin = "https://app.example"
    async with edge_with(stack, cors_origins=origin) as url:
        token = signed({"sub": uid()}, SECRET)
        async with open_stream(url, token, headers={"Origin": origin}) as (resp, client):
            assert resp.headers["access-control-allow-origin"] == origin
            assert resp.headers["access-control-allow-credentials"] == "true"
            await client.next()
        async with httpx.AsyncClient(base_url=url) as http:
            pre = await http.options(
                "/sse/connect",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "last-event-id, authorization",
                },
            )
            assert pre.status_code == 200
            assert pre.headers["access-control-allow-origin"] == origin
            other = await http.get("/healthz", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers


async def test_any_origin_is_a_literal_star_without_credentials(stack: Stack) -> None:
    """ "*": any page may open a stream with a token it holds, and none may read
    what rides on the browser's credentials: never a reflected origin with
    Access-Control-Allow-Credentials."""
    origin = "https://evil.example"
    async with edge_with(stack, cors_origins="*") as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.get("/healthz", headers={"Origin": origin})
        assert resp.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in resp.headers
        pre = await http.options(
            "/sse/connect",
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
        )
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in pre.headers
        user = uid()
        headers = {"Origin": origin}
        async with open_stream(url, signed({"sub": user}), headers=headers) as (resp, client):
            assert resp.status_code == 200
            assert resp.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in resp.headers
            assert (await client.next()).json["userId"] == user


async def test_probes_and_metrics(stack: Stack) -> None:
    user = uid()
    async with httpx.AsyncClient(base_url=stack.edge) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        async with open_stream(stack.edge, stack.token(user)) as (_, client):
            await client.next()
            await stack.publisher.send_event_to_user(user, "m", 1)
            await client.next()
            text = (await http.get("/metrics")).text
        for name in (
            "ssehub_connections_open",
            "ssehub_events_written_total",
            "ssehub_replays_total",
            "ssehub_gap_fills_total",
            "ssehub_slow_client_closes_total",
        ):
            assert name in text


async def test_the_browser_helper_answers_head_like_get(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.edge) as http:
        got = await http.get("/ssehub.js")
        head = await http.head("/ssehub.js")
    assert (head.status_code, head.content) == (200, b"")
    for name in ("content-type", "content-length", "cache-control"):
        assert head.headers[name] == got.headers[name]
    assert int(head.headers["content-length"]) == len(got.content) > 0


async def test_the_api_description_has_the_packages_version(stack: Stack) -> None:
    from ssehub import __version__

    async with httpx.AsyncClient(base_url=stack.edge) as http:
        info = (await http.get("/openapi.json")).json()["info"]
    assert info == {"title": "ssehub edge", "version": __version__}


async def test_not_ready_edge_answers_200_with_retry_and_closes(stack: Stack) -> None:
    broken = make_settings("amqp://guest:guest@127.0.0.1:1/", stack.settings.database_url)
    from ssehub.edge.app import create_app

    from tests.support import serve

    async with serve(create_app(broken)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/readyz")).status_code == 503
            resp = await http.get("/sse/connect", params={"token": signed({"sub": "u"}, SECRET)})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.text.startswith("retry: ") and resp.text.endswith("\n\n")
        assert 750 <= int(resp.text.split()[1]) <= 2250
