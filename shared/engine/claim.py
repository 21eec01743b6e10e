"""Claiming a request for one delivery: its row inserted (a ticket's first delivery) or taken over
with an ETag-conditioned write once nobody holds it; or the answer why this delivery does nothing
(the request finished, waits for its scheduled copy, is held by another delivery, or its
requestId was used with another body: :mod:`shared.engine.admission` decides, and a corrected body
for a request refused at its check is its next run).

Every delivery first sends what its row still owes the topic (a crash or an outage after a write)
when nobody else holds the row: deliveries of a finished, failed or conflicting request too.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from shared.engine.admission import Admission, admission, conflict_message
from shared.engine.outcome import Outcome, OutcomeKind
from shared.errors import StateStoreError
from shared.logs import get_logger
from shared.state import ConcurrentUpdateError, RequestRecord, RequestStatus
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from shared.engine.plan import Plan
    from shared.services import Services
    from shared.settings import PipelineConfig

logger = get_logger(__name__)


def claim(plan: Plan, request: Any, clients: Services, config: PipelineConfig, *, owner: str, retry_token: str,
          row_expected: bool) -> RequestRecord | Outcome:
    """The request's row, claimed for ``owner`` (its lease taken, its started event recorded), or
    the outcome of a delivery that must not run it."""
    store = clients.state
    fingerprint = plan.fingerprint(request)
    queued = plan.queued(request)
    record = store.get(request.request_id) if row_expected else None
    if record is None:
        new = RequestRecord(request_id=request.request_id, account_name=request.account_name,
                            fingerprint=fingerprint, request=queued, current_step="queued")
        _claim_into(new, plan, request, owner, config)
        try:
            return store.create(new)
        except ConcurrentUpdateError:
            record = store.get(request.request_id)
            if record is None:
                raise StateStoreError(f"The state of request {request.request_id} vanished.") from None
    now = utcnow()
    if not (record.lease_active(now) and record.lease_owner != owner):
        record = store.flush(record, clients.events)
    admitted = admission(record, fingerprint)
    if admitted is Admission.CONFLICT or (admitted is Admission.RERUN and retry_token):
        # (A scheduled copy is the product's own copy of a run, never a corrected resend.)
        return conflict(plan, request, record, fingerprint, clients)
    if admitted is Admission.NEW:
        # A corrected resend of a ticket whose first body was invalid: it starts afresh.
        record = record.fresh(account_name=request.account_name, fingerprint=fingerprint, request=queued)
    elif admitted is Admission.RERUN:
        # A corrected resend of a request refused at its check: its next run.
        record = record.rerun(account_name=request.account_name, fingerprint=fingerprint, request=queued)
    if record.status.finished:
        return Outcome(OutcomeKind.DUPLICATE, request.request_id, record.error_reason,
                       f"Request {request.request_id} already {record.status.value}; nothing to do.",
                       state=record.to_public())
    if not record.due(now) and retry_token != record.retry_token and not record.stop:
        return Outcome(OutcomeKind.NOT_DUE, request.request_id, "waiting",
                       f"Request {request.request_id} resumes at {record.due_at} on its scheduled copy.",
                       state=record.to_public())
    if record.lease_active(now) and record.lease_owner != owner:
        expires = parse_iso(record.lease_expires_at) or now
        return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress",
                       f"Request {request.request_id} is being processed by another delivery.",
                       retry_in_seconds=max((expires - now).total_seconds(), 0) + 1, state=record.to_public())
    claimed = record.copy()
    _claim_into(claimed, plan, request, owner, config)
    try:
        return store.replace(claimed)
    except ConcurrentUpdateError:
        return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress",
                       f"Request {request.request_id} was claimed by another delivery.",
                       retry_in_seconds=config.busy_delay_seconds)


def _claim_into(record: RequestRecord, plan: Plan, request: Any, owner: str, config: PipelineConfig) -> None:
    if not record.stop:
        record.move_to(RequestStatus.RUNNING)
    record.lease_owner = owner
    record.lease_expires_at = iso(utcnow() + dt.timedelta(seconds=config.lease_seconds))
    record.due_at = record.retry_token = ""
    if plan.started_event is not None:
        record.record_event(plan.started_event(request))


def conflict(plan: Plan, request: Any, record: RequestRecord, fingerprint: str, clients: Services) -> Outcome:
    """The requestId was used with another body: the row (another request's) is left alone and
    the ticket hears why. The event id is this body's, so a redelivery does not repeat it."""
    from shared.engine.plan import build_document

    message = conflict_message(record)
    announce(clients, build_document(request.request_id, request.account_name, plan.failed_event, "check", "failed",
                                     discriminator=f"conflict:{fingerprint[:16]}", reason="request_id_conflict",
                                     message=message))
    logger.warning("request %s: conflicting resubmission refused", request.request_id)
    return Outcome(OutcomeKind.CONFLICT, request.request_id, "request_id_conflict", message, state=record.to_public())


def announce(clients: Services, document: dict[str, Any]) -> None:
    """Publish an event that belongs to no row of its own. A failure raises, so the message is
    redelivered and the event (same id) sent then: nothing else records it."""
    from azure.core.messaging import CloudEvent

    clients.events.publish(CloudEvent.from_dict(document))
