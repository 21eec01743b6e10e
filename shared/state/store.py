"""Table Storage persistence of :class:`RequestRecord`, with ETag concurrency.

One entity per request: PartitionKey = requestId, RowKey = ``onboarding``. Two deliveries of the
same request race on the ETag: the loser gets :class:`ConcurrentUpdateError` and backs off.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.errors import ConcurrentUpdateError, StateStoreError
from shared.state.records import (
    RequestRecord,
    RequestStatus,
    StepOutcome,
    StepRecord,
    iso,
    parse_iso,
    utcnow,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator, Sequence

    from azure.data.tables import TableClient

    from shared.clients.events import EventSink

logger = logging.getLogger(__name__)

ROW_KEY = "onboarding"
LEASE_ROW_KEY = "lease"
LEASE_PARTITION_PREFIX = "lease:"
_OPEN_FILTER = ("RowKey eq 'onboarding' and (Status eq 'queued' or Status eq 'running' or Status eq 'waiting'"
                " or OutboxPending eq true or CleanupPending eq true)")


class InvalidContinuationTokenError(ValueError):
    """A continuation token this store did not hand out (answer 400, naming the parameter)."""


@dataclass(frozen=True)
class RecordPage:
    """One page of records and the token for the next one (None on the last page).

    A page may hold fewer than were asked for, even none, and still have a next one: the table
    service pages by what it scanned, not by what the filter kept. Follow the token until it is None.
    """

    items: list[RequestRecord]
    continuation_token: str | None


def encode_continuation(token: dict[str, str] | None) -> str | None:
    """The table service's continuation (next partition and row key) as one opaque URL-safe string."""
    if not token:
        return None
    raw = json.dumps([token.get("PartitionKey") or "", token.get("RowKey") or ""], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continuation(text: str) -> dict[str, str]:
    """The inverse of :func:`encode_continuation`; :class:`InvalidContinuationTokenError` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        keys = json.loads(raw)
    except (binascii.Error, ValueError):
        keys = None
    if not (isinstance(keys, list) and len(keys) == 2 and all(isinstance(k, str) and len(k) <= 1024 for k in keys)
            and any(keys)):
        raise InvalidContinuationTokenError("is not a continuation token this API handed out")
    return {"PartitionKey": keys[0], "RowKey": keys[1]}


class StateStore(ABC):
    """Storage of onboarding records; implementations only move rows, the rules live in the pipeline."""

    @abstractmethod
    def get(self, request_id: str) -> RequestRecord | None: ...

    def flush(self, record: RequestRecord, sink: EventSink) -> RequestRecord:
        """Send the row's pending events and confirm them (see :mod:`shared.state.outbox`)."""
        from shared.state.outbox import flush_outbox

        return flush_outbox(record, sink, write=self.replace, read=lambda: self.get(record.request_id))

    @abstractmethod
    def create(self, record: RequestRecord) -> RequestRecord:
        """Insert; raises :class:`ConcurrentUpdateError` when the row exists."""

    @abstractmethod
    def replace(self, record: RequestRecord) -> RequestRecord:
        """Replace if the ETag still matches; raises :class:`ConcurrentUpdateError` otherwise."""

    @abstractmethod
    def list(self, *, status: RequestStatus | None = None) -> Iterator[RequestRecord]: ...

    @abstractmethod
    def list_page(self, *, status: RequestStatus | None = None, operations: Sequence[str] = (), top: int,
                  continuation_token: str | None = None) -> RecordPage:
        """One page of at most ``top`` records, read by the table's own continuation (never the
        whole table), of any of ``operations`` when given (``rotate``, ...: the requests'
        ``operation``); raises :class:`InvalidContinuationTokenError` for a token it did not make."""

    @abstractmethod
    def check_reachable(self) -> str:
        """Read from the table once (a readiness probe); returns what it found, raises
        :class:`~shared.errors.StateStoreError` when the table cannot be reached."""

    @abstractmethod
    def list_open(self) -> Iterator[RequestRecord]:
        """Rows the sweeper must look at: not finished, or with unsent events or pending cleanup."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    @abstractmethod
    def get_lease(self, key: str) -> NameLease | None: ...

    @abstractmethod
    def create_lease(self, lease: NameLease) -> NameLease:
        """Insert; raises :class:`ConcurrentUpdateError` when the lease row exists."""

    @abstractmethod
    def replace_lease(self, lease: NameLease) -> NameLease:
        """Replace if the ETag still matches; raises :class:`ConcurrentUpdateError` otherwise."""

    @abstractmethod
    def delete_lease(self, lease: NameLease) -> None:
        """Delete if the ETag still matches (gone already is fine); :class:`ConcurrentUpdateError` otherwise."""


@dataclass
class NameLease:
    """Who holds a name (an account, an SSH key, an API key) and until when.

    ``owner`` is a requestId: the lease belongs to the request, not to one delivery of it, so it
    survives the request's own redeliveries and waits.
    """

    key: str
    owner: str
    expires_at: str
    etag: str | None = None

    def active(self, now: dt.datetime) -> bool:
        expires = parse_iso(self.expires_at)
        return bool(self.owner) and expires is not None and expires > now


def ensure_table(table: TableClient, what: str) -> None:
    """Create the table unless it exists (the app makes its tables on first use, too).

    Raises :class:`~shared.errors.StateStoreError` naming ``what`` when the service refuses.
    """
    try:
        table.create_table()
    except ResourceExistsError:
        pass
    except AzureError as exc:
        raise StateStoreError(f"Could not create {what}: {exc.message}") from exc


def pack(value: Any) -> bytes:
    """JSON, compressed: the queued request and the outbox can each approach Table Storage's
    64 KiB property limit as text, and compress about fivefold."""
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def unpack(value: Any, default: Any) -> Any:
    if not value:
        return default
    raw = value.value if hasattr(value, "value") else value  # EntityProperty on some SDK paths
    return json.loads(zlib.decompress(bytes(raw)).decode("utf-8"))


def _to_entity(record: RequestRecord) -> dict[str, Any]:
    return {
        "PartitionKey": record.request_id,
        "RowKey": ROW_KEY,
        "AccountName": record.account_name,
        "Fingerprint": record.fingerprint,
        "Status": record.status.value,
        "CurrentStep": record.current_step,
        "Steps": json.dumps({k: v.as_dict() for k, v in record.steps.items()}),
        "Results": json.dumps(record.results),
        "Request": pack(record.request),
        "Outbox": pack(record.outbox),
        "OutboxPending": bool(record.outbox),
        "EventIds": json.dumps(record.event_ids),
        "Made": json.dumps(record.made),
        "Cleanup": json.dumps(record.cleanup),
        "Stop": json.dumps(record.stop),
        "Finishing": record.finishing,
        "CleanupPending": bool(record.cleanup),
        "ErrorReason": record.error_reason,
        "ErrorMessage": record.error_message,
        "LeaseOwner": record.lease_owner,
        "LeaseExpiresAt": record.lease_expires_at,
        "DueAt": record.due_at,
        "RetryToken": record.retry_token,
        "Attempts": record.attempts,
        "Defects": record.defects,
        "Redrives": record.redrives,
        # Its own column (the request is packed) so the listing can filter by it in the table.
        "Operation": record.operation,
        "Run": record.run,
        "CreatedAt": record.created_at,
        "UpdatedAt": record.updated_at,
    }


def _from_entity(entity: Any) -> RequestRecord:
    steps = {name: StepRecord(StepOutcome(step["outcome"]), step["at"], step.get("detail", ""))
             for name, step in json.loads(entity.get("Steps") or "{}").items()}
    return RequestRecord(
        request_id=entity["PartitionKey"],
        account_name=entity.get("AccountName", ""),
        fingerprint=entity.get("Fingerprint", ""),
        status=RequestStatus(entity.get("Status", RequestStatus.RUNNING.value)),
        current_step=entity.get("CurrentStep", ""),
        steps=steps,
        results=json.loads(entity.get("Results") or "{}"),
        request=unpack(entity.get("Request"), ""),
        outbox=unpack(entity.get("Outbox"), []),
        event_ids=json.loads(entity.get("EventIds") or "[]"),
        made=json.loads(entity.get("Made") or "{}"),
        cleanup=json.loads(entity.get("Cleanup") or "[]"),
        stop=json.loads(entity.get("Stop") or "{}"),
        finishing=bool(entity.get("Finishing", False)),
        error_reason=entity.get("ErrorReason", ""),
        error_message=entity.get("ErrorMessage", ""),
        lease_owner=entity.get("LeaseOwner", ""),
        lease_expires_at=entity.get("LeaseExpiresAt", ""),
        due_at=entity.get("DueAt", ""),
        retry_token=entity.get("RetryToken", ""),
        attempts=int(entity.get("Attempts", 0)),
        defects=int(entity.get("Defects", 0)),
        redrives=int(entity.get("Redrives", 0)),
        run=int(entity.get("Run", 1)),
        created_at=entity.get("CreatedAt", ""),
        updated_at=entity.get("UpdatedAt", ""),
        etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
    )


class TableStateStore(StateStore):
    """Records in an Azure Table (Azurite locally); the table is created on first use."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._table_ready = False

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str) -> TableStateStore:
        from azure.data.tables import TableClient

        return cls(TableClient.from_connection_string(connection_string, table_name=table_name))

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, table_name: str) -> TableStateStore:
        from azure.data.tables import TableClient

        return cls(TableClient(endpoint, table_name=table_name, credential=credential))

    def _ensure_table(self) -> None:
        if not self._table_ready:
            ensure_table(self._table, "the state table")
            self._table_ready = True

    def get(self, request_id: str) -> RequestRecord | None:
        self._ensure_table()
        try:
            entity = self._table.get_entity(partition_key=request_id, row_key=ROW_KEY)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StateStoreError(f"Could not read the state of request {request_id}: {exc.message}") from exc
        return _from_entity(entity)

    def create(self, record: RequestRecord) -> RequestRecord:
        self._ensure_table()
        now = iso(utcnow())
        record.created_at = record.created_at or now
        record.updated_at = now
        try:
            metadata = self._table.create_entity(_to_entity(record))
        except ResourceExistsError as exc:
            raise ConcurrentUpdateError(f"The state of request {record.request_id} already exists.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not record request {record.request_id}: {exc.message}") from exc
        record.etag = metadata.get("etag")
        return record

    def replace(self, record: RequestRecord) -> RequestRecord:
        from azure.data.tables import UpdateMode

        self._ensure_table()
        record.updated_at = iso(utcnow())
        try:
            metadata = self._table.update_entity(
                _to_entity(record), mode=UpdateMode.REPLACE, etag=record.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdateError(
                f"The state of request {record.request_id} was changed by another delivery."
            ) from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not update request {record.request_id}: {exc.message}") from exc
        record.etag = metadata.get("etag")
        return record

    def list(self, *, status: RequestStatus | None = None) -> Iterator[RequestRecord]:
        self._ensure_table()
        try:
            for entity in self._query(status):
                yield _from_entity(entity)
        except AzureError as exc:
            raise StateStoreError(f"Could not list onboarding requests: {exc.message}") from exc

    def _query(self, status: RequestStatus | None, operations: Sequence[str] = (), **kwargs: Any) -> Any:
        query, parameters = "RowKey eq @row", {"row": ROW_KEY}
        if status is not None:
            query += " and Status eq @status"
            parameters["status"] = status.value
        if operations:
            # A row written before the Operation column existed has none, and matches no operation.
            # (The SDK finds a parameter up to the next space, so the closing parenthesis stands apart.)
            query += " and (" + " or ".join(f"Operation eq @operation{i}" for i in range(len(operations))) + " )"
            parameters.update({f"operation{i}": operation for i, operation in enumerate(operations)})
        return self._table.query_entities(query, parameters=parameters, **kwargs)

    def list_page(self, *, status: RequestStatus | None = None, operations: Sequence[str] = (), top: int,
                  continuation_token: str | None = None) -> RecordPage:
        start = decode_continuation(continuation_token) if continuation_token else None
        self._ensure_table()
        try:
            pages = self._query(status, operations, results_per_page=top).by_page(continuation_token=start)
            items = [_from_entity(entity) for entity in next(pages, [])]
            return RecordPage(items, encode_continuation(pages.continuation_token))
        except AzureError as exc:
            raise StateStoreError(f"Could not list onboarding requests: {exc.message}") from exc

    def check_reachable(self) -> str:
        try:
            next(self._table.query_entities("RowKey eq @row", parameters={"row": ROW_KEY},
                                            results_per_page=1, select=["PartitionKey"]).by_page(), None)
        except ResourceNotFoundError:
            return f"table {self._table.table_name} reachable; it is created on the first write"
        except AzureError as exc:
            raise StateStoreError(f"Could not read the state table: {type(exc).__name__}") from exc
        return f"table {self._table.table_name} reachable"

    def list_open(self) -> Iterator[RequestRecord]:
        self._ensure_table()
        try:
            for entity in self._table.query_entities(_OPEN_FILTER):
                yield _from_entity(entity)
        except AzureError as exc:
            raise StateStoreError(f"Could not list open onboarding requests: {exc.message}") from exc

    # -- name leases ------------------------------------------------------------------------------

    @staticmethod
    def _lease_entity(lease: NameLease) -> dict[str, Any]:
        return {"PartitionKey": LEASE_PARTITION_PREFIX + lease.key, "RowKey": LEASE_ROW_KEY,
                "Owner": lease.owner, "ExpiresAt": lease.expires_at}

    def get_lease(self, key: str) -> NameLease | None:
        self._ensure_table()
        try:
            entity = self._table.get_entity(partition_key=LEASE_PARTITION_PREFIX + key, row_key=LEASE_ROW_KEY)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StateStoreError(f"Could not read the lease on {key}: {exc.message}") from exc
        return NameLease(key=key, owner=entity.get("Owner", ""), expires_at=entity.get("ExpiresAt", ""),
                         etag=entity.metadata.get("etag"))

    def create_lease(self, lease: NameLease) -> NameLease:
        self._ensure_table()
        try:
            metadata = self._table.create_entity(self._lease_entity(lease))
        except ResourceExistsError as exc:
            raise ConcurrentUpdateError(f"The lease on {lease.key} is already held.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not take the lease on {lease.key}: {exc.message}") from exc
        lease.etag = metadata.get("etag")
        return lease

    def replace_lease(self, lease: NameLease) -> NameLease:
        from azure.data.tables import UpdateMode

        self._ensure_table()
        try:
            metadata = self._table.update_entity(self._lease_entity(lease), mode=UpdateMode.REPLACE,
                                                 etag=lease.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdateError(f"The lease on {lease.key} changed hands.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not renew the lease on {lease.key}: {exc.message}") from exc
        lease.etag = metadata.get("etag")
        return lease

    def delete_lease(self, lease: NameLease) -> None:
        self._ensure_table()
        try:
            self._table.delete_entity(LEASE_PARTITION_PREFIX + lease.key, LEASE_ROW_KEY, etag=lease.etag,
                                      match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return
        except ResourceModifiedError as exc:
            raise ConcurrentUpdateError(f"The lease on {lease.key} changed hands.") from exc
        except AzureError as exc:
            raise StateStoreError(f"Could not release the lease on {lease.key}: {exc.message}") from exc

    def delete_all(self) -> None:
        """Drop every record (tests and the demo start from an empty table)."""
        self._ensure_table()
        for entity in self._table.list_entities(select=["PartitionKey", "RowKey"]):
            self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])

    def close(self) -> None:
        self._table.close()
