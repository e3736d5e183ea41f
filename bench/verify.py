"""What checking a token costs an edge: ``TokenVerifier.verify``, per algorithm.

``python -m bench.verify [--repeat N]`` prints, for HS256, RS256 (2048-bit) and
ES256, the best of N timed runs of ``verify`` on one valid token with ``exp``,
``iat``, ``aud`` and ``iss`` (both checked), in µs per call. Every stream open
pays it once; a reconnect storm of 10,000 clients pays it 10,000 times. Run it
before and after touching edge/auth.py or moving PyJWT's pin (pyproject.toml).
"""

from __future__ import annotations

import argparse
import functools
import time
import timeit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from ssehub.config import Settings
from ssehub.edge.auth import TokenVerifier

CALLS = {"HS256": 5000, "RS256": 2000, "ES256": 1000}  # per timed run: ~0.1 s each


def cases() -> dict[str, tuple[dict[str, str], str]]:
    """algorithm -> (its settings, a valid token)."""
    now = int(time.time())
    claims = {"sub": "user-123", "iat": now, "exp": now + 3600, "aud": "ssehub", "iss": "idp"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    secret = "bench-secret-" * 4

    def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    return {
        "HS256": ({"jwt_secret": secret}, jwt.encode(claims, secret, "HS256")),
        "RS256": ({"jwt_public_key": public_pem(rsa_key)}, jwt.encode(claims, rsa_key, "RS256")),
        "ES256": ({"jwt_public_key": public_pem(ec_key)}, jwt.encode(claims, ec_key, "ES256")),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    p.add_argument("--repeat", type=int, default=15, help="timed runs; the best counts")
    args = p.parse_args()
    for alg, (keys, token) in cases().items():
        settings = Settings(
            _env_file=None, jwt_algorithm=alg, jwt_audience="ssehub", jwt_issuer="idp", **keys
        )  # type: ignore[arg-type]
        verifier = TokenVerifier(settings)
        verifier.verify(token)  # valid, and warm
        n = CALLS[alg]
        call = functools.partial(verifier.verify, token)
        best = min(timeit.repeat(call, number=n, repeat=args.repeat))
        print(f"{alg}: {best / n * 1e6:.1f} µs per verify (best of {args.repeat} x {n})")


if __name__ == "__main__":
    main()
