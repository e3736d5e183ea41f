"""Building tokens by hand for the auth tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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


def hs(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def auth_error(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert token not in info.value.message or len(token) < 8
    return info.value
