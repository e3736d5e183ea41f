"""ssehub.edge.auth: JWT verification and development tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from ssehub.config import DEV_JWT_SECRET, load_settings
from ssehub.edge.auth import Identity, TokenVerifier, mint_token
from ssehub.errors import AuthError, ConfigError

from tests.unit.edge.tokens import (
    OTHER_SECRET,
    SECRET,
    auth_error,
    b64url,
    hand_token,
    hs,
    make_settings,
    soon,
)

# -- verify: HS256 ------------------------------------------------------------


def test_valid_token(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs({"sub": "u1", "exp": time.time() + 60})).user_id == "u1"


def test_identity_carries_exp_and_iat(verifier: TokenVerifier) -> None:
    now = int(time.time())
    identity = verifier.verify(hs({"sub": "u1", "exp": now + 60, "iat": now}))
    assert identity == Identity("u1", float(now + 60), float(now))
    assert verifier.verify(hs({"sub": "u1", "exp": now + 60})) == Identity("u1", now + 60, None)
    # iat is informational: a non-number is ignored, not an error
    assert verifier.verify(hs({"sub": "u1", "iat": "yesterday"})).iat is None
    assert verifier.verify(hs({"sub": "u1", "exp": now + 60.5})).exp == now + 60.5


def test_identity_is_frozen(verifier: TokenVerifier) -> None:
    identity = verifier.verify(hs({"sub": "u1"}))
    with pytest.raises(AttributeError):
        identity.user_id = "admin"  # type: ignore[misc]


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms(alg: str) -> None:
    secret = SECRET + SECRET  # 98 bytes: long enough for HS512
    verifier = TokenVerifier(make_settings(jwt_secret=secret, jwt_algorithm=alg))
    assert verifier.verify(hs({"sub": "u1"}, secret, alg)).user_id == "u1"
    assert auth_error(verifier, hs({"sub": "u1"}, secret, "HS256")).code == "invalid_token"


def test_bad_signature(verifier: TokenVerifier) -> None:
    assert auth_error(verifier, hs({"sub": "u1"}, OTHER_SECRET)).code == "invalid_token"


def test_tampered_payload(verifier: TokenVerifier) -> None:
    header, _, sig = hs({"sub": "u1"}).split(".")
    forged = f"{header}.{b64url(json.dumps({'sub': 'admin'}).encode())}.{sig}"
    assert auth_error(verifier, forged).code == "invalid_token"


def test_expired(verifier: TokenVerifier) -> None:
    token = hs({"sub": "u1", "exp": int(time.time()) - 10})
    assert auth_error(verifier, token).code == "token_expired"


def test_leeway() -> None:
    verifier = TokenVerifier(make_settings(jwt_leeway=60))
    assert verifier.verify(hs({"sub": "u1", "exp": int(time.time()) - 10})).user_id == "u1"
    assert verifier.verify(hs({"sub": "u1", "nbf": int(time.time()) + 10})).user_id == "u1"


def test_exp_and_nbf_count_fractions_of_a_second(verifier: TokenVerifier) -> None:
    # PyJWT truncates them to whole seconds: exp = t + 0.4 was refused up to
    # 0.4 s early, nbf = t + 0.4 accepted up to 0.6 s early
    now = time.time()
    assert verifier.verify(hs({"sub": "u1", "exp": now + 0.4})).exp == now + 0.4
    assert auth_error(verifier, hs({"sub": "u1", "exp": now - 0.05})).code == "token_expired"
    assert auth_error(verifier, hs({"sub": "u1", "nbf": now + 0.4})).code == "token_not_yet_valid"
    assert verifier.verify(hs({"sub": "u1", "nbf": now - 0.05})).user_id == "u1"
    leeway = TokenVerifier(make_settings(jwt_leeway=0.5))
    assert leeway.verify(hs({"sub": "u1", "exp": now - 0.3})).user_id == "u1"
    assert auth_error(leeway, hs({"sub": "u1", "exp": now - 0.7})).code == "token_expired"


@pytest.mark.parametrize("claim", ["exp", "nbf"])
@pytest.mark.parametrize("value", ["1999999999", None, True, [1], {"at": 1}, "soon"])
def test_exp_and_nbf_must_be_numbers(verifier: TokenVerifier, claim: str, value: object) -> None:
    # RFC 7519: a NumericDate is a JSON number (PyJWT took "1999999999" too)
    error = auth_error(verifier, hs({"sub": "u1", claim: value}))
    assert error.code == "invalid_token"
    assert claim in error.message


def test_not_yet_valid(verifier: TokenVerifier) -> None:
    token = hs({"sub": "u1", "nbf": int(time.time()) + 60})
    assert auth_error(verifier, token).code == "token_not_yet_valid"


def test_iat_in_the_future_is_accepted(verifier: TokenVerifier) -> None:
    # iat is informational; a clock a few seconds ahead must not lock users out.
    assert verifier.verify(hs({"sub": "u1", "iat": int(time.time()) + 5})).user_id == "u1"


def test_audience() -> None:
    verifier = TokenVerifier(make_settings(jwt_audience="ssehub"))
    assert verifier.verify(hs({"sub": "u1", "aud": "ssehub"})).user_id == "u1"
    assert verifier.verify(hs({"sub": "u1", "aud": ["other", "ssehub"]})).user_id == "u1"
    assert auth_error(verifier, hs({"sub": "u1", "aud": "other"})).code == "invalid_audience"
    assert auth_error(verifier, hs({"sub": "u1"})).code == "invalid_audience"


def test_audience_present_but_not_configured(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs({"sub": "u1", "aud": "somebody"})).user_id == "u1"


def test_issuer() -> None:
    verifier = TokenVerifier(make_settings(jwt_issuer="https://idp.example"))
    assert verifier.verify(hs({"sub": "u1", "iss": "https://idp.example"})).user_id == "u1"
    assert auth_error(verifier, hs({"sub": "u1", "iss": "https://evil"})).code == "invalid_issuer"
    assert auth_error(verifier, hs({"sub": "u1"})).code == "invalid_issuer"


def test_issuer_not_configured(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs({"sub": "u1", "iss": "anyone"})).user_id == "u1"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_rejected(verifier: TokenVerifier, alg: str) -> None:
    token = hand_token({"alg": alg, "typ": "JWT"}, {"sub": "u1"}, None)
    assert token.endswith(".")
    assert auth_error(verifier, token).code == "invalid_token"


def test_no_alg_header_rejected(verifier: TokenVerifier) -> None:
    token = hand_token({"typ": "JWT"}, {"sub": "u1"}, SECRET.encode())
    assert auth_error(verifier, token).code == "invalid_token"


def test_hand_built_hs256_is_accepted(verifier: TokenVerifier) -> None:
    # The helper used by the confusion test builds tokens PyJWT accepts.
    payload = {"sub": "u1", "exp": soon()}
    token = hand_token({"alg": "HS256", "typ": "JWT"}, payload, SECRET.encode())
    assert verifier.verify(token).user_id == "u1"


@pytest.mark.parametrize("sub", [None, "", 42, ["u1"], {"id": "u1"}, "a b", "x" * 129, "tab\tx"])
def test_bad_user_claim(verifier: TokenVerifier, sub: object) -> None:
    payload: dict[str, Any] = {"exp": time.time() + 60}
    if sub is not None:
        payload["sub"] = sub
    assert auth_error(verifier, hs(payload)).code == "invalid_token"


def test_custom_user_claim() -> None:
    verifier = TokenVerifier(make_settings(jwt_user_claim="uid"))
    assert verifier.verify(hs({"uid": "alice", "sub": 12})).user_id == "alice"
    error = auth_error(verifier, hs({"sub": "alice"}))
    assert error.code == "invalid_token"
    assert "uid" in error.message


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b.c",
        "a.b",
        "...",
        "eyJhbGciOiJIUzI1NiJ9..",
        "eyJhbGciOiJIUzI1NiJ9.e30.!!!!",
        "Bearer x.y.z",
        "é.é.é",
        "x" * 10_000,
        bytes(range(256)).decode("latin-1"),
        b"\x89PNG\r\n\x1a\n\x00\x00".decode("latin-1"),
    ],
)
def test_garbage_rejected(verifier: TokenVerifier, token: str) -> None:
    assert auth_error(verifier, token).code == "invalid_token"


def test_non_json_segments_rejected(verifier: TokenVerifier) -> None:
    for header, payload in [(b"[]", b"{}"), (b"{}", b"[1]"), (b"not json", b"{}")]:
        signing_input = f"{b64url(header)}.{b64url(payload)}"
        sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        assert auth_error(verifier, f"{signing_input}.{b64url(sig)}").code == "invalid_token"


def test_error_messages_never_contain_the_token() -> None:
    verifier = TokenVerifier(make_settings(jwt_audience="a", jwt_issuer="i"))
    now = int(time.time())
    tokens = [
        hs({"sub": "u1", "aud": "a", "iss": "i", "exp": now - 100}),
        hs({"sub": "u1", "aud": "a", "iss": "i", "nbf": now + 100}),
        hs({"sub": "u1", "aud": "b", "iss": "i"}),
        hs({"sub": "u1", "aud": "a", "iss": "j"}),
        hs({"sub": "u1", "aud": "a", "iss": "i"}, OTHER_SECRET),
        hs({"aud": "a", "iss": "i"}),
        hand_token({"alg": "none"}, {"sub": "u1"}, None),
    ]
    for token in tokens:
        error = auth_error(verifier, token)
        for part in token.split("."):
            assert not part or part not in error.message
        assert token not in str(error)


# -- verify: RS256 / ES256 ----------------------------------------------------


def test_rs256_valid(rsa_keys: tuple[rsa.RSAPrivateKey, str]) -> None:
    private, public_pem = rsa_keys
    verifier = TokenVerifier(make_settings(jwt_algorithm="RS256", jwt_public_key=public_pem))
    token = jwt.encode({"sub": "u1", "exp": time.time() + 60}, private, algorithm="RS256")
    assert verifier.verify(token).user_id == "u1"


def test_rs256_wrong_key(rsa_keys: tuple[rsa.RSAPrivateKey, str]) -> None:
    _, public_pem = rsa_keys
    verifier = TokenVerifier(make_settings(jwt_algorithm="RS256", jwt_public_key=public_pem))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "u1"}, other, algorithm="RS256")
    assert auth_error(verifier, token).code == "invalid_token"


@pytest.mark.parametrize("alg", ["HS256", "RS256"])
def test_hs_rs_confusion_rejected(rsa_keys: tuple[rsa.RSAPrivateKey, str], alg: str) -> None:
    # The classic attack: HMAC-sign with the (public) PEM text as the secret.
    _, public_pem = rsa_keys
    verifier = TokenVerifier(make_settings(jwt_algorithm="RS256", jwt_public_key=public_pem))
    token = hand_token({"alg": alg, "typ": "JWT"}, {"sub": "admin"}, public_pem.encode())
    assert auth_error(verifier, token).code == "invalid_token"


def test_rs256_rejects_hs256_token_with_configured_secret(
    rsa_keys: tuple[rsa.RSAPrivateKey, str],
) -> None:
    _, public_pem = rsa_keys
    verifier = TokenVerifier(make_settings(jwt_algorithm="RS256", jwt_public_key=public_pem))
    assert auth_error(verifier, hs({"sub": "u1"})).code == "invalid_token"


def test_es256_valid(ec_keys: tuple[ec.EllipticCurvePrivateKey, str]) -> None:
    private, public_pem = ec_keys
    verifier = TokenVerifier(make_settings(jwt_algorithm="ES256", jwt_public_key=public_pem))
    token = jwt.encode({"sub": "u1", "exp": time.time() + 60}, private, algorithm="ES256")
    assert verifier.verify(token).user_id == "u1"
    header, payload, _ = token.split(".")
    assert auth_error(verifier, f"{header}.{payload}.{b64url(b'x' * 64)}").code == "invalid_token"
    assert auth_error(verifier, f"{header}.{payload}.").code == "invalid_token"


def test_key_of_the_wrong_family_is_a_config_error(
    ec_keys: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    _, ec_pem = ec_keys
    with pytest.raises(ConfigError, match="SSEHUB_JWT_PUBLIC_KEY"):
        TokenVerifier(make_settings(jwt_algorithm="RS256", jwt_public_key=ec_pem))
    broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ConfigError, match="SSEHUB_JWT_PUBLIC_KEY"):
        TokenVerifier(make_settings(jwt_algorithm="ES256", jwt_public_key=broken))


def test_missing_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SSEHUB_JWT_SECRET"):
        TokenVerifier(make_settings(jwt_secret=None))


def test_pem_as_hmac_secret_is_a_config_error(rsa_keys: tuple[rsa.RSAPrivateKey, str]) -> None:
    with pytest.raises(ConfigError, match="SSEHUB_JWT_SECRET"):
        TokenVerifier(make_settings(jwt_secret=rsa_keys[1]))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_a_secret_under_32_bytes_stops_the_program(alg: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None, jwt_secret="s" * 31, jwt_algorithm=alg)
    assert str(info.value) == (
        f"SSEHUB_JWT_SECRET: 31 bytes is too short for {alg}, which needs at least 32 "
        "(e.g. `openssl rand -hex 32`)"
    )
    # counted in bytes: 11 three-byte characters are 33
    assert load_settings(_env_file=None, jwt_secret="€" * 11, jwt_algorithm=alg)
    # a copy that skipped the settings' validation is caught by the edge too
    short = make_settings().model_copy(update={"jwt_secret": "short"})
    with pytest.raises(ConfigError, match=r"^SSEHUB_JWT_SECRET: 5 bytes is too short"):
        TokenVerifier(short)


def test_the_built_in_development_secret_is_long_enough() -> None:
    assert len(DEV_JWT_SECRET.encode()) >= 32
    assert load_settings(_env_file=None, jwt_secret=DEV_JWT_SECRET)


def test_a_secret_short_for_hs512_warns_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # filterwarnings=error: neither verify nor mint may emit InsecureKeyLengthWarning.
    secret = "s" * 40  # enough for HS256, under HS512's 64
    settings_ = make_settings(jwt_secret=secret, jwt_algorithm="HS512")
    with caplog.at_level(logging.WARNING, logger="ssehub.edge.auth"):
        verifier = TokenVerifier(settings_)
    assert any("SSEHUB_JWT_SECRET" in r.getMessage() for r in caplog.records)
    payload = {"sub": "u1", "exp": soon()}
    token = hand_token({"alg": "HS512"}, payload, None)  # PyJWT would warn, in the test
    signing_input = token.rstrip(".").encode()
    token += b64url(hmac.new(secret.encode(), signing_input, hashlib.sha512).digest())
    assert verifier.verify(token).user_id == "u1"
    assert verifier.verify(mint_token(settings_, "u2")).user_id == "u2"


# -- token lifetime -------------------------------------------------------------


def test_a_token_without_exp_is_refused(verifier: TokenVerifier) -> None:
    error = auth_error(verifier, hs({"sub": "u1", "iat": int(time.time())}, expiring=False))
    assert error.code == "token_lifetime"
    assert error.message == (
        "The token has no expiry ('exp'): this service accepts tokens that expire at most "
        "30 days after they are issued."
    )


def test_lifetime_counts_from_iat_or_from_now() -> None:
    verifier = TokenVerifier(make_settings(max_token_lifetime=3600))
    now = int(time.time())
    # from iat: an hour exactly is fine, a second more is not, whatever is left
    assert verifier.verify(hs({"sub": "u1", "iat": now - 60, "exp": now + 3540})).user_id
    old = hs({"sub": "u1", "iat": now - 3000, "exp": now + 601})
    error = auth_error(verifier, old)
    assert error.code == "token_lifetime"
    assert error.message == (
        "The token lives too long: this service accepts tokens that expire at most "
        "1 hour after they are issued."
    )
    # without iat: from now
    assert verifier.verify(hs({"sub": "u1", "exp": now + 3500})).user_id == "u1"
    assert auth_error(verifier, hs({"sub": "u1", "exp": now + 3700})).code == "token_lifetime"
    # an iat that is no number counts as none
    assert (
        auth_error(verifier, hs({"sub": "u1", "iat": "then", "exp": now + 3700})).code
        == "token_lifetime"
    )


def test_the_default_lifetime_is_30_days(verifier: TokenVerifier) -> None:
    now = int(time.time())
    month = 30 * 86400
    assert verifier.verify(hs({"sub": "u1", "iat": now, "exp": now + month})).user_id == "u1"
    year = hs({"sub": "u1", "iat": now, "exp": now + month + 1})
    assert auth_error(verifier, year).code == "token_lifetime"


def test_an_expired_token_says_expired_before_lifetime(verifier: TokenVerifier) -> None:
    now = int(time.time())
    token = hs({"sub": "u1", "iat": now - 100 * 86400, "exp": now - 10})
    assert auth_error(verifier, token).code == "token_expired"


def test_mint_refuses_a_ttl_over_the_lifetime() -> None:
    settings_ = make_settings(max_token_lifetime=3600)
    with pytest.raises(ConfigError) as info:
        mint_token(settings_, "alice", ttl_seconds=7200)
    assert str(info.value) == (
        "a token valid for 7200 s would be refused: SSEHUB_MAX_TOKEN_LIFETIME is 1 hour (3600 s)"
    )
    token = mint_token(settings_, "alice", ttl_seconds=3600)  # the whole lifetime is fine
    assert TokenVerifier(settings_).verify(token).user_id == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600


def test_short_rsa_key_warns_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # the public decode path would warn on every call for it (filterwarnings=error)
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings_ = make_settings(jwt_algorithm="RS256", jwt_public_key=pem.decode())
    with caplog.at_level(logging.WARNING, logger="ssehub.edge.auth"):
        verifier = TokenVerifier(settings_)
    assert any("SSEHUB_JWT_PUBLIC_KEY" in r.getMessage() for r in caplog.records)
    with pytest.warns(jwt.InsecureKeyLengthWarning):  # signing it here, in the test
        token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, private, "RS256")
    for _ in range(3):
        assert verifier.verify(token).user_id == "u1"


# -- mint_token ---------------------------------------------------------------


def test_mint_round_trip() -> None:
    settings_ = make_settings(jwt_audience="ssehub", jwt_issuer="dev", jwt_user_claim="uid")
    token = mint_token(settings_, "alice", ttl_seconds=60, extra={"role": "tester"})
    assert TokenVerifier(settings_).verify(token).user_id == "alice"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="ssehub")
    assert claims["uid"] == "alice"
    assert claims["iss"] == "dev"
    assert claims["role"] == "tester"
    assert 55 <= claims["exp"] - claims["iat"] <= 61


def test_mint_expired_token() -> None:
    settings_ = make_settings()
    token = mint_token(settings_, "alice", ttl_seconds=-10)
    assert auth_error(TokenVerifier(settings_), token).code == "token_expired"


def test_mint_with_rs256_is_a_config_error(rsa_keys: tuple[rsa.RSAPrivateKey, str]) -> None:
    settings_ = make_settings(jwt_algorithm="RS256", jwt_public_key=rsa_keys[1])
    with pytest.raises(ConfigError, match="RS256"):
        mint_token(settings_, "alice")


# -- properties -------------------------------------------------------------

PROPERTY_VERIFIER = TokenVerifier(make_settings(jwt_audience="ssehub", jwt_issuer="dev"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
claim_names = st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "iss", "jti"]) | st.text()
segments = st.binary(max_size=48).map(b64url)


def _verify_returns_user_or_auth_error(token: str) -> None:
    try:
        user = PROPERTY_VERIFIER.verify(token)
    except AuthError as exc:
        assert exc.code in {
            "invalid_token",
            "token_expired",
            "token_not_yet_valid",
            "invalid_audience",
            "invalid_issuer",
            "token_lifetime",
        }
    else:
        assert isinstance(user.user_id, str) and user.user_id
        assert user.exp is None or isinstance(user.exp, float)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.lists(segments, min_size=1, max_size=4).map(".".join))
def test_arbitrary_tokens(token: str) -> None:
    _verify_returns_user_or_auth_error(token)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "b64"]), json_values),
    st.dictionaries(claim_names, json_values),
)
def test_arbitrary_signed_claims(header: dict[str, Any], payload: dict[str, Any]) -> None:
    # Validly signed tokens reach claim validation: weird claim types included.
    _verify_returns_user_or_auth_error(hand_token({**header, "alg": "HS256"}, payload, None))
    _verify_returns_user_or_auth_error(
        hand_token({**header, "alg": "HS256"}, payload, SECRET.encode())
    )


def test_private_pem_configured_as_public_key_uses_its_public_half(
    rsa_keys: tuple[rsa.RSAPrivateKey, str],
) -> None:
    private, _ = rsa_keys
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    verifier = TokenVerifier(make_settings(jwt_algorithm="RS256", jwt_public_key=private_pem))
    token = jwt.encode({"sub": "u1", "exp": soon()}, private, algorithm="RS256")
    assert verifier.verify(token).user_id == "u1"
