"""libpq's TLS parameters on a PostgreSQL URL become asyncpg's ``ssl`` argument."""

from __future__ import annotations

import ssl

import pytest
from ssehub.errors import ConfigError
from ssehub.storage.tls import asyncpg_tls

BASE = "postgresql+asyncpg://ssehub@db:5432/ssehub"


def test_a_plain_url_is_left_alone() -> None:
    url, args = asyncpg_tls(BASE)
    assert str(url) == BASE and args == {}


@pytest.mark.parametrize("mode", ["disable", "prefer", "require", "verify-full"])
def test_a_mode_alone_is_asyncpgs_mode(mode: str) -> None:
    url, args = asyncpg_tls(f"{BASE}?sslmode={mode}&application_name=ssehub")
    assert args == {"ssl": mode}
    assert url.query == {"application_name": "ssehub"}


@pytest.mark.parametrize(("mode", "hostname"), [("verify-full", True), ("verify-ca", False)])
def test_a_root_certificate_makes_a_context(mode: str, hostname: bool) -> None:
    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    url, args = asyncpg_tls(f"{BASE}?sslmode={mode}&sslrootcert={ca}")
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname is hostname
    assert url.query == {}


def test_a_wrong_mode_is_one_line() -> None:
    with pytest.raises(ConfigError, match="sslmode must be one of"):
        asyncpg_tls(f"{BASE}?sslmode=sometimes")
