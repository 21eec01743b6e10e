"""The inventory of managed accounts: one Table row per account, what rotation and drift work from.

Onboarding writes a row when an account is onboarded; rotation updates it after each rotation;
the drift pass records what it finds (and rebuilds a lost row from Key Vault's tags).

Rows are spread over :data:`SHARDS` partitions by a hash of the account's name. Beside each
account's row, in its partition, are its **index rows**, one per time something about it falls due:
``expires|<ExpiresOn>|<name>`` (its client secret), ``apikey|<ApiKeyExpiresOn>|<name>``,
``revoke|<PreviousApiKeyRevokeAfter>|<name>`` (the replaced API key's next stage),
``outbox|-|<name>`` (events not yet sent) and ``drift|<phase>|<name>`` (its place in the drift
cycle, :func:`drift_phase`). Times are RFC 3339 strings in UTC, so key order is time order, and
reading what is due is a key-range read per partition whose cost grows with the rows due, not with
the accounts managed. The account's row lists its index rows (``IndexKeys``), and every write of the
row changes them in the same entity-group transaction: the index never disagrees with the rows. An
index lost anyway (rows deleted by hand, a table restored in part, an inventory of the layout before
the index) is rebuilt from the account rows by :meth:`InventoryStore.rebuild_index`, which the
sweep runs when the index's marker row is missing.

Like a request's row, an account's row is an outbox: an expiry warning or a drift event is written
into it with the change it announces, and sent from there (:meth:`InventoryStore.flush`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
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

#: The RowKey of an account's row is ``account|<name>``; its index rows sort before and after it.
ACCOUNT_PREFIX = "account|"
#: The RowKey of an account row in the layout before the index (PartitionKey: the name).
LEGACY_ROW_KEY = "account"
#: Partitions the rows are spread over (the first hex digit of the name's SHA-256).
SHARDS = tuple(f"s{digit:x}" for digit in range(16))
#: The partition of the index's marker row and the drift pass's cursor.
META_PARTITION = "meta"
INDEX_MARKER = "index"
#: Index kinds (the first part of an index row's RowKey).
EXPIRES, API_KEY, REVOKE, OUTBOX, DRIFT = "expires", "apikey", "revoke", "outbox", "drift"
#: The drift phase's resolution: a phase is a 6-digit share of ``DRIFT_PERIOD``.
PHASES = 1_000_000
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
    #: When the drift pass last looked at the account.
    drift_looked_at: str = ""
    #: The object id of the app's service principal (for the permissions check; it never changes).
    principal_id: str = ""
    #: The index rows written with the row, as the table holds them (see the module's docstring).
    index_keys: list[str] = field(default_factory=list)
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
                "holders", "blocked_holders", "index_keys"}
_PACKED_FIELDS = {"outbox"}
_SKIPPED = {"account_name", "etag"}


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _to_entity(record: AccountRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": shard_of(record.account_name),
                              "RowKey": ACCOUNT_PREFIX + record.account_name, "OutboxPending": bool(record.outbox)}
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
    row_key = str(entity["RowKey"])
    name = row_key.removeprefix(ACCOUNT_PREFIX) if row_key.startswith(ACCOUNT_PREFIX) else entity["PartitionKey"]
    values: dict[str, Any] = {"account_name": name}
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


def shard_of(account_name: str) -> str:
    """The partition of an account's row and index rows."""
    return f"s{hashlib.sha256(account_name.encode()).hexdigest()[0]}"


def drift_phase(account_name: str) -> str:
    """The account's fixed place in the drift cycle: 6 digits, a share of ``DRIFT_PERIOD`` (from its
    name's hash, so the accounts spread evenly over the period whenever they were onboarded)."""
    return f"{int(hashlib.sha256(account_name.encode()).hexdigest()[8:24], 16) % PHASES:06d}"


def index_keys(record: AccountRecord) -> list[str]:
    """The index rows an account's row has, from what it holds (see the module's docstring)."""
    name = record.account_name
    keys = []
    if record.status == MANAGED:
        keys.append(f"{DRIFT}|{drift_phase(name)}|{name}")
        if record.expires_on:
            keys.append(f"{EXPIRES}|{record.expires_on}|{name}")
        if record.api_key_uid and record.api_key_expires_on:
            keys.append(f"{API_KEY}|{record.api_key_expires_on}|{name}")
        if record.previous_api_key_uid and record.previous_api_key_revoke_after:
            keys.append(f"{REVOKE}|{record.previous_api_key_revoke_after}|{name}")
    if record.outbox:
        keys.append(f"{OUTBOX}|-|{name}")
    return keys


@dataclass(frozen=True)
class Indexed:
    """One index row: its kind, the time (or phase) it is keyed by, and the account."""

    kind: str
    value: str
    account_name: str


def _index_entity(partition: str, key: str) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": key, "Account": key.split("|", 2)[2]}


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
            return _from_entity(self._table.get_entity(partition_key=shard_of(account_name),
                                                       row_key=ACCOUNT_PREFIX + account_name))
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StateStoreError(f"Could not read account {account_name}: {exc.message}") from exc

    def create(self, record: AccountRecord) -> AccountRecord:
        self._ensure()
        record.created_at = record.created_at or iso(utcnow())
        record.updated_at = iso(utcnow())
        return self._write(record, "create", [])

    def create_many(self, records: list[AccountRecord]) -> int:
        """Write new rows in bulk (seeding a large inventory): the rows of one partition and their
        index rows go in transactions of up to 100 operations; a transaction that meets a row that
        exists already is written row by row instead, leaving that row as it is. Returns how many
        rows were written."""
        from azure.data.tables import TableTransactionError

        self._ensure()
        now = iso(utcnow())
        by_partition: dict[str, list[AccountRecord]] = {}
        for record in records:
            record.created_at = record.created_at or now
            record.updated_at = now
            record.index_keys = index_keys(record)
            by_partition.setdefault(shard_of(record.account_name), []).append(record)
        batches: list[tuple[str, list[AccountRecord]]] = []
        for partition, rows in by_partition.items():
            batch: list[AccountRecord] = []
            operations = 0  # in ``batch``: each row and its index rows
            for record in rows:
                if batch and operations + 1 + len(record.index_keys) > 100:
                    batches.append((partition, batch))
                    batch, operations = [], 0
                batch.append(record)
                operations += 1 + len(record.index_keys)
            batches.append((partition, batch))
        written = 0
        for partition, batch in batches:
            try:
                self._table.submit_transaction([op for row in batch for op in [("create", _to_entity(row)), *(
                    ("upsert", _index_entity(partition, key)) for key in row.index_keys)]])
                written += len(batch)
            except TableTransactionError:
                for row in batch:
                    with contextlib.suppress(ConcurrentUpdateError):
                        self.create(row)
                        written += 1
        return written

    def replace(self, record: AccountRecord) -> AccountRecord:
        self._ensure()
        record.updated_at = iso(utcnow())
        return self._write(record, "update", list(record.index_keys))

    def _write(self, record: AccountRecord, verb: str, before: list[str]) -> AccountRecord:
        """Write the row and move its index rows with it, in one entity-group transaction."""
        from azure.data.tables import TableTransactionError, UpdateMode

        partition = shard_of(record.account_name)
        after = index_keys(record)
        written = record.copy()
        written.index_keys = after
        entity = _to_entity(written)
        account_op: tuple[Any, ...] = (("create", entity) if verb == "create" else
                                       ("update", entity, {"mode": UpdateMode.REPLACE, "etag": record.etag,
                                                           "match_condition": MatchConditions.IfNotModified}))
        removed = [key for key in before if key not in after]
        operations: list[tuple[Any, ...]] = [account_op, *[("upsert", _index_entity(partition, key))
                                                           for key in after if key not in before]]
        for _ in range(2):
            try:
                results = self._table.submit_transaction(
                    [*operations, *[("delete", {"PartitionKey": partition, "RowKey": key}) for key in removed]])
                break
            except TableTransactionError as exc:
                if exc.status_code == 404 and removed:
                    # An index row that is gone already (deleted by hand): drop its delete, try again.
                    missing = [key for key in removed if not self._exists(partition, key)]
                    if missing:
                        removed = [key for key in removed if key not in missing]
                        continue
                if exc.status_code in (404, 409, 412):
                    raise ConcurrentUpdateError(f"Account {record.account_name} changed meanwhile.") from exc
                raise StateStoreError(f"Could not write account {record.account_name}: {exc.message}") from exc
            except AzureError as exc:
                raise StateStoreError(f"Could not write account {record.account_name}: {exc.message}") from exc
        else:
            raise ConcurrentUpdateError(f"Account {record.account_name} changed meanwhile.")
        record.index_keys = after
        record.etag = results[0].get("etag")
        return record

    def _exists(self, partition: str, row_key: str) -> bool:
        try:
            self._table.get_entity(partition, row_key, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True

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
        """Account rows matching an OData filter, read page by page (a scan: for listings and rare
        work; what falls due is read through :meth:`due`)."""
        self._ensure()
        try:
            for entity in self._table.query_entities(_accounts_where(where), parameters=parameters or {}):
                yield _from_entity(entity)
        except AzureError as exc:
            raise StateStoreError(f"Could not query the inventory: {exc.message}") from exc

    def page(self, where: str = "", parameters: dict[str, Any] | None = None, *, top: int = 50,
             continuation: str | None = None) -> tuple[list[AccountRecord], str | None]:
        """One page of rows and the table's own continuation token for the next (None at the end)."""
        self._ensure()
        try:
            pages = self._table.query_entities(_accounts_where(where), parameters=parameters or {},
                                               results_per_page=top).by_page(continuation_token=_token_in(continuation))
            entities = list(next(pages, []))
            token = getattr(pages, "continuation_token", None)
        except AzureError as exc:
            raise StateStoreError(f"Could not page the inventory: {exc.message}") from exc
        return [_from_entity(entity) for entity in entities], _token_out(token)

    def due(self, kind: str, upto: str | None = None, *, after: str | None = None) -> Iterator[Indexed]:
        """Index rows of ``kind`` keyed at most ``upto`` (and past ``after``), in key order across
        the partitions: one key-range read per partition, paged, nothing else."""
        self._ensure()
        low = f"{kind}|{after}}}" if after is not None else f"{kind}|"
        high = f"{kind}|{upto}}}" if upto is not None else f"{kind}}}"

        def read(partition: str) -> Iterator[tuple[str, Indexed]]:
            try:
                for entity in self._table.query_entities(
                        "PartitionKey eq @partition and RowKey gt @low and RowKey lt @high",
                        parameters={"partition": partition, "low": low, "high": high}, select=["RowKey"]):
                    _, value, name = str(entity["RowKey"]).split("|", 2)
                    yield value, Indexed(kind, value, name)
            except AzureError as exc:
                raise StateStoreError(f"Could not read the inventory's index: {exc.message}") from exc
        for _, indexed in heapq.merge(*(read(partition) for partition in SHARDS), key=lambda pair: pair[0]):
            yield indexed

    def index_ready(self) -> bool:
        """The index's marker row is there (written by :meth:`rebuild_index`, and with the table)."""
        self._ensure()
        return self._exists(META_PARTITION, INDEX_MARKER)

    def mark_index_ready(self) -> None:
        self._ensure()
        self._table.upsert_entity({"PartitionKey": META_PARTITION, "RowKey": INDEX_MARKER, "BuiltAt": iso(utcnow())})

    def rebuild_index(self) -> int:
        """Make the index agree with the account rows again (a full scan: for a lost index only).

        Rows of the layout before the index move into it first. Every account's index rows are
        written as its row says they should be, index rows no account row lists are removed, and the
        marker is written last. Returns the account rows seen."""
        self._ensure()
        for entity in list(self._table.query_entities("RowKey eq @row", parameters={"row": LEGACY_ROW_KEY})):
            record = _from_entity(entity)
            try:
                self.create(record)
            except ConcurrentUpdateError:
                pass  # moved by an earlier rebuild that stopped before removing the old row
            self._table.delete_entity(entity["PartitionKey"], LEGACY_ROW_KEY)
        seen = 0
        for partition in SHARDS:
            accounts: list[AccountRecord] = []
            stored: dict[str, str] = {}  # index row -> its ETag
            for entity in self._table.query_entities("PartitionKey eq @partition", parameters={"partition": partition}):
                if str(entity["RowKey"]).startswith(ACCOUNT_PREFIX):
                    accounts.append(_from_entity(entity))
                else:
                    stored[str(entity["RowKey"])] = str(entity.metadata.get("etag") or "")
            seen += len(accounts)
            for record in accounts:
                missing = [key for key in record.index_keys if key not in stored]
                if missing or record.index_keys != index_keys(record):
                    with contextlib.suppress(ConcurrentUpdateError):  # written meanwhile: that write moved them
                        record.updated_at = iso(utcnow())
                        self._write(record, "update", [key for key in record.index_keys if key not in missing])
            for key, etag in stored.items():
                current = self.get(key.split("|", 2)[2])  # read after the index row: it lists it if it is live
                if current is None or key not in current.index_keys:
                    # Conditional: a write that made the row live again since it was read changed its ETag.
                    with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
                        self._table.delete_entity(partition, key, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified)
        self.mark_index_ready()
        return seen

    def read_meta(self, name: str) -> tuple[dict[str, Any], str | None]:
        """A bookkeeping row of the table (the drift cursor): its columns and ETag ({} and None if none)."""
        self._ensure()
        try:
            entity = self._table.get_entity(META_PARTITION, name)
        except ResourceNotFoundError:
            return {}, None
        except AzureError as exc:
            raise StateStoreError(f"Could not read the inventory's {name} row: {exc.message}") from exc
        return dict(entity), str(entity.metadata.get("etag") or "") or None

    def write_meta(self, name: str, values: dict[str, Any], etag: str | None) -> None:
        """Write a bookkeeping row if nobody wrote it since it was read (ConcurrentUpdateError else)."""
        from azure.data.tables import UpdateMode

        entity = {**values, "PartitionKey": META_PARTITION, "RowKey": name}
        try:
            if etag is None:
                self._table.create_entity(entity)
            else:
                self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                          match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdateError(f"The inventory's {name} row changed meanwhile.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not write the inventory's {name} row: {exc.message}") from exc

    def delete_all(self) -> None:
        """Drop every row (tests start from an empty inventory)."""
        self._ensure()
        for entity in self._table.list_entities(select=["PartitionKey", "RowKey"]):
            self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])

    def close(self) -> None:
        self._table.close()


def _accounts_where(where: str) -> str:
    """An OData filter of account rows (not index or bookkeeping rows), ANDed with ``where``."""
    # Spaced parentheses: the SDK finds @parameters by splitting on spaces.
    return f"RowKey ge '{ACCOUNT_PREFIX}' and RowKey lt 'account}}'" + (f" and ( {where} )" if where else "")


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
