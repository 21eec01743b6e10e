"""The onboarding state: one Table Storage row per requestId, updated under optimistic concurrency."""

from shared.state.records import RequestRecord, RequestStatus, StepOutcome, StepRecord
from shared.state.store import (
    ConcurrentUpdateError,
    InvalidContinuationTokenError,
    NameLease,
    RecordPage,
    StateStore,
    TableStateStore,
)

__all__ = [
    "ConcurrentUpdateError",
    "InvalidContinuationTokenError",
    "NameLease",
    "RecordPage",
    "RequestRecord",
    "RequestStatus",
    "StateStore",
    "StepOutcome",
    "StepRecord",
    "TableStateStore",
]
