"""What processing one delivery of a request came to, for the trigger to map onto its host."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"      # every step done and verified
    FAILED = "failed"            # permanent failure, recorded and announced
    REJECTED = "rejected"        # the request is invalid (nothing created); announced
    DUPLICATE = "duplicate"      # already finished: nothing done but sending events still pending
    CONFLICT = "conflict"        # the same requestId was submitted with a different body; announced
    BUSY = "busy"                # another delivery or request holds what this needs: check back later
    RETRY_LATER = "retry_later"  # a dependency is down past the in-call budget: resume later
    NOT_DUE = "not_due"          # the request waits for a delayed copy that is already scheduled


@dataclass(frozen=True)
class Outcome:
    """``retry_in_seconds`` set: the trigger schedules a copy of the message that long from now,
    with ``retry_token`` as its ``retryToken`` application property (the copy a waiting request
    resumes on); unset: the message is done."""

    kind: OutcomeKind
    request_id: str
    reason: str = ""
    message: str = ""
    retry_in_seconds: float | None = None
    retry_token: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.REJECTED,
                             OutcomeKind.DUPLICATE, OutcomeKind.CONFLICT)
