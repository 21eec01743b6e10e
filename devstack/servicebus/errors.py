"""Broker errors that know their wire form: the AMQP condition and management status code.

The SDK maps the condition symbol to its exception classes (``amqp:not-found`` to
``MessagingEntityNotFoundError``, ``com.microsoft:message-lock-lost`` to ``MessageLockLostError``,
...), so the model raises these and the wire layer only copies ``condition``/``status_code`` out.
"""

from __future__ import annotations

NOT_FOUND = "amqp:not-found"
NOT_ALLOWED = "amqp:not-allowed"
UNAUTHORIZED = "amqp:unauthorized-access"
INTERNAL_ERROR = "amqp:internal-error"
CONNECTION_FORCED = "amqp:connection:forced"
DECODE_ERROR = "amqp:decode-error"
NOT_IMPLEMENTED = "amqp:not-implemented"
MESSAGE_LOCK_LOST = "com.microsoft:message-lock-lost"
MESSAGE_NOT_FOUND = "com.microsoft:message-not-found"
ARGUMENT_ERROR = "com.microsoft:argument-error"


class BrokerError(Exception):
    """Base class: ``condition`` goes into AMQP errors, ``status_code`` into management replies."""

    condition = INTERNAL_ERROR
    status_code = 500

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class EntityNotFoundError(BrokerError):
    """No queue, topic, subscription or management node at that address."""

    condition = NOT_FOUND
    status_code = 404


class NotAllowedError(BrokerError):
    """The address exists but not for this use (sending to a subscription, receiving from a topic)."""

    condition = NOT_ALLOWED
    status_code = 400


class UnauthorizedError(BrokerError):
    """No valid CBS token was put on the connection before attaching, or the token is bad."""

    condition = UNAUTHORIZED
    status_code = 401


class MessageLockLostError(BrokerError):
    """The lock token is unknown, expired, or already settled (Service Bus answers 410 Gone)."""

    condition = MESSAGE_LOCK_LOST
    status_code = 410


class MessageNotFoundError(BrokerError):
    """No (deferred) message with that sequence number."""

    condition = MESSAGE_NOT_FOUND
    status_code = 404


class ArgumentError(BrokerError):
    """A management request is missing a field or has one of the wrong type."""

    condition = ARGUMENT_ERROR
    status_code = 400


class MessageSizeExceededError(BrokerError):
    """A transfer larger than the entity's maximum message size (256 KiB, the Standard tier)."""

    condition = "amqp:link:message-size-exceeded"
    status_code = 413


class CodecError(BrokerError):
    """Bytes that are not an AMQP message (sections) where one was expected."""

    condition = DECODE_ERROR
    status_code = 400
