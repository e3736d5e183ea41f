"""ssehub.logs: token redaction, the JSON and text formats, the logging set-up."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from ssehub.config import LogFormat, Settings, load_settings
from ssehub.errors import ConfigError
from ssehub.logs import (
    LOG_FORMAT,
    JsonAccessFormatter,
    JsonFormatter,
    RedactTokens,
    configure_logging,
    uvicorn_log_config,
)

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
    root.handlers[:] = saved[1]
    logging.captureWarnings(False)
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


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_uvicorn_log_config_filters_every_handler(log_format: LogFormat) -> None:
    config = uvicorn_log_config(log_format, "debug")
    assert config["filters"]["redact_tokens"]["()"] is RedactTokens
    for handler in config["handlers"].values():
        assert "redact_tokens" in handler["filters"]
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["access"]
    assert {"default", "access"} <= set(config["formatters"])
    assert config["root"]["level"] == "DEBUG"  # not uvicorn's INFO: SSEHUB_LOG_LEVEL holds
    assert uvicorn_log_config(log_format) is not uvicorn_log_config(log_format)  # uvicorn edits it


def test_uvicorn_log_config_formats() -> None:
    text = uvicorn_log_config("text")["formatters"]
    assert text["default"] == text["access"] == {"format": LOG_FORMAT}
    json_ = uvicorn_log_config("json")["formatters"]
    assert json_["default"]["()"] is JsonFormatter
    assert json_["access"]["()"] is JsonAccessFormatter
    JsonFormatter(use_colors=True)  # uvicorn may pass it to every formatter


def test_redact_bearer_placeholder_with_opaque_token() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "Authorization: Bearer %s (%d)", ("opaque123", 7), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "Authorization: Bearer REDACTED (7)"


def test_redact_never_raises_on_a_broken_call() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s %s", ("a",), None)
    assert RedactTokens().filter(record) is True


# -- formats -------------------------------------------------------------------
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Captured:
    """A logger whose records go through RedactTokens and ``formatter`` into a buffer,
    as on a real handler."""

    def __init__(self, formatter: logging.Formatter, name: str = "ssehub.test") -> None:
        self.out = io.StringIO()
        self.handler = logging.StreamHandler(self.out)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(RedactTokens())
        self.logger = logging.Logger(name, logging.DEBUG)  # not registered: no global state
        self.logger.addHandler(self.handler)

    def lines(self) -> list[str]:
        return self.out.getvalue().removesuffix("\n").split("\n")  # as JSON Lines readers do

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


def test_json_line_has_the_fields() -> None:
    log = Captured(JsonFormatter())
    before = datetime.now(UTC)
    log.logger.info(
        "stream %s opened for %s", "c-1", "u1", extra={"user": "u1", "stream": "c-1", "n": 3}
    )
    [line] = log.lines()
    obj = json.loads(line)
    assert list(obj)[:4] == ["time", "level", "logger", "message"]
    assert obj["level"] == "INFO"
    assert obj["logger"] == "ssehub.test"
    assert obj["message"] == "stream c-1 opened for u1"
    assert (obj["user"], obj["stream"], obj["n"]) == ("u1", "c-1", 3)
    assert RFC3339_MS.match(obj["time"]), obj["time"]
    when = datetime.fromisoformat(obj["time"])
    assert when.tzinfo == UTC
    assert abs((when - before).total_seconds()) < 5
    assert "exc_info" not in obj


def test_json_time_is_the_records_time_in_utc() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = 1_800_000_000.25, 250.0
    obj = json.loads(JsonFormatter().format(record))
    assert obj["time"] == "2027-01-15T08:00:00.250Z"


def test_json_exception_is_one_line_with_a_string_field() -> None:
    log = Captured(JsonFormatter())
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.logger.exception("batch %d failed", 7, extra={"batch": 7})
    [line] = log.lines()
    obj = json.loads(line)
    assert obj["level"] == "ERROR"
    assert obj["message"] == "batch 7 failed"
    assert obj["batch"] == 7
    assert isinstance(obj["exc_info"], str)
    assert obj["exc_info"].startswith("Traceback (most recent call last):")
    assert obj["exc_info"].rstrip().endswith("ValueError: bad\nvalue")


def test_json_message_with_newlines_stays_one_line() -> None:
    log = Captured(JsonFormatter())
    log.logger.warning("two\nlines\r\nand a \u2028 separator")
    [line] = log.lines()
    assert json.loads(line)["message"] == "two\nlines\r\nand a \u2028 separator"


def test_json_fields_that_json_cannot_hold_become_text() -> None:
    log = Captured(JsonFormatter())
    log.logger.info("odd", extra={"big": 1 << 70, "thing": object(), "when": datetime(2026, 1, 1)})
    obj = log.objects()[0]
    assert obj["big"] == str(1 << 70)
    assert obj["thing"].startswith("<object object")
    assert obj["when"].startswith("2026-01-01")


def test_json_extra_cannot_overwrite_the_base_fields() -> None:
    log = Captured(JsonFormatter())
    log.logger.info("m", extra={"level": "FAKE", "time": "then", "logger": "other"})
    obj = log.objects()[0]
    assert (obj["level"], obj["logger"]) == ("INFO", "ssehub.test")
    assert RFC3339_MS.match(obj["time"])


def test_json_leaves_out_uvicorns_colour_copy() -> None:
    log = Captured(JsonFormatter())
    log.logger.info("Uvicorn running", extra={"color_message": "\x1b[1mUvicorn\x1b[0m"})
    assert "color_message" not in log.objects()[0]


def test_json_redacts_message_fields_and_tracebacks() -> None:
    log = Captured(JsonFormatter())
    log.logger.info("Authorization: Bearer %s", TOKEN, extra={"header": f"Bearer {TOKEN}"})
    try:
        raise RuntimeError(f"GET /sse/connect?token={TOKEN}")
    except RuntimeError:
        log.logger.exception("request failed")
    text = log.out.getvalue()
    assert TOKEN not in text
    for segment in TOKEN.split("."):
        assert segment not in text
    first, second = log.objects()
    assert first["message"] == "Authorization: Bearer REDACTED"
    assert first["header"] == "Bearer REDACTED"
    assert "token=REDACTED" in second["exc_info"]


def test_json_access_record_has_the_request_and_no_token() -> None:
    log = Captured(JsonAccessFormatter(), "uvicorn.access")
    record = access_record(f"/sse/connect?lastEventId=3&token={TOKEN}")
    log.handler.handle(record)
    [line] = log.lines()
    assert TOKEN not in line
    obj = json.loads(line)
    assert obj["logger"] == "uvicorn.access"
    assert obj["message"] == (
        '127.0.0.1:5000 - "GET /sse/connect?lastEventId=3&token=REDACTED HTTP/1.1" 200'
    )
    assert obj["client"] == "127.0.0.1:5000"
    assert obj["method"] == "GET"
    assert obj["path"] == "/sse/connect?lastEventId=3&token=REDACTED"
    assert obj["status"] == 200
    assert obj["http_version"] == "1.1"


def test_text_format_is_unchanged() -> None:
    log = Captured(logging.Formatter(uvicorn_log_config("text")["formatters"]["default"]["format"]))
    log.logger.info("refused a stream: 401 %s", "token_expired", extra={"reason": "x"})
    [line] = log.lines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(stamp + r" INFO ssehub\.test: refused a stream: 401 token_expired", line)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_logging_sets_the_root_handlers_format(
    restore_logging: None, log_format: LogFormat
) -> None:
    for handler in list(logging.getLogger().handlers):  # basicConfig adds only to a bare root
        logging.getLogger().removeHandler(handler)
    configure_logging("info", log_format)
    [handler] = logging.getLogger().handlers
    assert any(isinstance(f, RedactTokens) for f in handler.filters)
    if log_format == "json":
        assert isinstance(handler.formatter, JsonFormatter)
    else:
        assert handler.formatter is not None and handler.formatter._fmt == LOG_FORMAT


# -- the setting -----------------------------------------------------------------
def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSEHUB_LOG_FORMAT", raising=False)
    assert Settings(_env_file=None).log_format == "json"
    monkeypatch.setenv("SSEHUB_LOG_FORMAT", "Text")
    settings = Settings(_env_file=None)
    assert settings.log_format == "text"
    assert "log_format" in settings.model_fields_set  # what `ssehub dev` looks at
    monkeypatch.setenv("SSEHUB_LOG_FORMAT", "logfmt")
    with pytest.raises(ConfigError, match="SSEHUB_LOG_FORMAT"):
        load_settings(_env_file=None)
