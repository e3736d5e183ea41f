"""libpq's TLS parameters on a PostgreSQL URL, for asyncpg.

Operators write the URLs they know: ``?sslmode=verify-full&sslrootcert=/ca.crt``.
SQLAlchemy hands URL parameters to asyncpg as keyword arguments, and asyncpg
takes none of these: it takes one ``ssl`` argument, a mode or an SSLContext.
So they are taken off the URL here and made into that argument, with
libpq's meanings (``verify-ca`` checks the chain, ``verify-full`` the host too).
"""

from __future__ import annotations

import ssl
from typing import Any

from sqlalchemy.engine import URL, make_url
from ssehub.errors import ConfigError

MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
FILES = ("sslrootcert", "sslcert", "sslkey")


def asyncpg_tls(url: str) -> tuple[URL, dict[str, Any]]:
    """The URL without libpq's TLS parameters, and asyncpg's ``connect_args``."""
    parsed = make_url(url)
    query = dict(parsed.query)
    if not {"sslmode", *FILES} & set(query):
        return parsed, {}
    mode = _one(query.pop("sslmode", "verify-full"))
    files = {name: _one(query.pop(name)) for name in FILES if name in query}
    if mode not in MODES:
        raise ConfigError(f"SSEHUB_DATABASE_URL: sslmode must be one of {', '.join(MODES)}")
    stripped = parsed.set(query=query)
    if not files or mode in ("disable", "allow", "prefer", "require"):
        return stripped, {"ssl": mode}
    context = ssl.create_default_context(cafile=files.get("sslrootcert"))
    context.check_hostname = mode == "verify-full"
    try:
        if "sslcert" in files:
            context.load_cert_chain(files["sslcert"], files.get("sslkey"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"SSEHUB_DATABASE_URL: the client certificate: {exc}") from None
    return stripped, {"ssl": context}


def _one(value: str | tuple[str, ...]) -> str:
    if isinstance(value, tuple):
        raise ConfigError("SSEHUB_DATABASE_URL: a TLS parameter is given twice")
    return value
