"""Event Grid's push delivery to webhooks, as a system topic's subscriptions use it.

A stand-in that publishes events (Key Vault) owns one :class:`EventGridTopic`: subscriptions with
their filters, the webhook protocol, and a record of every delivery for tests to read.

What the webhook sees is Event Grid's protocol (Event Grid schema):

* at subscription time, the validation handshake: a POST with ``aeg-event-type:
  SubscriptionValidation`` and one ``Microsoft.EventGrid.SubscriptionValidationEvent`` whose
  ``data.validationCode`` the endpoint must echo as ``{"validationResponse": ...}`` with 200;
  otherwise the subscription is not created;
* then one POST per event (``maxEventsPerBatch`` 1, Event Grid's default): a JSON array holding the
  event, ``aeg-event-type: Notification``, ``aeg-subscription-name``, ``aeg-delivery-count``,
  ``aeg-data-version``, ``aeg-metadata-version``. 200-204 is a success.

Not modelled: retries with backoff, dead-lettering, batching, CloudEvents schema delivery,
advanced filters, Entra-protected webhooks, manual validation through ``validationUrl``. Endpoints
must be on the loopback interface: the stand-ins reach no network. Event Grid insists on HTTPS;
plain HTTP is taken for loopback endpoints because the local Functions host serves plain HTTP.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

SUCCESS_STATUSES: Final = frozenset({200, 201, 202, 203, 204})
DELIVERY_TIMEOUT_SECONDS: Final = 30.0  # Event Grid waits 30 s for a webhook's answer
_NAME = re.compile(r"[A-Za-z0-9-]{3,64}")
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class EventGridError(ValueError):
    """A subscription that cannot be made, with the reason a person can act on."""


def format_event_time(moment: dt.datetime) -> str:
    """Event Grid's ``eventTime``: UTC, seven fractional digits, ``Z``."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: object) -> str:
    """The webhook URL when Event Grid (and a machine with no network) can deliver to it."""
    if not isinstance(endpoint, str) or not endpoint:
        raise EventGridError("'endpoint' must be the webhook's URL.")
    split = urlsplit(endpoint)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise EventGridError(f"'endpoint' must be an http(s) URL, not {endpoint!r}.")
    if not _is_loopback(split.hostname):
        raise EventGridError(f"'endpoint' must be on this machine (127.0.0.1, ::1 or localhost): the local "
                             f"stack reaches no network, and {split.hostname!r} is not loopback.")
    return endpoint


@dataclass(frozen=True)
class Subscription:
    """One event subscription: where to deliver, which event types, which subjects."""

    name: str
    endpoint: str
    event_types: tuple[str, ...]
    subject_begins_with: str | None
    created: int  # the publisher's clock, Unix seconds: events for objects made before it are not sent

    def matches(self, event: dict[str, Any]) -> bool:
        if event.get("eventType") not in self.event_types:
            return False
        prefix = self.subject_begins_with
        return not prefix or str(event.get("subject", "")).lower().startswith(prefix.lower())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "endpoint": self.endpoint, "eventTypes": list(self.event_types),
                "subjectBeginsWith": self.subject_begins_with, "created": self.created}


@dataclass
class Delivery:
    """One POST of one event to one subscription's webhook, and how it went."""

    subscription: str
    endpoint: str
    event: dict[str, Any]
    status: int | None = None
    error: str | None = None
    delivered_at: str = field(default_factory=lambda: format_event_time(dt.datetime.now(dt.UTC)))

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCESS_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {"subscription": self.subscription, "endpoint": self.endpoint,
                "eventType": self.event.get("eventType"), "eventId": self.event.get("id"),
                "subject": self.event.get("subject"), "event": self.event, "status": self.status,
                "succeeded": self.succeeded, "error": self.error, "deliveredAt": self.delivered_at}


class EventGridTopic:
    """A system topic's subscriptions and deliveries; thread-safe, resettable.

    ``topic`` is the source's resource id, the ``topic`` of every event; ``verify`` is what
    ``requests`` checks a webhook's certificate with (default: the environment's CA bundle).
    """

    def __init__(self, topic: str, *, known_event_types: frozenset[str], verify: bool | str = True) -> None:
        self.topic = topic
        self.known_event_types = known_event_types
        self.verify = verify
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._deliveries: list[Delivery] = []

    def reset(self) -> None:
        with self._lock:
            self._subscriptions.clear()
            self._deliveries.clear()

    # -- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, spec: object, *, created: int) -> Subscription:
        """Check a subscription request, run the validation handshake, then keep it."""
        if not isinstance(spec, dict):
            raise EventGridError("A JSON object with 'endpoint' and 'eventTypes' is required.")
        unknown = set(spec) - {"endpoint", "eventTypes", "subjectBeginsWith", "name"}
        if unknown:
            raise EventGridError(f"Unknown properties: {', '.join(sorted(unknown))}; known: endpoint, eventTypes, "
                                 "subjectBeginsWith, name.")
        endpoint = check_endpoint(spec.get("endpoint"))
        types = spec.get("eventTypes")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise EventGridError("'eventTypes' must be a non-empty list of event type names, e.g. "
                                 f"{sorted(self.known_event_types)}.")
        strange = [t for t in types if t not in self.known_event_types]
        if strange:
            raise EventGridError(f"Event types {strange} are not published here; the ones modelled are "
                                 f"{sorted(self.known_event_types)}.")
        prefix = spec.get("subjectBeginsWith")
        if prefix is not None and not isinstance(prefix, str):
            raise EventGridError("'subjectBeginsWith' must be a string.")
        name = spec.get("name", f"sub-{uuid.uuid4().hex[:12]}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise EventGridError("'name' must be 3-64 letters, digits or hyphens.")
        with self._lock:
            if name.lower() in self._subscriptions:
                raise EventGridError(f"A subscription named {name!r} exists already; delete it first.")
        subscription = Subscription(name=name, endpoint=endpoint, event_types=tuple(dict.fromkeys(types)),
                                    subject_begins_with=prefix or None, created=created)
        self._handshake(subscription)
        with self._lock:
            self._subscriptions[name.lower()] = subscription
        return subscription

    def unsubscribe(self, name: str) -> bool:
        with self._lock:
            return self._subscriptions.pop(name.lower(), None) is not None

    def clear_subscriptions(self) -> None:
        with self._lock:
            self._subscriptions.clear()

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subscriptions.values())

    def _handshake(self, subscription: Subscription) -> None:
        code = str(uuid.uuid4()).upper()
        event = {
            "id": str(uuid.uuid4()),
            "topic": self.topic,
            "subject": "",
            "data": {"validationCode": code},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": format_event_time(dt.datetime.now(dt.UTC)),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
        failed = (f"The attempt to validate the provided endpoint {subscription.endpoint} failed: "
                  "Event Grid needs 200 with {\"validationResponse\": \"<the validationCode>\"}")
        try:
            response = self._post(subscription, [event], "SubscriptionValidation")
        except requests.RequestException as exc:
            raise EventGridError(f"{failed}; the POST failed ({type(exc).__name__}).") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict) or answer.get("validationResponse") != code:
            raise EventGridError(f"{failed}; it answered {response.status_code} {response.text[:200]!r}.")

    # -- delivery ---------------------------------------------------------------------------------

    def publish(self, event: dict[str, Any], *, object_created: int | None = None) -> list[Delivery]:
        """Deliver ``event`` to every matching subscription made before its object; record each."""
        with self._lock:
            targets = [s for s in self._subscriptions.values() if s.matches(event)
                       and (object_created is None or object_created >= s.created)]
        deliveries = []
        for subscription in targets:
            delivery = Delivery(subscription.name, subscription.endpoint, event)
            try:
                response = self._post(subscription, [event], "Notification")
                delivery.status = response.status_code
                if not delivery.succeeded:
                    delivery.error = f"the webhook answered {response.status_code}; Event Grid would retry"
            except requests.RequestException as exc:
                delivery.error = f"{type(exc).__name__}: the webhook could not be reached"
            with self._lock:
                self._deliveries.append(delivery)
            deliveries.append(delivery)
        return deliveries

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def clear_deliveries(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def _post(self, subscription: Subscription, events: list[dict[str, Any]], kind: str) -> requests.Response:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "aeg-event-type": kind,
            "aeg-subscription-name": subscription.name.upper(),
            "aeg-delivery-count": "0",
            "aeg-data-version": str(events[0].get("dataVersion", "")),
            "aeg-metadata-version": "1",
        }
        return requests.post(subscription.endpoint, data=json.dumps(events).encode(), headers=headers,
                             timeout=DELIVERY_TIMEOUT_SECONDS, verify=self.verify, allow_redirects=False)
