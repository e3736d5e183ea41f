"""JWT authentication of SSE clients: find the token, check it, name the user.

Pure code (no web framework): the edge turns :class:`AuthError` into a 401.
Only the one configured algorithm is accepted, with a key parsed once at
start, so ``alg: none`` and HS/RS confusion fail like any bad signature.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.types import Options
from ssehub.config import Settings
from ssehub.errors import AuthError, ConfigError, InvalidMessage
from ssehub.schema import check_id

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 8192  # far above any real JWT; bounds the work done for garbage


@dataclass(frozen=True, slots=True)
class Identity:
    """What a valid token says: whose it is, and for how long (unix seconds)."""

    user_id: str
    exp: float | None = None  # None: the token never expires
    iat: float | None = None  # informational; None when absent or not a number


class TokenVerifier:
    """Checks tokens against the settings; ``verify`` returns the :class:`Identity`."""

    def __init__(self, settings: Settings) -> None:
        self._claim = settings.jwt_user_claim
        self._algorithms = [settings.jwt_algorithm]
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        # exp and nbf are checked when present; aud only when configured (a token
        # carrying one is fine otherwise). iat is informational: PyJWT would reject
        # an iat a second ahead of our clock. We check the user claim ourselves.
        self._options: Options = {
            "verify_aud": settings.jwt_audience is not None,
            "verify_iat": False,
            "verify_sub": False,
            "verify_jti": False,
        }
        self._jwt, self._key = _codec(settings)

    def verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthError("invalid_token", "The token is malformed.")
        try:
            claims = self._jwt.decode(
                token,
                self._key,  # "" when bound to the algorithm in _codec
                algorithms=self._algorithms,
                options=self._options,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.PyJWTError as exc:
            raise _auth_error(exc) from None
        value = claims.get(self._claim)
        if value is None:
            raise AuthError("invalid_token", f"The token has no {self._claim!r} claim.")
        try:
            user_id = check_id(value, self._claim)
        except InvalidMessage:
            raise AuthError(
                "invalid_token", f"The token's {self._claim!r} claim is not a valid user id."
            ) from None
        # PyJWT has checked that a present exp is a number (and not past).
        exp = claims.get("exp")
        return Identity(user_id, None if exp is None else float(exp), _number(claims.get("iat")))


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def mint_token(
    settings: Settings,
    user_id: str,
    ttl_seconds: float = 24 * 3600,
    extra: dict[str, object] | None = None,
) -> str:
    """A development token for ``user_id`` (HS* only); ``extra`` claims win over ours.

    Raises ConfigError without a usable secret, InvalidMessage for a bad user id.
    """
    alg = settings.jwt_algorithm
    if not alg.startswith("HS"):
        raise ConfigError(
            f"SSEHUB_JWT_ALGORITHM={alg}: ssehub can only mint HS* tokens "
            "(it has no private key); get tokens from your identity provider"
        )
    check_id(user_id, "user id")
    now = time.time()
    claims: dict[str, Any] = {"iat": int(now), "exp": int(now + ttl_seconds)}
    claims[settings.jwt_user_claim] = user_id
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    return _codec(settings)[0].encode(claims, "", algorithm=alg)


def _auth_error(exc: jwt.PyJWTError) -> AuthError:
    """A fixed, token-free message per failure; PyJWT's own text is not echoed."""
    missing = exc.claim if isinstance(exc, jwt.MissingRequiredClaimError) else None
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError("token_expired", "The token has expired.")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthError("token_not_yet_valid", "The token is not valid yet.")
    if isinstance(exc, jwt.InvalidAudienceError) or missing == "aud":
        return AuthError("invalid_audience", "The token is not meant for this service.")
    if isinstance(exc, jwt.InvalidIssuerError) or missing == "iss":
        return AuthError("invalid_issuer", "The token comes from an issuer that is not trusted.")
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthError("invalid_token", "The token's signature is not valid.")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return AuthError("invalid_token", "The token's signing algorithm is not accepted.")
    return AuthError("invalid_token", "The token is malformed or invalid.")


class _BoundKey(Algorithm):
    """The configured algorithm with its key prepared once (and no per-call checks)."""

    def __init__(self, inner: Algorithm, key: Any) -> None:
        self._inner = inner
        self._key = key

    def prepare_key(self, key: Any) -> Any:
        return self._key

    def sign(self, msg: bytes, key: Any) -> bytes:
        return self._inner.sign(msg, self._key)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        return self._inner.verify(msg, self._key, sig)

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError

    @staticmethod
    def from_jwk(jwk: Any) -> Any:
        raise NotImplementedError


def _codec(settings: Settings) -> tuple[jwt.PyJWT, Any]:
    """A PyJWT for the configured algorithm and the key to pass it, parsed once.

    Public API where it is as fast: ``decode(token, key=<prepared public key>)``
    costs an isinstance check more than RSA/EC verification (measured within
    1 % for RS256, issue 8). For HMAC, PyJWT re-prepares the secret on every
    call (PEM and SSH-key pattern checks: 2.1x the whole decode of HS256), and
    for a weak key it would warn on every call; so there, and for weak
    asymmetric keys, the key is bound to the algorithm instead (key: "").
    """
    alg = settings.jwt_algorithm
    inner = get_default_algorithms()[alg]
    hmac = alg.startswith("HS")
    name = "SSEHUB_JWT_SECRET" if hmac else "SSEHUB_JWT_PUBLIC_KEY"
    raw = settings.jwt_secret if hmac else settings.jwt_public_key
    if not raw:
        raise ConfigError(f"{name}: missing (required for {alg})")
    try:  # exception texts name the problem, never the key material
        key: Any = inner.prepare_key(raw)
    except (jwt.InvalidKeyError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{name}: not usable for {alg} ({exc})") from None
    if isinstance(key, RSAPrivateKey | EllipticCurvePrivateKey):
        log.warning("%s holds a private key; only its public half is used", name)
        key = key.public_key()
    weak = inner.check_key_length(key)
    if weak:
        log.warning("%s: %s", name, weak)
    elif not hmac:
        return jwt.PyJWT(), key
    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm(alg, _BoundKey(inner, key))
    codec = jwt.PyJWT()
    codec._jws = jws  # PyJWT's JWS layer; jwt/api_jwt.py swaps it the same way
    return codec, ""
