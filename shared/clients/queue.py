"""Putting onboarding requests on the Service Bus queue: HTTP intake and delayed retries.

Also home of :class:`ServiceBusSenderHandle`, the one-long-lived-sender wrapper the events
publisher shares: opening a sender (connect, sign in, attach) costs about half a second, later
sends about a millisecond, so each process keeps one sender per entity and serialises use of it
with a lock (the SDK's sync handlers are not thread-safe).

Errors are azure-servicebus's own (``ServiceBusError`` and subclasses such as
``ServiceBusConnectionError``, ``MessageSizeExceededError``), passed through unchanged; the SDK
already retries transient ones (3 tries, exponential back-off) before raising.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import MessageSizeExceededError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from types import TracebackType

    from azure.core.credentials import TokenCredential
    from azure.servicebus import ServiceBusSender

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class ServiceBusSenderHandle:
    """One open sender, shared by every thread of the process, plus the client that made it.

    Parameters
    ----------
    sender
        An open (or lazily opening) ``ServiceBusSender``.
    client
        The ``ServiceBusClient`` it came from, when this object owns it; closed by :meth:`close`.
    """

    entity_kind = "queue"
    """``queue`` or ``topic``: which kind of entity the ``from_*`` constructors open a sender on."""

    @classmethod
    def from_connection_string(cls, conn_str: str, entity: str, *, ca_bundle: str | None = None) -> Self:
        """Build from a connection string (the local stack, or shared-key setups).

        ``ca_bundle``: a CA file to trust over TLS instead of certifi's bundle, the only one the
        SDK's AMQP transport reads (the app passes ``REQUESTS_CA_BUNDLE``, which its HTTP clients
        already honour).
        """
        return cls._open(ServiceBusClient.from_connection_string(conn_str, connection_verify=ca_bundle), entity)

    @classmethod
    def from_namespace(cls, fully_qualified_namespace: str, credential: TokenCredential, entity: str, *,
                       ca_bundle: str | None = None) -> Self:
        """Build from ``<namespace>.servicebus.windows.net`` and a credential (managed identity)."""
        return cls._open(ServiceBusClient(fully_qualified_namespace, credential, connection_verify=ca_bundle),
                         entity)

    @classmethod
    def _open(cls, client: ServiceBusClient, entity: str) -> Self:
        if cls.entity_kind == "topic":
            return cls(client.get_topic_sender(entity), client=client)
        return cls(client.get_queue_sender(entity), client=client)

    def __init__(self, sender: ServiceBusSender, *, client: ServiceBusClient | None = None) -> None:
        self._sender = sender
        self._client = client
        self._lock = threading.Lock()
        self._closed = False

    def open_link(self) -> None:
        """Open the sender's link now (the SDK opens it on the first send, which then takes about
        half a second longer): a fresh worker calls this on a thread of its own while it starts."""
        with self._lock:
            self._check_open()
            self._sender.__enter__()  # opens the link; the same sender serves every later send

    def _send_all(self, messages: Sequence[ServiceBusMessage]) -> None:
        """Send ``messages`` in as few round trips as fit the entity's batch size limit."""
        if not messages:
            return
        with self._lock:
            self._check_open()
            if len(messages) == 1:
                self._sender.send_messages(messages[0])
                return
            batch = self._sender.create_message_batch()
            for message in messages:
                try:
                    batch.add_message(message)
                except MessageSizeExceededError:
                    # The batch is full. An empty batch that cannot take the message means it is
                    # too big on its own; the single send raises the SDK's own error for that.
                    if len(batch) == 0:
                        self._sender.send_messages(message)
                        continue
                    self._sender.send_messages(batch)
                    batch = self._sender.create_message_batch()
                    batch.add_message(message)
            if len(batch):
                self._sender.send_messages(batch)

    def _schedule(self, message: ServiceBusMessage, at: datetime) -> int:
        if at.tzinfo is None:
            raise ValueError("The scheduled time must be timezone-aware (UTC), not a naive datetime.")
        with self._lock:
            self._check_open()
            return self._sender.schedule_messages(message, at)[0]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; build a new one.")

    def check_reachable(self) -> str:
        """Connect, sign in and attach a sender to the entity, then close it, sending nothing: a
        readiness probe. The long-lived sender is not used, since an open link would not notice a
        broker that went away until its next send.

        Raises
        ------
        azure.servicebus.exceptions.ServiceBusError
            The entity cannot be reached, or this identity may not send to it.
        RuntimeError
            This handle does not own its client (built from a bare sender), so it cannot probe.
        """
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} was built from a sender; it cannot open a probe.")
        entity = self._sender.entity_name
        probe = (self._client.get_topic_sender(entity) if self.entity_kind == "topic"
                 else self._client.get_queue_sender(entity))
        with probe:
            probe.create_message_batch()  # opens the link (the link's size limit is read from it)
        return f"{self.entity_kind} {entity} reachable"

    def close(self) -> None:
        """Close the sender and, when owned, its client. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sender.close()
            finally:
                if self._client is not None:
                    self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_no_inline_secret(body: Mapping[str, Any]) -> None:
    """Refuse a body that would put a client secret on the queue (the contract forbids it)."""
    azure = body.get("azure")
    secret = azure.get("secret") if isinstance(azure, Mapping) else None
    if isinstance(secret, Mapping) and (secret.get("source") == "inline" or "value" in secret):
        raise ValueError(
            "An onboarding request with an inline client secret cannot be queued: write the value to "
            "Key Vault first and queue {'source': 'keyVault', 'secretName': ...} instead."
        )


class RequestQueue(ServiceBusSenderHandle):
    """Sends onboarding requests (JSON) to the onboarding queue, now or at a later time.

    ``message_id`` should be the request's ``requestId`` (for a delayed retry, the same id plus an
    attempt suffix), so the queue's duplicate detection drops a second submission.

    Needs Azure Service Bus Data Sender on the queue.
    """

    entity_kind = "queue"

    def send(
        self,
        body: Mapping[str, Any],
        *,
        message_id: str,
        application_properties: Mapping[str, str | int] | None = None,
    ) -> None:
        """Enqueue ``body`` now.

        Raises
        ------
        ValueError
            The body carries an inline secret, or an argument is invalid.
        TypeError
            The body is not JSON-serialisable (dump pydantic models with ``mode="json"``).
        azure.servicebus.exceptions.ServiceBusError
            The send failed after the SDK's retries.
        """
        self._send_all([self._message(body, message_id, application_properties)])
        logger.info("Queued onboarding request message %s", message_id)

    def schedule(
        self,
        body: Mapping[str, Any],
        *,
        message_id: str,
        at: datetime,
        application_properties: Mapping[str, str | int] | None = None,
    ) -> int:
        """Enqueue ``body`` to become visible at ``at`` (timezone-aware); returns its sequence number.

        The sequence number lets a caller cancel the message (``cancel_scheduled_messages``).

        Raises
        ------
        ValueError
            ``at`` is naive, or the body carries an inline secret.
        azure.servicebus.exceptions.ServiceBusError
            The schedule request failed after the SDK's retries.
        """
        sequence_number = self._schedule(self._message(body, message_id, application_properties), at)
        logger.info("Scheduled onboarding request message %s for %s", message_id, at.isoformat())
        return sequence_number

    @staticmethod
    def _message(
        body: Mapping[str, Any], message_id: str, application_properties: Mapping[str, str | int] | None
    ) -> ServiceBusMessage:
        if not message_id:
            raise ValueError("message_id is required: use the request's requestId.")
        _check_no_inline_secret(body)
        # The SDK's parameter is typed with bytes keys too; copying key by key widens the type.
        properties: dict[str | bytes, Any] = {}
        properties.update((key, value) for key, value in (application_properties or {}).items())
        return ServiceBusMessage(
            json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            content_type=JSON_CONTENT_TYPE,
            message_id=message_id,
            application_properties=properties,
        )
