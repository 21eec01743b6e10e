"""What the Functions host sends the worker for each trigger: the trigger's data and its metadata,
as the host and its extensions shape them (and what they leave out).

* **Service Bus** (extension 5.x, one message): the body as bytes, and the binding data the
  extension's trigger strategy adds: ``DeliveryCount`` (from 1), ``DeadLetterSource``, ``LockToken``,
  ``ExpiresAtUtc`` / ``ExpiresAt``, ``EnqueuedTimeUtc`` / ``EnqueuedTime``, ``MessageId``,
  ``ContentType``, ``ReplyTo``, ``SequenceNumber``, ``To``, ``Subject`` / ``Label``,
  ``CorrelationId``, ``ApplicationProperties`` / ``UserProperties``, ``SessionId``,
  ``ReplyToSessionId``, ``PartitionKey``, ``TransactionPartitionKey``; empty values left out. There
  is no ``DeadLetterReason`` or ``DeadLetterErrorDescription``: a dead-lettered message carries
  them in its application properties.
* **HTTP**: an ``RpcHttp`` with the method, the URL, the headers, the route parameters (percent-
  decoded), the query (a key given twice joined with commas, as the host's ``IQueryCollection``
  does) and the raw body bytes; the worker announced ``RawHttpBodyBytes`` and
  ``RpcHttpTriggerMetadataRemoved``, so there is no trigger metadata.
* **Timer**: ``{"Schedule": {"AdjustForDST": true}, "ScheduleStatus": {...}, "IsPastDue": ...}``.
* **Event Grid**: the event as JSON. **Warmup**: an empty JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from devstack.worker import Worker


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def service_bus_message(worker: Worker, received: Any) -> tuple[Any, dict[str, Any]]:
    """The data and trigger metadata of one received ``azure.servicebus`` message."""
    body = received.body if isinstance(received.body, bytes) else b"".join(received.body)
    properties = {str(_text(k)): _text(v) for k, v in (received.application_properties or {}).items()}
    enqueued, expires = received.enqueued_time_utc, received.expires_at_utc
    values: dict[str, Any] = {
        # The AMQP header counts earlier failed deliveries (0 on the first); the extension reports
        # the .NET SDK's DeliveryCount, which counts this one too.
        "DeliveryCount": (received.delivery_count or 0) + 1,
        "DeadLetterSource": received.dead_letter_source,
        "LockToken": str(received.lock_token) if received.lock_token else None,
        "ExpiresAtUtc": expires, "ExpiresAt": expires,
        "EnqueuedTimeUtc": enqueued, "EnqueuedTime": enqueued,
        "MessageId": str(received.message_id) if received.message_id is not None else None,
        "ContentType": received.content_type, "ReplyTo": received.reply_to,
        "SequenceNumber": received.sequence_number, "To": received.to,
        "Subject": received.subject, "Label": received.subject, "CorrelationId": received.correlation_id,
        "ApplicationProperties": properties, "UserProperties": properties,
        "SessionId": received.session_id, "ReplyToSessionId": received.reply_to_session_id,
        "PartitionKey": received.partition_key,  # (no TransactionPartitionKey: the broker sets none)
    }
    metadata = {name: worker.typed(value) for name, value in values.items() if value is not None}
    return worker.protos.TypedData(bytes=body), metadata


def http_request(worker: Worker, *, method: str, url: str, headers: Mapping[str, str], route_params: Mapping[str, str],
                 query: list[tuple[str, str]], body: bytes) -> Any:
    """The ``RpcHttp`` of one request (route parameters already decoded by the router)."""
    joined: dict[str, str] = {}
    for key, value in query:
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    http = worker.protos.RpcHttp(method=method, url=url, headers=dict(headers), params=dict(route_params),
                                 query=joined, body=worker.protos.TypedData(bytes=body))
    return worker.protos.TypedData(http=http)


def timer(worker: Worker, *, past_due: bool, last: dt.datetime | None, next_due: dt.datetime) -> Any:
    status = {"Last": (last or dt.datetime(1, 1, 1, tzinfo=dt.UTC)).isoformat(), "Next": next_due.isoformat(),
              "LastUpdated": dt.datetime.now(dt.UTC).isoformat()}
    return worker.protos.TypedData(json=json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status,
                                                    "IsPastDue": past_due}))


def event_grid_event(worker: Worker, event: Mapping[str, Any]) -> Any:
    return worker.protos.TypedData(json=json.dumps(event))


def warmup(worker: Worker) -> Any:
    return worker.protos.TypedData(json="{}")
