"""The inventory of managed accounts: one Table row per account, what rotation and drift work from.

Onboarding writes a row when an account is onboarded; rotation updates it after each rotation;
the drift pass records what it finds (and rebuilds a lost row from Key Vault's tags). Queries by
expiry (``ExpiresOn``, an RFC 3339 string in UTC, so string order is time order) let the sweep
read only the accounts that are due, whatever the number managed.

Like a request's row, an account's row is an outbox: an expiry warning or a drift event is written
into it with the change it announces, and sent from there (:meth:`InventoryStore.flush`).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.errors import StateStoreError
from shared.state import retry
from shared.state.records import iso, utcnow
from shared.state.store import ConcurrentUpdateError, ensure_table, pack, unpack

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from azure.data.tables import TableClient

    from shared.clients.events import EventSink

ROW_KEY = "account"
#: Event ids kept per account to refuse a second recording; older ones are long past any resend.
MAX_EVENT_IDS = 200

MANAGED = "managed"
OFFBOARDED = "offboarded"
SOURCE_GENERATED = "generate"
SOURCE_KEY_VAULT = "keyVault"


@dataclass
class AccountRecord:
    """What the product knows of one managed account (never a secret value)."""

    account_name: str
    scope: str = "tenant"
    project_uid: str = ""
    palette_uid: str = ""
    tenant_id: str = ""
    client_id: str = ""
    secret_source: str = SOURCE_GENERATED
    secret_name: str = ""
    secret_version: str = ""
    current_key_id: str = ""
    previous_key_id: str = ""
    expires_on: str = ""
    secret_created_on: str = ""
    validity_days: int = 180
    onboarded_by: str = ""
    last_rotation_id: str = ""
    last_rotation_at: str = ""
    last_rotation_outcome: str = ""
    last_rotation_reason: str = ""
    rotation_in_flight: str = ""
    drift: list[str] = field(default_factory=list)
    drift_since: dict[str, str] = field(default_factory=dict)
    foreign_key_ids: list[str] = field(default_factory=list)
    ssh_key_uid: str = ""
    ssh_key_name: str = ""
    ssh_key_project_uid: str = ""
    ssh_key_project: str = ""
    ssh_key_owned: bool = False
    api_key_uid: str = ""
    api_key_name: str = ""
    api_key_expires_on: str = ""
    previous_api_key_uid: str = ""
    #: When the replaced key's next stage is due: its deactivation while it is active, its deletion
    #: once deactivated, the end of a stage's hold while one is carried out (shared.rotation.apikeys).
    previous_api_key_revoke_after: str = ""
    previous_api_key_state: str = ""
    #: The request's ``rotation.alsoUpdate``: other Palette objects rotation may give the new secret.
    also_update: list[str] = field(default_factory=list)
    #: The request's ``azure.permissions`` (profile, placement, scopes, enforce), for the drift pass.
    permissions: dict[str, Any] = field(default_factory=dict)
    #: Other holders of the client secret (Azure backup locations) the last rotation gave it:
    #: location uid -> the Graph keyId it holds (shared.rotation.holders).
    holders: dict[str, str] = field(default_factory=dict)
    #: The holders that kept the last rotation from pruning the older passwords: uid, name, why.
    blocked_holders: list[dict[str, str]] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    offboarding_in_flight: str = ""
    offboarded_by: str = ""
    offboarded_at: str = ""
    status: str = MANAGED
    outbox: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    etag: str | None = None

    # The outbox, as a request's row has it (see shared.state.records).

    @property
    def request_id(self) -> str:
        return f"account:{self.account_name}"

    def record_event(self, event: dict[str, Any]) -> bool:
        event_id = str(event["id"])
        if event_id in self.event_ids:
            return False
        self.event_ids = [*self.event_ids, event_id][-MAX_EVENT_IDS:]
        self.outbox.append(event)
        return True

    def confirm_sent(self, event_ids: set[str]) -> None:
        self.outbox = [event for event in self.outbox if event["id"] not in event_ids]

    def start_over(self) -> None:
        """Forget what an offboarded account was (a new onboarding starts clean), keeping only the
        row's identity and its outbox."""
        blank = AccountRecord(account_name=self.account_name)
        for item in fields(self):
            if item.name not in ("account_name", "outbox", "event_ids", "created_at", "etag"):
                setattr(self, item.name, getattr(blank, item.name))

    def copy(self) -> AccountRecord:
        import copy

        return copy.deepcopy(self)

    def to_public(self) -> dict[str, Any]:
        """The view of ``GET /api/accounts/{name}``."""
        last = ({"id": self.last_rotation_id, "at": self.last_rotation_at, "outcome": self.last_rotation_outcome,
                 "reason": self.last_rotation_reason or None} if self.last_rotation_id else None)
        return {
            "accountName": self.account_name, "scope": self.scope, "projectUid": self.project_uid or None,
            "paletteUid": self.palette_uid, "tenantId": self.tenant_id, "clientId": self.client_id,
            "secretSource": self.secret_source, "secretName": self.secret_name,
            "secretVersion": self.secret_version, "currentKeyId": self.current_key_id or None,
            "previousKeyId": self.previous_key_id or None, "expiresOn": self.expires_on or None,
            "lastRotation": last, "rotationInFlight": self.rotation_in_flight or None,
            "drift": list(self.drift), "foreignKeyIds": list(self.foreign_key_ids), "status": self.status,
            "holders": [{"uid": uid, "keyId": key_id} for uid, key_id in sorted(self.holders.items())],
            "blockedHolders": [dict(holder) for holder in self.blocked_holders],
            "apiKeyUid": self.api_key_uid or None,
            "previousApiKey": ({"uid": self.previous_api_key_uid, "state": self.previous_api_key_state or "active",
                                "nextStageAfter": self.previous_api_key_revoke_after or None}
                               if self.previous_api_key_uid else None),
            "offboarding": ({"id": self.offboarded_by or self.offboarding_in_flight, "at": self.offboarded_at or None}
                            if self.offboarded_by or self.offboarding_in_flight else None),
            "updatedAt": self.updated_at,
        }


# Columns are the CamelCase of the field names; lists and maps are JSON, the outbox compressed.
_JSON_FIELDS = {"drift", "drift_since", "foreign_key_ids", "warned", "event_ids", "also_update", "permissions",
                "holders", "blocked_holders"}
_PACKED_FIELDS = {"outbox"}
_SKIPPED = {"account_name", "etag"}


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _to_entity(record: AccountRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": record.account_name, "RowKey": ROW_KEY,
                              "OutboxPending": bool(record.outbox)}
    for item in fields(record):
        if item.name in _SKIPPED:
            continue
        value = getattr(record, item.name)
        if item.name in _JSON_FIELDS:
            value = json.dumps(value)
        elif item.name in _PACKED_FIELDS:
            value = pack(value)
        entity[_column(item.name)] = value
    return entity


def _from_entity(entity: Any) -> AccountRecord:
    values: dict[str, Any] = {"account_name": entity["PartitionKey"]}
    for item in fields(AccountRecord):
        if item.name in _SKIPPED:
            continue
        column = _column(item.name)
        if column not in entity:
            continue
        value = entity[column]
        if item.name in _JSON_FIELDS:
            value = json.loads(value or "null")
            if value is None:
                value = item.default_factory()  # type: ignore[operator]  # every JSON field has one
        elif item.name in _PACKED_FIELDS:
            value = unpack(value, [])
        elif item.name == "validity_days":
            value = int(value)
        values[item.name] = value
    record = AccountRecord(**values)
    record.etag = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
    return record


class InventoryStore:
    """Account rows in the ``accounts`` table (Azurite locally); created on first use."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._ready = False

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str) -> InventoryStore:
        from azure.data.tables import TableClient

        return cls(TableClient.from_connection_string(connection_string, table_name=table_name))

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, table_name: str) -> InventoryStore:
        from azure.data.tables import TableClient

        return cls(TableClient(endpoint, table_name=table_name, credential=credential))

    def _ensure(self) -> None:
        if not self._ready:
            ensure_table(self._table, "the inventory table")
            self._ready = True

    def get(self, account_name: str) -> AccountRecord | None:
        self._ensure()
        try:
            return _from_entity(self._table.get_entity(partition_key=account_name, row_key=ROW_KEY))
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StateStoreError(f"Could not read account {account_name}: {exc.message}") from exc

    def create(self, record: AccountRecord) -> AccountRecord:
        self._ensure()
        record.created_at = record.created_at or iso(utcnow())
        record.updated_at = iso(utcnow())
        try:
            metadata = self._table.create_entity(_to_entity(record))
        except ResourceExistsError as exc:
            raise ConcurrentUpdateError(f"Account {record.account_name} is already in the inventory.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not record account {record.account_name}: {exc.message}") from exc
        record.etag = metadata.get("etag")
        return record

    def replace(self, record: AccountRecord) -> AccountRecord:
        from azure.data.tables import UpdateMode

        self._ensure()
        record.updated_at = iso(utcnow())
        try:
            metadata = self._table.update_entity(_to_entity(record), mode=UpdateMode.REPLACE, etag=record.etag,
                                                 match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdateError(f"Account {record.account_name} changed meanwhile.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not update account {record.account_name}: {exc.message}") from exc
        record.etag = metadata.get("etag")
        return record

    def update(self, account_name: str, mutate: Callable[[AccountRecord], None], *,
               create: Callable[[], AccountRecord] | None = None) -> AccountRecord | None:
        """Apply ``mutate`` to the row with optimistic concurrency (re-reading on a race); with
        ``create``, a missing row is made from it first. None when the row is missing."""
        current = self.get(account_name)
        if current is None and create is not None:
            fresh = create()
            mutate(fresh)
            try:
                return self.create(fresh)
            except ConcurrentUpdateError:
                current = self.get(account_name)  # made meanwhile: change it as it is now
        return retry.update(current, mutate, write=self.replace, read=lambda: self.get(account_name))

    def flush(self, account: AccountRecord, sink: EventSink) -> AccountRecord:
        """Send the row's pending events and confirm them (see :mod:`shared.state.outbox`)."""
        from shared.state.outbox import flush_outbox

        return flush_outbox(account, sink, write=self.replace, read=lambda: self.get(account.account_name))

    def query(self, where: str = "", parameters: dict[str, Any] | None = None) -> Iterator[AccountRecord]:
        """Rows matching an OData filter (ANDed with the row key), read page by page."""
        self._ensure()
        # Spaced parentheses: the SDK finds @parameters by splitting on spaces.
        condition = f"RowKey eq '{ROW_KEY}'" + (f" and ( {where} )" if where else "")
        try:
            for entity in self._table.query_entities(condition, parameters=parameters or {}):
                yield _from_entity(entity)
        except AzureError as exc:
            raise StateStoreError(f"Could not query the inventory: {exc.message}") from exc

    def page(self, where: str = "", parameters: dict[str, Any] | None = None, *, top: int = 50,
             continuation: str | None = None) -> tuple[list[AccountRecord], str | None]:
        """One page of rows and the table's own continuation token for the next (None at the end)."""
        self._ensure()
        # Spaced parentheses: the SDK finds @parameters by splitting on spaces.
        condition = f"RowKey eq '{ROW_KEY}'" + (f" and ( {where} )" if where else "")
        try:
            pages = self._table.query_entities(condition, parameters=parameters or {},
                                               results_per_page=top).by_page(continuation_token=_token_in(continuation))
            entities = list(next(pages, []))
            token = getattr(pages, "continuation_token", None)
        except AzureError as exc:
            raise StateStoreError(f"Could not page the inventory: {exc.message}") from exc
        return [_from_entity(entity) for entity in entities], _token_out(token)

    def delete_all(self) -> None:
        """Drop every row (tests start from an empty inventory)."""
        self._ensure()
        for entity in self._table.list_entities(select=["PartitionKey", "RowKey"]):
            self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])

    def close(self) -> None:
        self._table.close()


def _token_in(token: str | None) -> Any:
    """The table's continuation from the opaque, URL-safe form callers carry."""
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError as exc:
        raise ValueError("continuationToken is not one this API handed out.") from exc


def _token_out(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode().rstrip("=")
