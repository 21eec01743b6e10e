"""What the state row of one onboarding request holds. Never a secret value: ids and uids only."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class RequestStatus(StrEnum):
    QUEUED = "queued"        # accepted over HTTP and put on the queue; no delivery has started
    RUNNING = "running"      # a delivery holds (or held) the lease and works on it
    WAITING = "waiting"      # a dependency was down; a delayed copy of the message will resume it
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.SUCCEEDED, RequestStatus.FAILED)


class StepOutcome(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepRecord:
    outcome: StepOutcome
    at: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "at": self.at, "detail": self.detail}


@dataclass
class OnboardingRecord:
    """The state of one request.

    ``results`` holds what later steps and retries need: Palette uids, the Graph keyId, Key Vault
    secret ids and versions, and markers written *before* a non-idempotent call (so a retry knows
    the call may have happened and checks before repeating it).
    """

    request_id: str
    account_name: str
    fingerprint: str
    status: RequestStatus = RequestStatus.RUNNING
    current_step: str = ""
    steps: dict[str, StepRecord] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    emitted: list[str] = field(default_factory=list)
    error_reason: str = ""
    error_message: str = ""
    lease_owner: str = ""
    lease_expires_at: str = ""
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    etag: str | None = None

    def step_done(self, step: str) -> bool:
        record = self.steps.get(step)
        return record is not None and record.outcome in (StepOutcome.SUCCEEDED, StepOutcome.SKIPPED)

    def lease_active(self, now: dt.datetime) -> bool:
        if not self.lease_owner or not self.lease_expires_at:
            return False
        return dt.datetime.fromisoformat(self.lease_expires_at.replace("Z", "+00:00")) > now

    def to_public(self) -> dict[str, Any]:
        """The view for the HTTP API and the demo (no lease internals)."""
        return {
            "requestId": self.request_id,
            "accountName": self.account_name,
            "status": self.status.value,
            "currentStep": self.current_step,
            "steps": {name: step.as_dict() for name, step in self.steps.items()},
            "palette": {k: v for k, v in self.results.items() if not k.startswith("_")},
            "error": ({"reason": self.error_reason, "message": self.error_message}
                      if self.error_reason else None),
            "attempts": self.attempts,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    def copy(self) -> OnboardingRecord:
        data = asdict(self)
        data["steps"] = {k: StepRecord(StepOutcome(v["outcome"]), v["at"], v["detail"])
                         for k, v in data["steps"].items()}
        data["status"] = RequestStatus(data["status"])
        return OnboardingRecord(**data)
