"""ssehub.storage.identity, the pure parts: a store in words, and RabbitMQ's
refusal of another deployment's id in one line naming both sides."""

from __future__ import annotations

import os

import pytest
from ssehub.errors import ConfigError
from ssehub.storage.identity import (
    ID_ARGUMENT,
    MARKER,
    StoreIdentity,
    WrongStore,
    describe_store,
    marker_arguments,
    refusal,
)

OURS = StoreIdentity("b4a6ca1965217a8a", "the SQLite file /srv/b/ssehub.db")
# RabbitMQ 3.10.8's words, as the broker sent them (tests/test_deployment.py
# checks them against the real broker)
SAME_TYPE = (
    "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue "
    "'ssehub.deployment' in vhost 'prod': received 'b4a6ca1965217a8a' but current is "
    "'9741c45c2004445b'"
)
OTHER_TYPE = (
    "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue "
    "'ssehub.deployment' in vhost 'prod': received 'b4a6ca1965217a8a' but current is the "
    "value '9741c45c2004445b' of type 'longstr'"
)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite+aiosqlite:////srv/a/ssehub.db", "the SQLite file /srv/a/ssehub.db"),
        ("sqlite:///relative.db", f"the SQLite file {os.path.abspath('relative.db')}"),
        ("sqlite+aiosqlite://", "an in-memory SQLite database"),
        ("sqlite:///:memory:", "an in-memory SQLite database"),
        (
            "postgresql+asyncpg://ssehub:pa55-w0rd@db.internal:6432/events",
            "the PostgreSQL database 'events' at db.internal:6432",
        ),
        ("postgresql://postgres@/events", "the PostgreSQL database 'events' at localhost:5432"),
    ],
)
def test_a_store_in_words_never_with_its_password(url: str, words: str) -> None:
    assert describe_store(url) == words


def test_the_marker_holds_the_id_in_an_argument_rabbitmq_compares() -> None:
    args = marker_arguments("9741c45c2004445b")
    assert args[ID_ARGUMENT] == "9741c45c2004445b"
    # the routing key is refused without it; ssehub.internal, which the processes'
    # users may write to (an earlier version's named the default exchange)
    assert args["x-dead-letter-exchange"] == "ssehub.internal"
    assert args["x-max-length"] == 0
    assert marker_arguments("9741c45c2004445b", "")["x-dead-letter-exchange"] == ""


@pytest.mark.parametrize("said", [SAME_TYPE, OTHER_TYPE], ids=["same-type", "other-type"])
def test_another_deployments_id_is_one_line_naming_both(said: str) -> None:
    error = refusal(OURS, said)
    assert isinstance(error, WrongStore) and isinstance(error, ConfigError)
    message = str(error)
    assert "\n" not in message
    assert message.startswith("SSEHUB_DATABASE_URL: ")
    assert "the SQLite file /srv/b/ssehub.db is the store of deployment b4a6ca1965217a8a" in message
    assert "RabbitMQ vhost 'prod' belongs to deployment 9741c45c2004445b" in message
    assert f"delete the queue {MARKER!r}" in message  # the way to replace a store on purpose
    assert "PRECONDITION" not in message


def test_a_cut_off_reply_still_refuses() -> None:
    # the broker's reply text is at most 255 bytes: a long vhost name cuts the end off
    said = SAME_TYPE[: SAME_TYPE.index("current is") + 12]
    message = str(refusal(OURS, said))
    assert isinstance(refusal(OURS, said), WrongStore)
    assert "belongs to another deployment" in message


def test_a_marker_declared_otherwise_is_named() -> None:
    said = (
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'ssehub.deployment' "
        "in vhost 'prod': received '0' but current is '10'"
    )
    error = refusal(OURS, said)
    assert not isinstance(error, WrongStore)
    assert str(error).startswith("SSEHUB_RABBITMQ_URL: the queue 'ssehub.deployment'")
    assert "delete it" in str(error)
