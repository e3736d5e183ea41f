"""ssehub.config: typo'd variables reported, bad values named in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ssehub.config import (
    Settings,
    closest_setting,
    env_file_names,
    load_settings,
    normalize_database_url,
    unknown_settings,
)
from ssehub.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: no SSEHUB_* of the caller, no .env of the checkout."""
    for name in list(os.environ):
        if name.upper().startswith("SSEHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_a_typo_is_reported() -> None:
    env = {"SSEHUB_JWT_SECRT": "x", "SSEHUB_JWT_SECRET": "y", "PATH": "/bin"}
    assert unknown_settings(env) == ["SSEHUB_JWT_SECRT"]


def test_test_suite_variables_are_not_settings_nor_typos() -> None:
    env = {
        "SSEHUB_TEST_RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/",
        "SSEHUB_TEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test",
    }
    assert unknown_settings(env) == []


def test_every_setting_is_known_and_typos_come_sorted() -> None:
    env = {"SSEHUB_" + name.upper(): "1" for name in Settings.model_fields}
    env |= {"SSEHUB_ZZZ": "1", "SSEHUB_PING": "1", "ssehub_lower": "1", "OTHER_JWT_SECRT": "1"}
    assert unknown_settings(env) == ["SSEHUB_PING", "SSEHUB_ZZZ"]


def test_a_dotenv_files_names_are_checked_like_the_environments(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# a comment\nSSEHUB_PING_INTERVL=5\nexport SSEHUB_RETRY_MS=100\nOTHER=1\n"
    )
    assert unknown_settings(env_file_names()) == ["SSEHUB_PING_INTERVL"]
    assert env_file_names(tmp_path / "absent.env") == []


def test_a_typo_gets_the_setting_it_most_likely_meant() -> None:
    assert closest_setting("SSEHUB_PING_INTERVL") == "SSEHUB_PING_INTERVAL"
    assert closest_setting("SSEHUB_DATABASE") == "SSEHUB_DATABASE_URL"
    assert closest_setting("SSEHUB_ZZZ") is None


def test_defaults_load() -> None:
    s = load_settings()
    assert s.rabbitmq_url == "amqp://guest:guest@localhost:5672/"
    assert s.database_url == "sqlite+aiosqlite:///./ssehub.db"
    assert (s.replay_page, s.retry_ms, s.cors_origins) == (500, 3000, [])


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSEHUB_REPLAY_PAGE", "7")
    monkeypatch.setenv("SSEHUB_CORS_ORIGINS", "https://a.example, https://b.example,")
    monkeypatch.setenv("SSEHUB_DATABASE_URL", "postgresql://u@h/db")
    s = load_settings()
    assert s.replay_page == 7
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.database_url == "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        ({"rabbitmq_url": "http://x"}, "SSEHUB_RABBITMQ_URL: must start with amqp:// or amqps://"),
        ({"replay_page": 0}, "SSEHUB_REPLAY_PAGE: Input should be greater than or equal to 1"),
        ({"ping_interval": -1}, "SSEHUB_PING_INTERVAL: Input should be greater than 0"),
        (
            {"request_head_timeout": "inf"},
            "SSEHUB_REQUEST_HEAD_TIMEOUT: Input should be less than or equal to 3600",
        ),
        (
            {"request_timeout": "nan"},
            "SSEHUB_REQUEST_TIMEOUT: Input should be less than or equal to 3600",
        ),
        (
            {"max_connections": 0},
            "SSEHUB_MAX_CONNECTIONS: Input should be greater than or equal to 1",
        ),
        (
            {"database_url": "mysql://x"},
            "SSEHUB_DATABASE_URL: must be a sqlite:// or postgresql:// URL",
        ),
        (
            {"jwt_public_key": "/nonexistent/key.pem"},
            "SSEHUB_JWT_PUBLIC_KEY: must be a PEM public key or the path of a file holding one",
        ),
        (
            {"jwt_algorithm": "RS256"},
            "SSEHUB_JWT_PUBLIC_KEY is required when SSEHUB_JWT_ALGORITHM=RS256",
        ),
        (
            {"jwt_secret": "too-short"},
            "SSEHUB_JWT_SECRET: 9 bytes is too short for HS256, which needs at least 32 "
            "(e.g. `openssl rand -hex 32`)",
        ),
        (
            {"max_token_lifetime": 0},
            "SSEHUB_MAX_TOKEN_LIFETIME: Input should be greater than 0",
        ),
        (
            {"replay_rate": 0},
            "SSEHUB_REPLAY_RATE: Input should be greater than 0",
        ),
        (
            {"ops_port": 70000},
            "SSEHUB_OPS_PORT: Input should be less than or equal to 65535",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    overrides: dict[str, object], line: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert str(info.value) == line
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_bad_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSEHUB_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("SSEHUB_BATCH_SIZE: Input should be a valid integer")
    assert "\n" not in message


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SSEHUB_RETRY_MS=1234\n")
    assert load_settings().retry_ms == 1234


def test_a_public_key_path_is_read(tmp_path: Path) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
    (tmp_path / "key.pem").write_text(pem)
    s = load_settings(jwt_algorithm="ES256", jwt_public_key=str(tmp_path / "key.pem"))
    assert s.jwt_public_key == pem


def test_the_edge_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match=r"^SSEHUB_JWT_SECRET: missing"):
        load_settings().require_jwt()
    load_settings(jwt_secret="s" * 32).require_jwt()


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_get_their_async_driver(url: str, normal: str) -> None:
    assert normalize_database_url(url) == normal


@pytest.mark.parametrize(
    ("value", "allowed"), [("false", False), ("0", False), ("no", False), ("true", True)]
)
def test_query_tokens_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, value: str, allowed: bool
) -> None:
    assert load_settings().query_tokens is True  # the contract's default
    monkeypatch.setenv("SSEHUB_QUERY_TOKENS", value)
    assert load_settings().query_tokens is allowed


def test_a_bad_query_tokens_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSEHUB_QUERY_TOKENS", "sometimes")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("SSEHUB_QUERY_TOKENS: Input should be a valid boolean")


def test_the_trust_settings_defaults() -> None:
    s = load_settings()
    assert s.max_token_lifetime == 30 * 24 * 3600
    assert (s.replay_rate, s.replay_burst) == (1000, 20_000)
    assert (s.ops_port, s.ops_host) == (None, None)
