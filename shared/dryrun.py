"""What a dry run (``POST /api/onboardings/validate``) answers, and the check step reports: one
:class:`CheckResult` per thing looked at, with what the request would do with it.

Onboarding's checks (:mod:`shared.onboarding.checks`) and offboarding's preview
(:mod:`shared.offboarding.intake`) speak this vocabulary; :mod:`shared.operations` picks which
runs for a body.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.errors import PermanentStepError
    from shared.services import Services
    from shared.state import RequestRecord


class CheckOutcome(StrEnum):
    OK = "ok"
    MISSING = "missing"        # a name the request gives does not exist
    CLASH = "clash"            # a name the request would use is somebody else's (or blocked)
    NOT_READY = "notReady"     # it exists but cannot be used yet (a gateway that is not Running)
    INVALID = "invalid"        # the request breaks the schema
    SKIPPED = "skipped"        # not checked: it needs what an earlier check could not find
    ERROR = "error"            # the lookup itself failed (a service down); try again

    @property
    def failed(self) -> bool:
        return self not in (CheckOutcome.OK, CheckOutcome.SKIPPED)


class Action(StrEnum):
    """What the onboarding would do with the object a check looked at."""

    CREATE = "create"
    UPDATE = "update"
    REUSE = "reuse"     # the requestId's: this body was submitted before; nothing new would run
    RERUN = "rerun"     # the requestId's: a request refused at its check would run again with this body
    RECOVER = "recover"
    CLASH = "clash"
    REMOVE = "remove"   # an offboarding's: it would remove what the check looked at
    KEEP = "keep"       # an offboarding's: it would leave it (the detail says why)


@dataclass(frozen=True)
class CheckResult:
    """One check's finding. ``results`` are the uids the pipeline records; ``failure`` is what the
    check step raises (kept out of the dictionary form, which is the HTTP answer)."""

    name: str
    outcome: CheckOutcome
    detail: str
    action: Action | None = None
    field: str | None = None
    reason: str = ""
    errors: tuple[Mapping[str, str], ...] = ()
    # ``field`` names the request field to change, so the dataclass helper is spelled out here.
    results: Mapping[str, str] = dataclasses.field(default_factory=dict)
    failure: PermanentStepError | None = dataclasses.field(default=None, compare=False, repr=False)
    #: What the lookup found, for the steps of the same delivery: ``Found(None)`` for "nothing of
    #: that name", ``Found(obj)`` for the object; ``None`` when the check hands nothing on.
    found: Found | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def failed(cls, name: str, outcome: CheckOutcome, error: PermanentStepError,
               action: Action | None = None) -> CheckResult:
        return cls(name, outcome, str(error), action, error.field, error.reason, failure=error)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "outcome": self.outcome.value, "detail": self.detail}
        if self.action is not None:
            out["action"] = self.action.value
        if self.field is not None:
            out["field"] = self.field
        if self.reason:
            out["reason"] = self.reason
        if self.errors:
            out["errors"] = [dict(e) for e in self.errors]
        return out


@dataclass(frozen=True)
class Found:
    """What a check's lookup returned (``value`` None: nothing bears the name)."""

    value: Any


@dataclass(frozen=True)
class DryRun:
    """What :func:`dry_run` found: one result per check, in the check step's order."""

    request_id: str | None
    account_name: str | None
    checks: list[CheckResult]
    operation: str = "onboard"
    #: An offboarding's: what it would remove and what it would leave (and why).
    would_remove: list[str] | None = None
    would_leave: list[str] | None = None

    @property
    def valid(self) -> bool:
        """No check failed: the request would pass the check step as things stand now."""
        return not any(check.outcome.failed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"valid": self.valid, "operation": self.operation, "requestId": self.request_id,
                               "accountName": self.account_name, "checks": [check.as_dict() for check in self.checks]}
        if self.would_remove is not None:
            out["wouldRemove"] = self.would_remove
        if self.would_leave is not None:
            out["wouldLeave"] = self.would_leave
        return out


def request_id_check(request_id: str, fingerprint: str, clients: Services) -> tuple[CheckResult, bool]:
    """The dry run's ``requestId`` check: what submitting the body would do under its requestId,
    decided by the rule submitting follows (:func:`shared.engine.admission.admission`); and whether
    the body would run (then the other checks say how; otherwise they are not made, since nothing
    they found would happen)."""
    from shared.engine.admission import Admission, admission, conflict_message

    existing = clients.state.get(request_id)
    admitted = admission(existing, fingerprint)
    if existing is None or admitted is Admission.NEW:
        return CheckResult("requestId", CheckOutcome.OK, f"request {request_id} is new; submitting it would run it",
                           Action.CREATE), True
    if admitted is Admission.RERUN:
        return CheckResult("requestId", CheckOutcome.OK, (
            f"request {request_id} was refused at its check ({existing.error_reason}) and made nothing; submitting "
            f"this corrected body under the same requestId would run it again (run {existing.run + 1}), as the "
            "checks below say"), Action.RERUN), True
    if admitted is Admission.CONFLICT:
        return CheckResult("requestId", CheckOutcome.CLASH, f"{conflict_message(existing)} The checks below are "
                           "for this body under a new requestId.", Action.CLASH, field="requestId",
                           reason="request_id_conflict"), True
    return _submitted_before(existing), False


def _submitted_before(existing: RequestRecord) -> CheckResult:
    """What submitting the same body again does: nothing new; the answer is the request's state."""
    from shared.engine.admission import CHECK_STEP, refused
    from shared.state import RequestStatus

    request_id = existing.request_id
    state = f"GET /api/onboardings/{request_id}"
    if existing.status is RequestStatus.SUCCEEDED:
        return CheckResult("requestId", CheckOutcome.OK, (
            f"request {request_id} already succeeded with this body (at {existing.updated_at}); submitting it again "
            f"does nothing and answers that state ({state})"), Action.REUSE)
    if not existing.status.finished:
        step = existing.current_step
        recorded = f" (last step recorded: '{step}')" if step not in ("", "queued") else ""
        return CheckResult("requestId", CheckOutcome.OK, (
            f"request {request_id} was submitted with this body and is {existing.status.value}{recorded}; "
            f"submitting it again starts nothing new and answers its state ({state})"), Action.REUSE)
    step = existing.current_step or CHECK_STEP
    then = ("It was refused at its check and made nothing: change the body as the error says and submit it "
            "under the same requestId to run it again, or use a new requestId." if refused(existing) else
            "Use a new requestId to try again.")
    return CheckResult("requestId", CheckOutcome.CLASH, (
        f"Request {request_id} already failed with this body at step '{step}' ({existing.error_reason}: "
        f"{existing.error_message}); submitting the same body again does nothing and answers that failure "
        f"({state}). {then}"), Action.REUSE, field="requestId")
