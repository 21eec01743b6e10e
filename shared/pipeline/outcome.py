"""What processing one delivery of a request came to, for the trigger to map onto its host."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"      # every step done and verified
    FAILED = "failed"            # permanent failure, recorded and announced
    REJECTED = "rejected"        # the request is invalid (nothing created); recorded when it has an id
    DUPLICATE = "duplicate"      # already finished: nothing done, nothing re-emitted
    CONFLICT = "conflict"        # the same requestId was submitted with a different body
    BUSY = "busy"                # another delivery holds the request: check back later
    RETRY_LATER = "retry_later"  # a dependency is down past the in-call budget: resume later


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    request_id: str
    reason: str = ""
    message: str = ""
    retry_in_seconds: float | None = None
    attempt: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.REJECTED,
                             OutcomeKind.DUPLICATE, OutcomeKind.CONFLICT)
