"""Typed settings: read once at start from ``SSEHUB_*`` variables and ``.env``.

The ``Settings`` object is built by the CLI and passed down; nothing else in
the code base reads the environment.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from ssehub.errors import ConfigError

PositiveSeconds = Annotated[float, Field(gt=0)]
# A deadline: finite (an infinite one would be no deadline), at most an hour.
DeadlineSeconds = Annotated[float, Field(gt=0, le=3600)]
PREFIX = "SSEHUB_"
ENV_FILE = ".env"  # in the working directory, as pydantic-settings reads it
# `ssehub dev` checks tokens with it when SSEHUB_JWT_SECRET is not set, and
# `ssehub token` signs with it then, so the two work together out of the box.
DEV_JWT_SECRET = "ssehub-dev-secret-do-not-use-in-production"
MIN_HMAC_SECRET_BYTES = 32  # an HS* secret shorter than this stops the program
# Variables of the test and benchmark suites, not settings of a service.
NOT_SETTINGS = frozenset(
    {"SSEHUB_TEST_RABBITMQ_URL", "SSEHUB_TEST_DATABASE_URL", "SSEHUB_TEST_QUEUE_TYPE"}
)
LogFormat = Literal["json", "text"]
QueueType = Literal["classic", "quorum"]
# How deliveries reach edges (docs/architecture.md, "Delivery to edges"):
# "nodes": one message per edge per batch, routed by the dispatcher from the
# edges' joins; "bindings": per-user bindings on sse.deliver (the first design);
# "both": dispatchers route both ways and edges join, for a fleet moving from
# bindings to nodes (k8s/README.md).
Delivery = Literal["nodes", "bindings", "both"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # -- connections --------------------------------------------------------
    rabbitmq_url: str = "amqp://guest:guest@localhost:5672/"
    # of ssehub's durable queues (ssehub.dispatch, sse.dead); a queue's type is
    # fixed when it is first declared
    queue_type: QueueType = "classic"
    database_url: str = "sqlite+aiosqlite:///./ssehub.db"

    # -- authentication -----------------------------------------------------
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    jwt_user_claim: str = "sub"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = Field(default=0.0, ge=0)
    # the name of a cookie that carries the token (a fourth source; off when None)
    jwt_cookie: str | None = None
    # tokens accepted in the URL (?token=); false: refused with 401
    # query_token_disabled, since URLs end up in proxy logs and browser history
    query_tokens: bool = True
    # how long before a token's exp its stream gets ``token:expiring``
    token_warning: float = Field(default=60.0, ge=0)
    # A token without exp, or whose exp is further than this after its iat (after
    # now without one), is refused (token_lifetime): no token lives for ever.
    max_token_lifetime: PositiveSeconds = 30 * 24 * 3600.0

    # -- edge ---------------------------------------------------------------
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ping_interval: PositiveSeconds = 15.0
    retry_ms: int = Field(default=3000, ge=100)
    client_buffer_bytes: int = Field(default=1 << 20, ge=4096)
    write_timeout: PositiveSeconds = 30.0
    replay_page: int = Field(default=500, ge=1)
    drain_seconds: float = Field(default=10.0, ge=0)
    max_streams_per_user: int = Field(default=10, ge=1)
    # Replay work per user on one edge, as a token bucket of replayed events:
    # refilled at this many a second, holding at most ``replay_burst``. A resume
    # that finds it empty gets a short retry: (edge/replays.py).
    replay_rate: float = Field(default=1000.0, gt=0)
    replay_burst: int = Field(default=20_000, ge=1)
    # The edge's ops endpoints (/metrics, /readyz, /healthz, /openapi.json, /docs)
    # on their own port, and not on the public one (but /healthz); None: the public
    # port serves them. ``ops_host``: its address (None: the edge's own --host).
    ops_port: int | None = Field(default=None, ge=0, le=65535)
    ops_host: str | None = None
    # What a client may hold open without being a stream (ssehub.fastpath.guard):
    # seconds to send a request's whole head, from the connection's opening or
    # the end of its previous answer;
    request_head_timeout: DeadlineSeconds = 5.0
    # seconds from a head to the end of its answer, for a request that does not
    # become a stream (its body included);
    request_timeout: DeadlineSeconds = 10.0
    # open connections per edge, streams included; None: what the file-handle
    # limit leaves room for (edge/handles.py)
    max_connections: int | None = Field(default=None, ge=1)

    # -- dispatcher ---------------------------------------------------------
    # the same in every process of a deployment
    delivery: Delivery = "nodes"
    # users and conversations are split over this many dispatch partitions
    # (ssehub.partition); fixed for a deployment
    partitions: int = Field(default=1, ge=1, le=1024)
    batch_size: int = Field(default=500, ge=1)
    # Deliveries per sse.deliver message (ssehub.pack); 1: one message each.
    pack_deliveries: int = Field(default=256, ge=1, le=4096)
    prefetch: int = Field(default=2000, ge=1)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    max_batch_bytes: int = Field(default=1 << 20, ge=1024)
    dedupe_window: PositiveSeconds = 24 * 3600.0
    retention_max_age: PositiveSeconds = 7 * 24 * 3600.0
    retention_max_events: int = Field(default=10_000, ge=1)
    retention_interval: PositiveSeconds = 60.0
    # Members of one conversation at most: a change beyond it is dead-lettered
    # (too_many_members), so one message can never fan out without bound.
    max_members: int = Field(default=10_000, ge=1)
    # A message delivered this many times without being handled (it came back
    # after crashes or failed batches) is dead-lettered instead of looping.
    max_deliveries: int = Field(default=10, ge=2)
    # sse.dead keeps at most this many messages, the oldest dropped first (its
    # x-max-length, fixed when the queue is first declared: ssehub.bounds)
    dead_letter_max: int = Field(default=100_000, ge=1)
    # A revoke is kept this long after its cut-off: no token may live longer.
    revocation_ttl: PositiveSeconds = 30 * 24 * 3600.0

    # -- presence -------------------------------------------------------------
    presence: bool = True
    presence_grace: PositiveSeconds = 10.0
    presence_heartbeat: PositiveSeconds = 10.0
    presence_max_members: int = Field(default=100, ge=0)

    # -- misc ---------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: LogFormat = "json"  # `ssehub dev` defaults to text
    reconnect_max_delay: PositiveSeconds = 10.0
    # Testing only: crash the dispatcher (SIGKILL) at a point of its Nth batch,
    # "before_commit:N", "after_commit:N" or "after_publish:N".
    failpoint: str | None = None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("queue_type", "log_format", "delivery", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("rabbitmq_url")
    @classmethod
    def _check_amqp(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("jwt_public_key")
    @classmethod
    def _load_pem(cls, value: str | None) -> str | None:
        # Accept the PEM itself or a path to a file holding it.
        if value and "-----BEGIN" not in value:
            path = Path(value)
            if not path.is_file():
                raise ValueError("must be a PEM public key or the path of a file holding one")
            value = path.read_text()
        return value

    @model_validator(mode="after")
    def _key_matches_algorithm(self) -> Settings:
        if self.jwt_algorithm.startswith(("RS", "ES")) and self.jwt_public_key is None:
            raise ValueError(
                f"SSEHUB_JWT_PUBLIC_KEY is required when SSEHUB_JWT_ALGORITHM={self.jwt_algorithm}"
            )
        # A short HMAC secret can be brute-forced offline from one token.
        if self.jwt_algorithm.startswith("HS") and self.jwt_secret is not None:
            size = len(self.jwt_secret.encode())
            if size < MIN_HMAC_SECRET_BYTES:
                raise ValueError(
                    f"SSEHUB_JWT_SECRET: {size} bytes is too short for {self.jwt_algorithm}, "
                    f"which needs at least {MIN_HMAC_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
                )
        return self

    def require_jwt(self) -> None:
        """Edges cannot start without a way to check tokens."""
        if self.jwt_algorithm.startswith("HS") and not self.jwt_secret:
            raise ConfigError("SSEHUB_JWT_SECRET: missing (the edge needs it to verify tokens)")


def unknown_settings(names: Iterable[str]) -> list[str]:
    """``SSEHUB_*`` variables that name no setting (typos), sorted. ``names``:
    the environment's, or a ``.env`` file's (``env_file_names``)."""
    known = setting_names() | NOT_SETTINGS
    return sorted(k for k in names if k.startswith(PREFIX) and k not in known)


def setting_names() -> set[str]:
    """Every setting's variable, ``SSEHUB_...``."""
    return {PREFIX + name.upper() for name in Settings.model_fields}


def closest_setting(name: str) -> str | None:
    """The setting a typo'd variable most likely meant, if one is close."""
    found = difflib.get_close_matches(name, sorted(setting_names()), n=1, cutoff=0.8)
    return found[0] if found else None


def env_file_names(path: str | Path = ENV_FILE) -> list[str]:
    """The variables a ``.env`` file sets; none when there is no such file."""
    from dotenv import dotenv_values  # pydantic-settings' own reader of .env

    return list(dotenv_values(path)) if Path(path).is_file() else []


def normalize_database_url(url: str) -> str:
    """Map plain ``sqlite://`` / ``postgresql://`` URLs to their async drivers."""
    for plain, async_ in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return async_ + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise ValueError("must be a sqlite:// or postgresql:// URL")


def load_settings(**overrides: object) -> Settings:
    """Parse settings once; turn a validation failure into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "_".join(str(part) for part in err["loc"]).upper()
        name = f"SSEHUB_{loc}" if loc else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and msg.startswith(PREFIX):  # a check of several settings names its own
            raise ConfigError(msg) from None
        raise ConfigError(f"{name}: {msg}") from None
