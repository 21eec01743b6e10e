"""Nothing stays stuck: the sweeper (a timer) and the dead-letter handler.

Every way a request can be left behind ends here:

* a row with **events not yet sent** (the topic was down when they were recorded): sent;
* a row left **queued** (the HTTP intake wrote it, the send failed): its message is sent again
  under the requestId, so the queue's duplicate detection drops it if the first did arrive;
* a row **running** whose lease lapsed long ago, or **waiting** past its due time, with no
  delivery taking it over (the message was lost, or its delayed copy never got scheduled): a new
  message re-drives it, carrying the row's retry token;
* a request re-driven ``max_redrives`` times without finishing, or one asked to fail whose holder
  died: failed (:func:`shared.engine.fail.stop_request`), taking back what it made;
* a failed request whose **cleanup** is pending (what it made and could not take back at the
  time): taken back now;
* a message **dead-lettered** by Service Bus (``maxDeliveryCount`` reached, or expired): its
  request is failed with the dead-letter reason and announced, instead of vanishing; a request
  that never ran gets a row saying so.

Neither ever fails a request a live delivery holds: they ask it to stop (``RequestRecord.stop``).
The sweep reads only rows that need it (one filtered query), so its cost grows with the stuck
rows, not with every request ever made.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.engine.claim import announce
from shared.engine.enqueue import message_id_of, send_recorded
from shared.engine.fail import stop_request
from shared.engine.failures import Failure, FailureKind
from shared.engine.outcome import Outcome, OutcomeKind
from shared.engine.plan import build_document
from shared.errors import RequestValidationError, StateStoreError
from shared.logs import Counts, bind, get_logger
from shared.made import Made, take_back
from shared.state import ConcurrentUpdateError, RequestRecord, RequestStatus, retry
from shared.state.records import INVALID_FINGERPRINT_PREFIX, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from shared.clients.queue import RequestQueue
    from shared.engine.plan import Plan
    from shared.services import Services
    from shared.settings import PipelineConfig, SweepConfig

logger = get_logger(__name__)


@dataclass
class SweepReport(Counts):
    """What one sweep did (logged as one line by the timer)."""

    looked_at: int = 0
    flushed: int = 0
    resent: int = 0
    redriven: int = 0
    failed: int = 0
    cleaned: int = 0
    errors: int = 0


def sweep(clients: Services, queue: RequestQueue, config: SweepConfig, *, pipeline: PipelineConfig,
          plan_for: Callable[[bytes | str | Mapping[str, Any]], Plan], background_queue: RequestQueue | None = None,
          now: dt.datetime | None = None) -> SweepReport:
    """Look at every row that needs it once; one row failing does not stop the others. A request is
    sent again to the queue its plan puts it on: ``background_queue`` for background work (when
    given), ``queue`` else."""
    report = SweepReport()
    moment = now or utcnow()

    def queue_of(record: RequestRecord) -> RequestQueue:  # asked only of a request that is sent again
        if background_queue is not None and _is_background(record, plan_for, pipeline):
            return background_queue
        return queue
    for record in clients.state.list_open():
        report.looked_at += 1
        with bind(requestId=record.request_id):
            try:
                _sweep_row(record, clients, queue_of, config, pipeline, plan_for, moment, report)
            except Exception:
                report.errors += 1
                logger.warning("sweep: request %s could not be handled", record.request_id, exc_info=True)
    logger.info("sweep: %s", report.as_dict())
    return report


def _sweep_row(record: RequestRecord, clients: Services, queue_of: Callable[[RequestRecord], RequestQueue],
               config: SweepConfig, pipeline: PipelineConfig,
               plan_for: Callable[[bytes | str | Mapping[str, Any]], Plan], now: dt.datetime,
               report: SweepReport) -> None:
    store = clients.state
    if record.outbox and not record.lease_active(now):
        record = store.flush(record, clients.events)
        report.flushed += 0 if record.outbox else 1
    if record.cleanup and record.status.finished:
        record, done = _clean_up(record, clients)
        report.cleaned += done
    grace = dt.timedelta(seconds=config.grace_seconds)
    if record.status is RequestStatus.QUEUED and not record.stop:
        if _older_than(record.updated_at, now, dt.timedelta(seconds=config.queued_after_seconds)) and record.request:
            record = _count_redrive(record, clients)
            send_recorded(queue_of(record), record)
            report.resent += 1
        return
    stale = (record.status is not RequestStatus.WAITING and not record.lease_active(now - grace)) or (
        record.status is RequestStatus.WAITING and _older_than(record.due_at, now, grace))
    if record.status.finished or not stale:
        return
    if not record.finishing and (record.stop or record.redrives >= config.max_redrives or not record.request):
        failure = Failure(FailureKind.PERMANENT, "stuck", (
            f"Request {record.request_id} stopped making progress ({record.status.value} at step "
            f"'{record.current_step or 'queued'}') and was re-driven {record.redrives} times; it was stopped and "
            "what it made was taken back. Submit it again under a new requestId."))
        stop_request(record, plan_for(record.request or b"{}"), clients, failure, discriminator="stuck",
                     owner=f"sweeper:{uuid.uuid4().hex[:12]}", lease_seconds=pipeline.lease_seconds)
        report.failed += 1
        return
    record = _count_redrive(record, clients)
    send_recorded(queue_of(record), record, message_id=f"{message_id_of(record)}/redrive/{record.redrives}",
                  retry_token=record.retry_token)
    report.redriven += 1
    logger.info("sweep: re-drove request %s (%s, re-drive %d)", record.request_id, record.status.value,
                record.redrives)


def _is_background(record: RequestRecord, plan_for: Callable[[bytes | str | Mapping[str, Any]], Plan],
                   pipeline: PipelineConfig) -> bool:
    """Whether the request's plan calls it background work (its queue is the background queue)."""
    if not record.request:
        return False
    plan = plan_for(record.request)
    try:
        return plan.background(plan.parse(record.request, pipeline))
    except RequestValidationError:  # it parsed when it was stored; were it not to now, the default queue
        return False


def _older_than(stamp: str, now: dt.datetime, age: dt.timedelta) -> bool:
    moment = parse_iso(stamp)
    return moment is None or moment + age < now


def _count_redrive(record: RequestRecord, clients: Services) -> RequestRecord:
    def count(row: RequestRecord) -> None:
        row.redrives += 1
    store = clients.state
    return retry.update(record, count, write=store.replace, read=lambda: store.get(record.request_id)) or record


def _clean_up(record: RequestRecord, clients: Services) -> tuple[RequestRecord, int]:
    """Take back what a failed request made and could not take back at the time."""
    done: list[dict[str, Any]] = []
    for item in record.cleanup:
        try:
            take_back(Made.from_dict(item), record.request_id, clients)
        except Exception:
            logger.warning("sweep: cleanup of request %s failed again", record.request_id, exc_info=True)
            continue
        done.append(item)
    if not done:
        return record, 0

    def drop(row: RequestRecord) -> None:
        row.cleanup = [item for item in row.cleanup if item not in done]
    store = clients.state
    return retry.update(record, drop, write=store.replace, read=lambda: store.get(record.request_id)) or record, \
        len(done)


# -- dead letters ------------------------------------------------------------------------------------

def handle_dead_letter(body: bytes | str | Mapping[str, Any], clients: Services, config: PipelineConfig, *,
                       plan_for: Callable[[bytes | str | Mapping[str, Any]], Plan], message_id: str, reason: str,
                       description: str, enqueued_at: dt.datetime | None = None) -> Outcome:
    """A message Service Bus gave up on: fail its request with the reason, and say so (a message
    that names no request by its Service Bus id and enqueued time)."""
    from shared.engine.reject import message_of
    from shared.models import identity_of

    request_id, account_name = identity_of(body)
    why = f"{reason or 'no reason given'}" + (f": {description}" if description else "")
    message = (f"Service Bus dead-lettered the message {message_id or '(no id)'} ({why}). The request was stopped "
               "and what it made was taken back; fix the cause and submit it again under a new requestId.")
    failure = Failure(FailureKind.PERMANENT, "dead_lettered", message)
    discriminator = f"dead-letter:{message_id}"
    plan = plan_for(body)
    store = clients.state
    if request_id is None:
        announce(clients, build_document("unknown", account_name or "unknown", plan.failed_event, "check", "failed",
                                         discriminator=discriminator, reason="dead_lettered", message=message,
                                         **message_of(message_id, enqueued_at)))
        return Outcome(OutcomeKind.FAILED, "", "dead_lettered", message)
    fingerprint = _fingerprint(plan, body, config)
    record = store.get(request_id) or _never_ran(plan, body, request_id, account_name or "unknown", fingerprint,
                                                 clients, config)
    if record is None:
        raise StateStoreError(f"The state of request {request_id} vanished; the dead letter is tried again.")
    if record.fingerprint != fingerprint and not (record.rejected and fingerprint.startswith(
            INVALID_FINGERPRINT_PREFIX)):
        # A message that conflicted with the row's request: that request is not this one.
        announce(clients, build_document(request_id, account_name or "unknown", plan.failed_event, "check", "failed",
                                         discriminator=discriminator, reason="dead_lettered", message=message))
        return Outcome(OutcomeKind.FAILED, request_id, "dead_lettered", message)
    if record.status.finished:
        store.flush(record, clients.events)
        return Outcome(OutcomeKind.DUPLICATE, request_id, record.error_reason,
                       f"Request {request_id} had already {record.status.value}.")
    left = stop_request(record, plan, clients, failure, discriminator=discriminator,
                        owner=f"dead-letter:{message_id or uuid.uuid4().hex[:12]}",
                        lease_seconds=config.lease_seconds)
    if left.finishing and not left.status.finished:
        return Outcome(OutcomeKind.DUPLICATE, request_id, "finishing",
                       f"Request {request_id} passed its last check and is being finished; the dead-lettered copy "
                       "changes nothing.")
    if not left.status.finished:
        return Outcome(OutcomeKind.BUSY, request_id, "dead_lettered",
                       f"Request {request_id} is held by a delivery; it was asked to stop and fails at its next step.")
    return Outcome(OutcomeKind.FAILED, request_id, "dead_lettered", message, state=left.to_public())


def _fingerprint(plan: Plan, body: bytes | str | Mapping[str, Any], config: PipelineConfig) -> str:
    from shared.engine.reject import digest_of
    from shared.errors import RequestValidationError

    try:
        return plan.fingerprint(plan.parse(body, config))
    except RequestValidationError:
        return f"{INVALID_FINGERPRINT_PREFIX}{digest_of(body)}"


def _never_ran(plan: Plan, body: bytes | str | Mapping[str, Any], request_id: str, account_name: str,
               fingerprint: str, clients: Services, config: PipelineConfig) -> RequestRecord | None:
    """The row of a request dead-lettered before any delivery wrote one, written queued so that it
    fails the one way every request fails (its state can then be read); the row another writer
    made meanwhile, if one did."""
    from shared.errors import RequestValidationError

    try:
        queued = plan.queued(plan.parse(body, config))
    except RequestValidationError:
        queued = ""
    store = clients.state
    try:
        return store.create(RequestRecord(request_id=request_id, account_name=account_name, fingerprint=fingerprint,
                                          request=queued, status=RequestStatus.QUEUED, current_step="queued"))
    except ConcurrentUpdateError:
        return store.get(request_id)
