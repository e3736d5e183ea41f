"""ssehub.logs: token redaction and the logging set-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from ssehub.logs import UVICORN_LOG_CONFIG, RedactTokens, configure_logging

from tests.unit.edge.tokens import hs

TOKEN = hs({"sub": "u1"})


def access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200),
        None,
    )


@pytest.mark.parametrize("name", ["token", "access_token", "jwt", "Token"])
def test_redact_access_record(name: str) -> None:
    record = access_record(f"/sse/connect?lastEventId=7&{name}={TOKEN}&x=1")
    assert RedactTokens().filter(record) is True
    line = record.getMessage()
    assert TOKEN not in line
    assert f"{name}=REDACTED" in line
    assert "lastEventId=7" in line and "&x=1" in line
    assert line.endswith('"GET /sse/connect?lastEventId=7&' + f'{name}=REDACTED&x=1 HTTP/1.1" 200')


def test_redact_opaque_query_token() -> None:
    record = access_record("/sse/connect?token=opaque-secret-value")
    RedactTokens().filter(record)
    assert "opaque-secret-value" not in record.getMessage()


def test_redact_keeps_uvicorn_formatter_working() -> None:
    from uvicorn.logging import AccessFormatter

    record = access_record(f"/sse/connect?token={TOKEN}")
    RedactTokens().filter(record)
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s").format(record)
    assert TOKEN not in line and "200" in line


def test_redact_bearer_and_bare_jwt() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "Authorization: Bearer %s", (TOKEN,), None
    )
    RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, f"header was Bearer {TOKEN}; jwt {TOKEN}", None, None
    )
    RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()
    assert "Bearer REDACTED" in record.getMessage()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%(t)s", ({"t": TOKEN},), None)
    RedactTokens().filter(record)
    assert TOKEN not in record.getMessage()


def test_redact_leaves_other_records_alone() -> None:
    record = access_record("/sse/connect?lastEventId=7")
    RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /sse/connect?lastEventId=7 HTTP/1.1" 200'


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    access = logging.getLogger("uvicorn.access")
    saved = root.level, list(root.handlers), {h: list(h.filters) for h in root.handlers}
    saved_access = list(access.filters)
    yield
    root.setLevel(saved[0])
    for handler in root.handlers:
        if handler not in saved[1]:
            root.removeHandler(handler)
    for handler, filters in saved[2].items():
        handler.filters[:] = filters
    access.filters[:] = saved_access


def test_configure_logging_installs_filter_once(restore_logging: None) -> None:
    configure_logging("debug")
    configure_logging("DEBUG")
    assert logging.getLogger().level == logging.DEBUG
    access = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, RedactTokens) for f in access.filters) == 1
    for handler in logging.getLogger().handlers:
        assert sum(isinstance(f, RedactTokens) for f in handler.filters) == 1


def test_uvicorn_log_config_filters_access_handler() -> None:
    config = UVICORN_LOG_CONFIG
    assert config["filters"]["redact_tokens"]["()"] is RedactTokens
    assert "redact_tokens" in config["handlers"]["access"]["filters"]
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["access"]
    assert {"default", "access"} <= set(config["formatters"])


def test_redact_bearer_placeholder_with_opaque_token() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "Authorization: Bearer %s (%d)", ("opaque123", 7), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "Authorization: Bearer REDACTED (7)"


def test_redact_never_raises_on_a_broken_call() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s %s", ("a",), None)
    assert RedactTokens().filter(record) is True
