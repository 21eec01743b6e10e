"""Table Storage persistence of :class:`OnboardingRecord`, with ETag concurrency.

One entity per request: PartitionKey = requestId, RowKey = ``onboarding``. Two deliveries of the
same request race on the ETag: the loser gets :class:`ConcurrentUpdateError` and backs off.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.errors import StateStoreError
from shared.state.records import (
    OnboardingRecord,
    RequestStatus,
    StepOutcome,
    StepRecord,
    iso,
    utcnow,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)

ROW_KEY = "onboarding"


class ConcurrentUpdateError(StateStoreError):
    """Someone else changed the row since we read it (ETag mismatch) or created it first."""


class StateStore(ABC):
    """Storage of onboarding records; implementations only move rows, the rules live in the pipeline."""

    @abstractmethod
    def get(self, request_id: str) -> OnboardingRecord | None: ...

    @abstractmethod
    def create(self, record: OnboardingRecord) -> OnboardingRecord:
        """Insert; raises :class:`ConcurrentUpdateError` when the row exists."""

    @abstractmethod
    def replace(self, record: OnboardingRecord) -> OnboardingRecord:
        """Replace if the ETag still matches; raises :class:`ConcurrentUpdateError` otherwise."""

    @abstractmethod
    def list(self, *, status: RequestStatus | None = None) -> Iterator[OnboardingRecord]: ...


def _to_entity(record: OnboardingRecord) -> dict[str, Any]:
    return {
        "PartitionKey": record.request_id,
        "RowKey": ROW_KEY,
        "AccountName": record.account_name,
        "Fingerprint": record.fingerprint,
        "Status": record.status.value,
        "CurrentStep": record.current_step,
        "Steps": json.dumps({k: v.as_dict() for k, v in record.steps.items()}),
        "Results": json.dumps(record.results),
        "Emitted": json.dumps(record.emitted),
        "ErrorReason": record.error_reason,
        "ErrorMessage": record.error_message,
        "LeaseOwner": record.lease_owner,
        "LeaseExpiresAt": record.lease_expires_at,
        "Attempts": record.attempts,
        "CreatedAt": record.created_at,
        "UpdatedAt": record.updated_at,
    }


def _from_entity(entity: Any) -> OnboardingRecord:
    steps = {name: StepRecord(StepOutcome(step["outcome"]), step["at"], step.get("detail", ""))
             for name, step in json.loads(entity.get("Steps") or "{}").items()}
    return OnboardingRecord(
        request_id=entity["PartitionKey"],
        account_name=entity.get("AccountName", ""),
        fingerprint=entity.get("Fingerprint", ""),
        status=RequestStatus(entity.get("Status", RequestStatus.RUNNING.value)),
        current_step=entity.get("CurrentStep", ""),
        steps=steps,
        results=json.loads(entity.get("Results") or "{}"),
        emitted=json.loads(entity.get("Emitted") or "[]"),
        error_reason=entity.get("ErrorReason", ""),
        error_message=entity.get("ErrorMessage", ""),
        lease_owner=entity.get("LeaseOwner", ""),
        lease_expires_at=entity.get("LeaseExpiresAt", ""),
        attempts=int(entity.get("Attempts", 0)),
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
        if self._table_ready:
            return
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StateStoreError(f"Could not create the state table: {exc.message}") from exc
        self._table_ready = True

    def get(self, request_id: str) -> OnboardingRecord | None:
        self._ensure_table()
        try:
            entity = self._table.get_entity(partition_key=request_id, row_key=ROW_KEY)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StateStoreError(f"Could not read the state of request {request_id}: {exc.message}") from exc
        return _from_entity(entity)

    def create(self, record: OnboardingRecord) -> OnboardingRecord:
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

    def replace(self, record: OnboardingRecord) -> OnboardingRecord:
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

    def list(self, *, status: RequestStatus | None = None) -> Iterator[OnboardingRecord]:
        self._ensure_table()
        try:
            if status is None:
                entities = self._table.query_entities(f"RowKey eq '{ROW_KEY}'")
            else:
                entities = self._table.query_entities(
                    "RowKey eq @row and Status eq @status",
                    parameters={"row": ROW_KEY, "status": status.value},
                )
            for entity in entities:
                yield _from_entity(entity)
        except AzureError as exc:
            raise StateStoreError(f"Could not list onboarding requests: {exc.message}") from exc

    def delete_all(self) -> None:
        """Drop every record (tests and the demo start from an empty table)."""
        self._ensure_table()
        for entity in self._table.list_entities(select=["PartitionKey", "RowKey"]):
            self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])

    def close(self) -> None:
        self._table.close()
