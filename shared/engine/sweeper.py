"""Nothing stays stuck: the sweeper (a timer) and the dead-letter handler.

Every way a request can be left behind ends here:

* a row with **events not yet sent** (the topic was down when they were recorded): sent;
* a row left **queued** (the HTTP intake wrote it, the send failed): its message is sent again
  under the requestId, so the queue's duplicate detection drops it if the first did arrive;
* a row **running** whose lease lapsed long ago, or **waiting** past its due time, with no
  delivery taking it over (the message was lost, or its delayed copy never got scheduled): a new
  message re-drives it, carrying the row's retry token;
* a request re-driven ``max_redrives`` times without finishing: failed as ``stuck``, announced;
* a failed request whose **cleanup** is pending (a password or API key it made and could not
  remove at the time): removed now;
* a message **dead-lettered** by Service Bus (``maxDeliveryCount`` reached, or expired): its
  request is failed with the dead-letter reason and announced, instead of vanishing.

The sweep reads only rows that need it (one filtered query), so its cost grows with the stuck
rows, not with every request ever made.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.engine.enqueue import send_recorded
from shared.engine.outcome import Outcome, OutcomeKind
from shared.engine.record import flush_outbox
from shared.logs import bind, get_logger
from shared.state import ConcurrentUpdateError, OnboardingRecord, RequestStatus, StepOutcome, StepRecord
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.settings import SweepConfig

logger = get_logger(__name__)


@dataclass
class SweepReport:
    """What one sweep did (logged as one line by the timer)."""

    looked_at: int = 0
    flushed: int = 0
    resent: int = 0
    redriven: int = 0
    failed: int = 0
    cleaned: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def sweep(clients: Services, queue: RequestQueue, config: SweepConfig, *,
          now: dt.datetime | None = None) -> SweepReport:
    """Look at every row that needs it once; one row failing does not stop the others."""
    report = SweepReport()
    moment = now or utcnow()
    for record in clients.state.list_open():
        report.looked_at += 1
        with bind(requestId=record.request_id):
            try:
                _sweep_row(record, clients, queue, config, moment, report)
            except Exception:
                report.errors += 1
                logger.warning("sweep: request %s could not be handled", record.request_id, exc_info=True)
    logger.info("sweep: %s", report.as_dict())
    return report


def _sweep_row(record: OnboardingRecord, clients: Services, queue: RequestQueue, config: SweepConfig,
               now: dt.datetime, report: SweepReport) -> None:
    if record.outbox:
        record = flush_outbox(clients.state, clients.events, record)
        report.flushed += 0 if record.outbox else 1
    if record.cleanup:
        record, done = _clean_up(record, clients)
        report.cleaned += done
    grace = dt.timedelta(seconds=config.grace_seconds)
    if record.status is RequestStatus.QUEUED:
        if _older_than(record.updated_at, now, dt.timedelta(seconds=config.queued_after_seconds)) and record.request:
            record = _count_redrive(record, clients)
            send_recorded(queue, record)
            report.resent += 1
        return
    stale_running = record.status is RequestStatus.RUNNING and not record.lease_active(now - grace)
    stale_waiting = record.status is RequestStatus.WAITING and _older_than(record.due_at, now, grace)
    if not (stale_running or stale_waiting):
        return
    if record.redrives >= config.max_redrives or not record.request:
        _fail_stuck(record, clients)
        report.failed += 1
        return
    record = _count_redrive(record, clients)
    send_recorded(queue, record, message_id=f"{record.request_id}/redrive/{record.redrives}",
                  retry_token=record.retry_token)
    report.redriven += 1
    logger.info("sweep: re-drove request %s (%s, re-drive %d)", record.request_id, record.status.value,
                record.redrives)


def _older_than(stamp: str, now: dt.datetime, age: dt.timedelta) -> bool:
    moment = parse_iso(stamp)
    return moment is None or moment + age < now


def _update(record: OnboardingRecord, clients: Services,
            mutate: Callable[[OnboardingRecord], None]) -> OnboardingRecord:
    """Apply ``mutate`` to the row with optimistic concurrency, re-reading on a race."""
    current: OnboardingRecord | None = record
    for _ in range(5):
        if current is None:
            return record
        updated = current.copy()
        mutate(updated)
        try:
            return clients.state.replace(updated)
        except ConcurrentUpdateError:
            current = clients.state.get(record.request_id)
    raise ConcurrentUpdateError(f"The state of request {record.request_id} kept changing during the sweep.")


def _count_redrive(record: OnboardingRecord, clients: Services) -> OnboardingRecord:
    def count(r: OnboardingRecord) -> None:
        r.redrives += 1
    return _update(record, clients, count)


def fail_request(record: OnboardingRecord, clients: Services, *, reason: str, message: str,
                 discriminator: str) -> OnboardingRecord:
    """Fail a request that is not finished, with its ``failed`` event in the same write; send it."""
    from shared.clients.events import build_event, cloud_event_to_dict

    step = record.current_step if record.current_step not in ("", "queued", "done") else "check"
    event = cloud_event_to_dict(build_event(
        event_type="failed", account_name=record.account_name or "unknown", request_id=record.request_id,
        data={"requestId": record.request_id, "step": step, "outcome": "failed", "reason": reason,
              "message": message}, discriminator=discriminator))

    def fail(r: OnboardingRecord) -> None:
        if r.status.finished:
            return
        r.steps[step] = StepRecord(StepOutcome.FAILED, iso(utcnow()), reason)
        r.move_to(RequestStatus.FAILED)
        r.error_reason, r.error_message = reason, message
        r.due_at = r.retry_token = ""
        r.release_lease()
        r.record_event(event)
    updated = _update(record, clients, fail)
    logger.warning("request %s: failed at %s (%s): %s", record.request_id, step, reason, message)
    return flush_outbox(clients.state, clients.events, updated)


def _fail_stuck(record: OnboardingRecord, clients: Services) -> None:
    fail_request(record, clients, reason="stuck", discriminator="stuck", message=(
        f"Request {record.request_id} stopped making progress ({record.status.value} at step "
        f"'{record.current_step or 'queued'}') and was re-driven {record.redrives} times; it was stopped. "
        "Whatever it made is recorded in its state; submit it again under a new requestId to finish it."))


def _clean_up(record: OnboardingRecord, clients: Services) -> tuple[OnboardingRecord, int]:
    """Remove what a failed request made and could not remove at the time."""
    done: list[dict[str, str]] = []
    for item in record.cleanup:
        try:
            if item.get("kind") == "graphPassword" and clients.graph is not None:
                clients.graph.remove_password(item["appId"], item["keyId"])
            elif item.get("kind") == "paletteApiKey":
                clients.palette.delete_api_key(item["uid"])
            else:
                continue
        except Exception:
            logger.warning("sweep: cleanup %s of request %s failed", item.get("kind"), record.request_id,
                           exc_info=True)
            continue
        done.append(item)
    if not done:
        return record, 0

    def drop(r: OnboardingRecord) -> None:
        r.cleanup = [item for item in r.cleanup if item not in done]
    return _update(record, clients, drop), len(done)


def handle_dead_letter(body: bytes | str | Mapping[str, Any], clients: Services, *, message_id: str,
                       reason: str, description: str) -> Outcome:
    """A message Service Bus gave up on: fail its request with the reason, and say so."""
    from shared.models import identity_of

    request_id, account_name = identity_of(body)
    why = f"{reason or 'no reason given'}" + (f": {description}" if description else "")
    message = (f"Service Bus dead-lettered the onboarding message {message_id or '(no id)'} ({why}). The request "
               "was stopped; fix the cause and submit it again under a new requestId.")
    record = clients.state.get(request_id) if request_id else None
    if record is not None and not _same_body(body, record):
        record = None  # a message that conflicted with the row's request: that request is not this one
    if record is None:
        from shared.clients.events import build_event

        clients.events.publish(build_event(
            event_type="failed", account_name=account_name or "unknown", request_id=request_id or "unknown",
            data={"requestId": request_id or "unknown", "step": "check", "outcome": "failed",
                  "reason": "dead_lettered", "message": message},
            discriminator=f"dead-letter:{message_id}"))
        return Outcome(OutcomeKind.FAILED, request_id or "", "dead_lettered", message)
    if record.status.finished:
        flush_outbox(clients.state, clients.events, record)
        return Outcome(OutcomeKind.DUPLICATE, record.request_id, record.error_reason,
                       f"Request {record.request_id} had already {record.status.value}.")
    fail_request(record, clients, reason="dead_lettered", message=message, discriminator=f"dead-letter:{message_id}")
    return Outcome(OutcomeKind.FAILED, record.request_id, "dead_lettered", message)


def _same_body(body: bytes | str | Mapping[str, Any], record: OnboardingRecord) -> bool:
    """Whether a dead-lettered body is the request the row records (not a conflicting one)."""
    from shared.errors import RequestValidationError
    from shared.models import parse_request, request_fingerprint

    try:
        request = parse_request(body, require_pcg_for_us_government=False)
    except RequestValidationError:
        return record.rejected
    return request_fingerprint(request) == record.fingerprint
