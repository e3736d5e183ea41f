"""Building tokens by hand for the auth tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from ssehub.config import Settings
from ssehub.edge.auth import TokenVerifier
from ssehub.errors import AuthError

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # 49 bytes: no key-length warning
OTHER_SECRET = "another-secret-0123456789-abcdefghijklmnopqrstuv"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET, **overrides}
    return Settings(_env_file=None, **values)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_token(header: dict[str, Any], payload: object, key: bytes | None) -> str:
    """A compact JWS built without PyJWT: HS256 with ``key``, or no signature."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def hs(
    payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256", *, expiring: bool = True
) -> str:
    """``payload`` signed, with an ``exp`` an hour from now unless it has one
    (``expiring=False``: none, which the edge refuses as ``token_lifetime``)."""
    claims = {"exp": int(time.time()) + 3600, **payload} if expiring else payload
    return jwt.encode(claims, secret, algorithm=alg)


def soon() -> int:
    """An ``exp`` for hand-built tokens: an hour from now."""
    return int(time.time()) + 3600


def auth_error(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert token not in info.value.message or len(token) < 8
    return info.value
