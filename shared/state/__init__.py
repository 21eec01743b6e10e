"""The onboarding state: one Table Storage row per requestId, updated under optimistic concurrency."""

from shared.state.records import OnboardingRecord, RequestStatus, StepOutcome, StepRecord
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
    "OnboardingRecord",
    "RecordPage",
    "RequestStatus",
    "StateStore",
    "StepOutcome",
    "StepRecord",
    "TableStateStore",
]
