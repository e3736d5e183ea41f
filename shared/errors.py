"""Outcomes named as exceptions, all under one root."""

from __future__ import annotations


class SsehubError(Exception):
    """Root of every error ssehub raises on purpose."""


class ConfigError(SsehubError):
    """A setting is missing or invalid; the message names it."""


class InvalidMessage(SsehubError):
    """A published AMQP message breaks the contract; the message says how."""


class AuthError(SsehubError):
    """A request carries no usable token. ``code`` is the JSON ``error`` field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StoreUnavailable(SsehubError):
    """The database cannot be reached or failed mid-operation."""


class StoreRejected(SsehubError):
    """The database refused a value it was given (a data error, not an outage):
    retrying the same batch fails the same way, so its messages are handled one
    at a time and the one at fault is dead-lettered."""


class PortUnavailable(SsehubError):
    """A service cannot listen on its port (in use, or not allowed); the message says which."""


class BrokerUnavailable(SsehubError):
    """RabbitMQ cannot be reached, or refused what we asked."""


class PublishError(SsehubError):
    """The broker did not confirm a published message."""


def unwrap(exc: BaseException) -> BaseException:
    """The one error inside task groups' ExceptionGroups, if there is only one
    (what ended a service, to report as itself: a ConfigError in one line)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
