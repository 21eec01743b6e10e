"""Key Vault as an Event Grid source: the secret events rotation reacts to.

Key Vault publishes to its system topic (``/subscriptions/<id>/resourceGroups/<rg>/providers/
Microsoft.KeyVault/vaults/<name>``) with the Event Grid schema ("Azure Key Vault as Event Grid
source"):

* ``Microsoft.KeyVault.SecretNewVersionCreated`` when a version is set (delivered at once, in the
  background, as Event Grid pushes it);
* ``Microsoft.KeyVault.SecretNearExpiry``, 30 days before the current version's ``exp``, once per
  version; and ``Microsoft.KeyVault.SecretExpired`` once the current version's ``exp`` has passed.
  The real service fires these from its own clock; here a test names the moment
  (``POST /_devstack/eventgrid/near-expiry {"now": ...}`` or ``.../expired``) and every enabled
  current version the rule covers and that was not announced before is announced now.

``data`` is ``{Id, VaultName, ObjectType, ObjectName, Version, NBF, EXP}``: ``Id`` is the version's
full id URL as ``SecretClient`` shows it, ``NBF``/``EXP`` Unix seconds as numbers (the docs' table;
their sample quotes them) or ``null`` when not set. As Key Vault does, an event goes only to
subscriptions that existed when the version was made.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import TYPE_CHECKING, Any, Final

from devstack.eventgrid import EventGridError, EventGridTopic, format_event_time
from devstack.httpbase import HttpError, Request, Response

if TYPE_CHECKING:
    from devstack.eventgrid import Delivery
    from devstack.keyvault.models import KeyVaultBackend, SecretRecord

SECRET_NEW_VERSION_CREATED: Final = "Microsoft.KeyVault.SecretNewVersionCreated"
SECRET_NEAR_EXPIRY: Final = "Microsoft.KeyVault.SecretNearExpiry"
SECRET_EXPIRED: Final = "Microsoft.KeyVault.SecretExpired"
SECRET_EVENT_TYPES: Final = frozenset({SECRET_NEW_VERSION_CREATED, SECRET_NEAR_EXPIRY, SECRET_EXPIRED})
NEAR_EXPIRY_DAYS: Final = 30
# The stack's stand-in Azure subscription and resource group, for the vault's resource id.
DEVSTACK_SUBSCRIPTION_ID: Final = "00000000-0000-4000-8000-00000000d5ac"
DEVSTACK_RESOURCE_GROUP: Final = "devstack"


def vault_resource_id(vault_name: str) -> str:
    return (f"/subscriptions/{DEVSTACK_SUBSCRIPTION_ID}/resourceGroups/{DEVSTACK_RESOURCE_GROUP}"
            f"/providers/Microsoft.KeyVault/vaults/{vault_name}")


def _admin_object(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(request.body) if request.body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HttpError(400, "BadRequest", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "BadRequest", "A JSON object is required.")
    return payload


def _moment(payload: dict[str, Any]) -> dt.datetime:
    unknown = set(payload) - {"now"}
    if unknown:
        raise HttpError(400, "BadRequest", f"Unknown properties: {', '.join(sorted(unknown))}; only 'now' is known.")
    value = payload.get("now")
    if not isinstance(value, str):
        raise HttpError(400, "BadRequest", "'now' is required: the moment to evaluate, an RFC 3339 date-time "
                                           "with its offset, e.g. 2030-01-01T00:00:00Z.")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise HttpError(400, "BadRequest", f"'now' must be an RFC 3339 date-time with its offset, not {value!r}.")
    return moment.astimezone(dt.UTC)


class VaultEvents:
    """The vault's system topic: builds Key Vault's events, remembers what was announced."""

    def __init__(self, backend: KeyVaultBackend, *, vault_name: str, verify: bool | str = True) -> None:
        self.backend = backend
        self.vault_name = vault_name
        self.topic = EventGridTopic(vault_resource_id(vault_name), known_event_types=SECRET_EVENT_TYPES,
                                    verify=verify)
        self._lock = threading.Lock()
        self._announced: set[tuple[str, str, str]] = set()  # (event type, secret, version)

    def reset(self) -> None:
        self.topic.reset()
        with self._lock:
            self._announced.clear()

    def event(self, event_type: str, vault_url: str, record: SecretRecord, at: dt.datetime) -> dict[str, Any]:
        version = record.version
        return {
            "id": str(uuid.uuid4()),
            "topic": self.topic.topic,
            "subject": record.name,
            "eventType": event_type,
            "eventTime": format_event_time(at),
            "data": {
                "Id": f"{vault_url}/secrets/{record.name}/{version.version}",
                "VaultName": self.vault_name,
                "ObjectType": "Secret",
                "ObjectName": record.name,
                "Version": version.version,
                "NBF": version.not_before,
                "EXP": version.expires,
            },
            "dataVersion": "1",
            "metadataVersion": "1",
        }

    def new_version(self, vault_url: str, record: SecretRecord) -> None:
        """Announce a new version in the background, as Event Grid pushes after the PUT answered."""
        if not any(SECRET_NEW_VERSION_CREATED in s.event_types for s in self.topic.subscriptions()):
            return
        event = self.event(SECRET_NEW_VERSION_CREATED, vault_url, record, dt.datetime.now(dt.UTC))
        threading.Thread(target=self.topic.publish, args=(event,), kwargs={"object_created": record.version.created},
                         name="keyvault-eventgrid", daemon=True).start()

    def sweep(self, event_type: str, vault_url: str, now: dt.datetime) -> tuple[list[dict[str, Any]], list[Delivery]]:
        """Announce every enabled current version ``event_type``'s rule covers at ``now``, once each."""
        instant = now.timestamp()
        horizon = instant + NEAR_EXPIRY_DAYS * 86400
        events: list[dict[str, Any]] = []
        deliveries: list[Delivery] = []
        for record in self.backend.current_versions():
            version = record.version
            if not version.enabled or version.expires is None:
                continue
            due = (instant < version.expires <= horizon) if event_type == SECRET_NEAR_EXPIRY \
                else version.expires <= instant
            key = (event_type, record.name.lower(), version.version)
            with self._lock:
                if not due or key in self._announced:
                    continue
                self._announced.add(key)
            event = self.event(event_type, vault_url, record, now)
            events.append(event)
            deliveries.extend(self.topic.publish(event, object_created=version.created))
        return events, deliveries

    def admin(self, request: Request, subpath: str, vault_url: str) -> Response | None:
        """``/_devstack/eventgrid/...``: subscriptions, the clock-driven events, the deliveries."""
        parts = subpath.split("/")
        if parts[0] != "eventgrid":
            return None
        route = "/".join(parts[1:2])
        method = request.method
        if route == "subscriptions" and len(parts) == 2:
            if method == "POST":
                try:
                    subscription = self.topic.subscribe(_json_or_error(request), created=self.backend.now())
                except EventGridError as exc:
                    raise HttpError(400, "BadRequest", str(exc)) from None
                return Response.json(201, subscription.to_json())
            if method == "GET":
                return Response.json(200, {"items": [s.to_json() for s in self.topic.subscriptions()]})
            if method == "DELETE":
                self.topic.clear_subscriptions()
                return Response.empty()
        if route == "subscriptions" and len(parts) == 3 and method == "DELETE":
            if not self.topic.unsubscribe(parts[2]):
                raise HttpError(404, "NotFound", f"No subscription named {parts[2]!r}.")
            return Response.empty()
        if route in ("near-expiry", "expired") and len(parts) == 2 and method == "POST":
            event_type = SECRET_NEAR_EXPIRY if route == "near-expiry" else SECRET_EXPIRED
            events, deliveries = self.sweep(event_type, vault_url, _moment(_admin_object(request)))
            return Response.json(200, {"events": events, "deliveries": [d.to_json() for d in deliveries]})
        if route == "deliveries" and len(parts) == 2:
            if method == "GET":
                return Response.json(200, {"items": [d.to_json() for d in self.topic.deliveries()]})
            if method == "DELETE":
                self.topic.clear_deliveries()
                return Response.empty()
        return None


def _json_or_error(request: Request) -> object:
    try:
        return json.loads(request.body) if request.body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HttpError(400, "BadRequest", "The request body is not valid JSON.") from None
