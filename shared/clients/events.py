"""Onboarding events: CloudEvents 1.0 in structured JSON mode on the events topic.

Ticketing systems close or update tickets from these, so the shape is part of the contract
(product brief, "Events"): ``type`` is ``palette.onboarding.<short type>``, ``subject`` is the
Palette account name, ``data`` is a JSON object that always carries ``requestId``.

Event ids are derived, not random (:func:`event_id`): re-running a step after a crash or a
redelivered message publishes the same id again, which the topic's duplicate detection (on
``message_id``) and any consumer can drop. A refused request run again under its requestId with a
corrected body is a new run whose events get ids of their own (:func:`of_run`).

Callers put only ids, uids, step names, outcomes and check results in ``data``: never a secret
value, a token or a request body that might hold one. Nothing here inspects ``data`` for secrets;
the contract is kept by what the pipeline chooses to pass.
"""

from __future__ import annotations

import json
import logging
import uuid
from base64 import b64encode
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core.messaging import CloudEvent
from azure.servicebus import ServiceBusMessage

from shared.clients.queue import ServiceBusSenderHandle

logger = logging.getLogger(__name__)

EVENT_TYPE_PREFIX = "palette.onboarding."
EVENT_TYPES = (
    "requested",
    "secret.stored",
    "account.registered",
    "account.updated",
    "sshkey.uploaded",
    "apikey.created",
    "validated",
    "failed",
    "secret.rotated",
    "rotation.failed",
    "rotation.blocked",
    "secret.expiring",
    "drift.detected",
    "drift.resolved",
    "account.permissions_drifted",
    "apikey.renewed",
    "apikey.deactivated",
    "apikey.reactivated",
    "apikey.deleted",
    "offboarded",
)
DEFAULT_SOURCE = "/palette-onboarding"
SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

# Fixed namespace for event ids: changing it would change every id and break de-duplication.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c2b0e-8d3a-5c47-9e1f-2a4b6c8d0e13")


def _full_type(event_type: str) -> str:
    """``validated`` or ``palette.onboarding.validated`` -> ``palette.onboarding.validated``."""
    short = event_type.removeprefix(EVENT_TYPE_PREFIX)
    if short not in EVENT_TYPES:
        raise ValueError(f"Unknown event type {event_type!r}: use one of {', '.join(EVENT_TYPES)}.")
    return EVENT_TYPE_PREFIX + short


def event_id(request_id: str, event_type: str, discriminator: str = "") -> str:
    """A stable id for "this kind of event, for this request (and this discriminator)".

    A UUID version 5 over the three values, so the same step outcome always gets the same id.
    ``discriminator`` separates events that would otherwise collide: the step name of a
    ``failed`` event, or the rotation run of a ``secret.rotated`` one. ``event_type`` may be given
    short (``validated``) or prefixed; both give the same id.
    """
    name = json.dumps([request_id, _full_type(event_type), discriminator], separators=(",", ":"))
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def of_run(document: Mapping[str, Any], run: int) -> dict[str, Any]:
    """``document`` (structured-mode JSON) as an event of run ``run`` of its request: a refused
    request run again under its requestId with a corrected body (run 2, 3, ...).

    Its id is a UUID version 5 over the first run's id (:func:`event_id`) and ``run``: as stable
    as that one within the run, and new to the topic's duplicate detection, which has seen the
    first run's ``failed``. ``data`` gets ``run``. Run 1, or a document already of ``run``, is
    returned as it is.
    """
    data = document.get("data")
    if run <= 1 or (isinstance(data, Mapping) and data.get("run") == run):
        return dict(document)
    name = json.dumps([str(document["id"]), run], separators=(",", ":"))
    out = {**document, "id": str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))}
    if isinstance(data, Mapping):
        out["data"] = {**data, "run": run}
    return out


def build_event(
    *,
    event_type: str,
    account_name: str,
    request_id: str,
    data: Mapping[str, Any],
    source: str = DEFAULT_SOURCE,
    discriminator: str = "",
    time: datetime | None = None,
) -> CloudEvent[dict[str, Any]]:
    """Build one contract event.

    ``data`` gets ``requestId`` added (a different ``requestId`` already in it is an error);
    ``time`` defaults to now and must be timezone-aware.

    Raises
    ------
    ValueError
        Unknown ``event_type``, empty ``request_id`` or ``account_name``, naive ``time``, or a
        conflicting ``requestId`` in ``data``.
    """
    if not request_id:
        raise ValueError("request_id is required for an onboarding event.")
    if not account_name:
        raise ValueError("account_name is required: it is the event's subject.")
    if time is not None and time.tzinfo is None:
        raise ValueError("The event time must be timezone-aware (UTC), not a naive datetime.")
    if data.get("requestId", request_id) != request_id:
        raise ValueError("data['requestId'] differs from request_id; pass one request id.")
    full_type = _full_type(event_type)
    payload = {**data, "requestId": request_id}
    return CloudEvent(
        source,
        full_type,
        specversion=SPEC_VERSION,
        id=event_id(request_id, full_type, discriminator),
        time=time or datetime.now(UTC),
        subject=account_name,
        datacontenttype=DATA_CONTENT_TYPE,
        data=payload,
    )


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def cloud_event_to_dict(event: CloudEvent[Any]) -> dict[str, Any]:
    """The structured-mode JSON object of ``event`` (attributes then ``data``)."""
    out: dict[str, Any] = {
        "specversion": event.specversion or SPEC_VERSION,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        out["subject"] = event.subject
    if event.time is not None:
        out["time"] = _rfc3339(event.time)
    if event.dataschema is not None:
        out["dataschema"] = event.dataschema
    for name, value in (event.extensions or {}).items():
        out[name] = value
    if isinstance(event.data, (bytes, bytearray)):
        if event.datacontenttype is not None:
            out["datacontenttype"] = event.datacontenttype
        out["data_base64"] = b64encode(event.data).decode("ascii")
    elif event.data is not None:
        out["datacontenttype"] = event.datacontenttype or DATA_CONTENT_TYPE
        out["data"] = event.data
    return out


def cloud_event_to_json(event: CloudEvent[Any]) -> str:
    """Serialise ``event`` as a CloudEvents 1.0 structured-mode JSON document.

    Raises
    ------
    TypeError
        ``data`` holds something JSON cannot represent.
    """
    return json.dumps(cloud_event_to_dict(event), separators=(",", ":"), ensure_ascii=False)


def cloud_event_from_json(text: str | bytes) -> CloudEvent[Any]:
    """Parse a structured-mode JSON document back into a ``CloudEvent``.

    Raises
    ------
    ValueError
        Not JSON, or not a CloudEvent (no ``source`` or ``type``).
    """
    return CloudEvent.from_dict(json.loads(text))


def to_service_bus_message(event: CloudEvent[Any]) -> ServiceBusMessage:
    """One Service Bus message for one event: the structured JSON as body, routing fields outside.

    ``message_id`` = the event id (duplicate detection), ``subject`` = the event type (so
    subscriptions can filter on ``sys.Label``), and the ``cloudEvents:type``/``cloudEvents:subject``
    application properties plus ``requestId`` for SQL filters.
    """
    properties: dict[str | bytes, Any] = {"cloudEvents:type": event.type}
    if event.subject is not None:
        properties["cloudEvents:subject"] = event.subject
    if isinstance(event.data, Mapping) and isinstance(event.data.get("requestId"), str):
        properties["requestId"] = event.data["requestId"]
    return ServiceBusMessage(
        cloud_event_to_json(event),
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        message_id=event.id,
        subject=event.type,
        application_properties=properties,
    )


class EventSink(Protocol):
    """What the pipeline needs from a publisher; :class:`EventPublisher` and the recorder fit it."""

    def publish(self, *events: CloudEvent[Any]) -> None: ...

    def open_link(self) -> None: ...

    def close(self) -> None: ...


class EventPublisher(ServiceBusSenderHandle):
    """Publishes events to the events topic through one long-lived, lock-guarded sender.

    ``EventPublisher(sender)`` wraps a sender you own; the ``from_*`` constructors also own (and
    close) the client they make. Build one per process (the first send opens the link, ~0.5 s) and
    share it between threads.
    Needs Azure Service Bus Data Sender on the topic.
    """

    entity_kind = "topic"

    def publish(self, *events: CloudEvent[Any]) -> None:
        """Send each event as its own message; several go in as few batches as fit.

        Raises
        ------
        TypeError
            An event's ``data`` is not JSON-serialisable (nothing is sent).
        azure.servicebus.exceptions.ServiceBusError
            The send failed after the SDK's retries; some batches may already be sent, which is
            safe to repeat because ids are stable.
        """
        messages = [to_service_bus_message(event) for event in events]
        self._send_all(messages)
        for event in events:
            logger.info("Published event %s id %s subject %s", event.type, event.id, event.subject)


class RecordingPublisher:
    """Keeps published events in :attr:`events`; for unit tests of pure pipeline logic only.

    Each event is serialised as :class:`EventPublisher` would, so non-JSON ``data`` fails here too.
    """

    def __init__(self) -> None:
        self.events: list[CloudEvent[Any]] = []

    def publish(self, *events: CloudEvent[Any]) -> None:
        for event in events:
            cloud_event_to_json(event)
        self.events.extend(events)

    def open_link(self) -> None:
        """Nothing to open."""

    def types(self) -> list[str]:
        """Short types in publication order, e.g. ``["requested", "secret.stored"]``."""
        return [event.type.removeprefix(EVENT_TYPE_PREFIX) for event in self.events]

    def close(self) -> None:
        """Nothing to release; present so it can stand where a publisher is closed."""
