"""JWT authentication of SSE clients: find the token, check it, name the user.

Pure code (no web framework): the edge turns :class:`AuthError` into a 401.
Only the one configured algorithm is accepted, with a key parsed once at
start, so ``alg: none`` and HS/RS confusion fail like any bad signature.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import Algorithm, get_default_algorithms
from ssehub.config import MIN_HMAC_SECRET_BYTES, Settings
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
        self._max_lifetime = settings.max_token_lifetime
        self._jws = _jws(settings)

    def verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthError("invalid_token", "The token is malformed.")
        try:
            # the signature (and the algorithm, which must be the configured one)
            payload = self._jws.decode(token, "", algorithms=self._algorithms)
            claims = orjson.loads(payload)
        except (jwt.PyJWTError, orjson.JSONDecodeError) as exc:
            raise _auth_error(exc) from None
        if not isinstance(claims, dict):
            raise AuthError("invalid_token", "The token's claims are not a JSON object.")
        # The claims, as PyJWT would check them (nbf, exp, iss, aud, in that order)
        # but with exp and nbf to the fraction of a second: PyJWT truncates them to
        # whole seconds, so exp = t + 0.5 expired at t. exp and nbf are checked when
        # present; aud only when configured (a token carrying one is fine
        # otherwise); iat is informational (a clock a second ahead of ours must not
        # lock users out).
        now = time.time()
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise AuthError("token_not_yet_valid", "The token is not valid yet.")
        exp = _numeric_date(claims, "exp")
        if exp is not None and exp <= now - self._leeway:
            raise AuthError("token_expired", "The token has expired.")
        iat = _number(claims.get("iat"))
        # No token lives for ever: a stolen one, or one whose revoke has been
        # forgotten (a revoke is kept SSEHUB_MAX_TOKEN_LIFETIME), expires.
        if exp is None or exp - (now if iat is None else iat) > self._max_lifetime:
            limit = duration(self._max_lifetime)
            raise AuthError(
                "token_lifetime",
                "The token has no expiry ('exp')" + _MUST_EXPIRE.format(limit)
                if exp is None
                else "The token lives too long" + _MUST_EXPIRE.format(limit),
            )
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise AuthError("invalid_issuer", "The token comes from an issuer that is not trusted.")
        if self._audience is not None and not _meant_for(claims.get("aud"), self._audience):
            raise AuthError("invalid_audience", "The token is not meant for this service.")
        value = claims.get(self._claim)
        if value is None:
            raise AuthError("invalid_token", f"The token has no {self._claim!r} claim.")
        try:
            user_id = check_id(value, self._claim)
        except InvalidMessage:
            raise AuthError(
                "invalid_token", f"The token's {self._claim!r} claim is not a valid user id."
            ) from None
        return Identity(user_id, exp, iat)


_MUST_EXPIRE = ": this service accepts tokens that expire at most {} after they are issued."


def duration(seconds: float) -> str:
    """``seconds`` in words, in the largest unit it reaches: "30 days", "1.5 hours"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or unit == "second":
            n = round(seconds / size, 1)
            return f"{n:g} {unit}" + ("" if n == 1 else "s")
    raise AssertionError  # pragma: no cover


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """``exp`` or ``nbf``: absent, or a JSON number of seconds (RFC 7519's NumericDate)."""
    if name not in claims:
        return None
    value = _number(claims[name])
    if value is None or not math.isfinite(value):
        raise AuthError("invalid_token", f"The token's {name!r} claim is not a number of seconds.")
    return value


def _meant_for(aud: object, audience: str) -> bool:
    """``aud`` (a string, or a list of strings) names ``audience``."""
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and all(isinstance(a, str) for a in aud) and audience in aud


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
    """A development token for ``user_id`` (HS* only), with ``iat`` and ``exp``;
    ``extra`` claims win over ours.

    Raises ConfigError without a usable secret or for a ``ttl_seconds`` longer
    than SSEHUB_MAX_TOKEN_LIFETIME, InvalidMessage for a bad user id.
    """
    alg = settings.jwt_algorithm
    if not alg.startswith("HS"):
        raise ConfigError(
            f"SSEHUB_JWT_ALGORITHM={alg}: ssehub can only mint HS* tokens "
            "(it has no private key); get tokens from your identity provider"
        )
    check_id(user_id, "user id")
    if ttl_seconds > settings.max_token_lifetime:
        limit = settings.max_token_lifetime
        raise ConfigError(
            f"a token valid for {ttl_seconds:.12g} s would be refused: "
            f"SSEHUB_MAX_TOKEN_LIFETIME is {duration(limit)} ({limit:.12g} s)"
        )
    iat = int(time.time())
    # exp - iat never exceeds the ttl (so a ttl of the whole lifetime is accepted)
    claims: dict[str, Any] = {"iat": iat, "exp": iat + math.floor(ttl_seconds)}
    claims[settings.jwt_user_claim] = user_id
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    return _jws(settings).encode(orjson.dumps(claims), "", algorithm=alg)


def _auth_error(exc: jwt.PyJWTError | orjson.JSONDecodeError) -> AuthError:
    """A fixed, token-free message per failure; PyJWT's own text is not echoed."""
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


def _jws(settings: Settings) -> jwt.PyJWS:
    """PyJWT's JWS layer for the configured algorithm only, with its key parsed
    and checked once: PyJWT's public API, with no claim checks of its own
    (``TokenVerifier`` checks the claims).

    The key is bound to the algorithm (``_BoundKey``, registered through
    ``PyJWS.register_algorithm``) rather than passed to every ``decode``: for
    HMAC, PyJWT re-prepares a secret on every call (PEM and SSH-key pattern
    checks: 2.1x the whole decode of HS256, issue 8), and for a weak key it
    would warn on every call; so the key is passed as "".
    """
    alg = settings.jwt_algorithm
    inner = get_default_algorithms()[alg]
    hmac = alg.startswith("HS")
    name = "SSEHUB_JWT_SECRET" if hmac else "SSEHUB_JWT_PUBLIC_KEY"
    raw = settings.jwt_secret if hmac else settings.jwt_public_key
    if not raw:
        raise ConfigError(f"{name}: missing (required for {alg})")
    if hmac and len(raw.encode()) < MIN_HMAC_SECRET_BYTES:  # settings copied unchecked
        raise ConfigError(
            f"{name}: {len(raw.encode())} bytes is too short for {alg}, which needs at least "
            f"{MIN_HMAC_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
        )
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
    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm(alg, _BoundKey(inner, key))
    return jws
