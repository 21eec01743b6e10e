"""The onboarding state: one Table Storage row per requestId, updated under optimistic concurrency."""

from shared.state.records import OnboardingRecord, RequestStatus, StepOutcome, StepRecord
from shared.state.store import ConcurrentUpdateError, NameLease, StateStore, TableStateStore

__all__ = [
    "ConcurrentUpdateError",
    "NameLease",
    "OnboardingRecord",
    "RequestStatus",
    "StateStore",
    "StepOutcome",
    "StepRecord",
    "TableStateStore",
]
