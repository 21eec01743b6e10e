"""Whether a body runs under its requestId: the one rule that the HTTP intake, the queue's claim,
the product's own enqueue (offboarding, rotation) and the dry run all follow, so that what the dry
run says a submission would do is what the submission does.

* no row, or only a row of a body that failed validation: the body runs (``NEW``);
* a row of this very body: that request; nothing new runs, its state is the answer (``SAME``);
* a row of a **refused** request (failed at its check, before anything was made) and another
  body: the corrected body runs again under the same requestId, as the request's next run
  (``RERUN``), whose events have ids of their own (:meth:`~shared.state.RequestRecord.rerun`);
* a row of a request that made something, succeeded or is in flight, and another body: refused
  (``CONFLICT``; HTTP 409): a new request needs a new requestId.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from shared.state import RequestStatus, StepOutcome

if TYPE_CHECKING:
    from shared.state import RequestRecord

#: The results key the HTTP intake keeps the fingerprint of the body as submitted under (the
#: queued body differs when an inline secret was staged); either fingerprint names the request.
INTAKE_FINGERPRINT = "_intakeFingerprint"
#: The step every plan starts with, where a request is refused before it makes anything.
CHECK_STEP = "check"


class Admission(StrEnum):
    NEW = "new"
    SAME = "same"
    RERUN = "rerun"
    CONFLICT = "conflict"


def admission(existing: RequestRecord | None, fingerprint: str) -> Admission:
    """What a body with ``fingerprint`` does under a requestId whose row is ``existing``."""
    if existing is None or existing.rejected:
        return Admission.NEW
    if fingerprint in (existing.fingerprint, existing.results.get(INTAKE_FINGERPRINT)):
        return Admission.SAME
    return Admission.RERUN if refused(existing) else Admission.CONFLICT


def refused(record: RequestRecord) -> bool:
    """Failed at its check step and nowhere else, having made nothing but what the HTTP intake
    staged for it (taken back with the failure), with nothing left to take back."""
    from shared.made import Kind

    check = record.steps.get(CHECK_STEP)
    return (record.status is RequestStatus.FAILED and not record.rejected and not record.cleanup
            and check is not None and check.outcome is StepOutcome.FAILED and set(record.steps) == {CHECK_STEP}
            and all(entry.get("kind") == Kind.STAGED_SECRET.value for entry in record.made.values()))


def restart(existing: RequestRecord, admitted: Admission, *, account_name: str, fingerprint: str,
            request: str) -> RequestRecord:
    """The row that replaces ``existing`` for a body admitted ``NEW`` (over an invalid body's row)
    or ``RERUN``, queued; the caller writes it (ETag-conditioned)."""
    make = existing.rerun if admitted is Admission.RERUN else existing.fresh
    record = make(account_name=account_name, fingerprint=fingerprint, request=request)
    record.status = RequestStatus.QUEUED
    record.current_step = "queued"
    return record


def conflict_message(existing: RequestRecord) -> str:
    """Why another body under ``existing``'s requestId is refused, and what to do."""
    request_id = existing.request_id
    if existing.status is RequestStatus.SUCCEEDED:
        why = "it succeeded"
    elif not existing.status.finished:
        why = f"it is {existing.status.value}"
    else:
        why = (f"it failed at step {existing.current_step or CHECK_STEP}, past the point where a corrected body "
               "may run it again (only a request refused at its check, having made nothing, may)")
    return (f"Request {request_id} was already submitted with a different body and {why}; use a new "
            "requestId for a new request.")
