"""The one way a request fails, whoever decides it: the delivery that holds it, the dead-letter
handler, or the sweeper.

A request that fails takes back everything it made that it still owns (:mod:`shared.made`), then
records ``failed`` and its event in one write: the event says what was removed and what is left
(and why); what could not be removed yet stays in the row's ``cleanup`` for the sweeper. Only the
holder of the request's lease does this. Anybody else first asks (:func:`stop_request`): the
request is taken at once when nobody holds it; while a delivery holds it, the row's ``stop`` asks
that delivery to fail it at its next fence or step, and if that delivery dies, its lease lapses
and the sweeper fails the request. A crash while failing leaves ``stop`` set, so whoever takes the
request next fails it again (taking back is idempotent) instead of resuming its steps.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from shared.engine.failures import Failure
from shared.engine.plan import build_document, palette_uids
from shared.engine.record import RecordHandle, requested_stop
from shared.logs import get_logger
from shared.made import Made, take_back
from shared.state import RequestStatus, StepOutcome, StepRecord, retry
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from shared.engine.plan import Plan
    from shared.services import Services
    from shared.state import RequestRecord

logger = get_logger(__name__)


def fail_request(handle: RecordHandle, plan: Plan, clients: Services, failure: Failure, *, step: str,
                 discriminator: str = "", also: Sequence[dict[str, Any]] = (), details: Mapping[str, Any] | None = None,
                 checkpoint: Callable[[str], None] = lambda _name: None) -> RequestRecord:
    """Fail the request ``handle`` holds: take back what it made, record ``failed`` with its event
    (and ``also``, events decided with the failure), release the lease, publish.

    Raises
    ------
    shared.engine.record.LeaseLostError
        The request was taken over meanwhile: its new holder decides.
    """
    record = handle.record
    owned = {key: Made.from_dict(entry) for key, entry in record.made.items()}
    to_take = {key: entry for key, entry in owned.items() if entry.owned}
    if to_take and not record.stop:
        # Failing from here on: a crash before the end makes the next holder fail it again.
        stop = {"reason": failure.reason, "message": failure.message, "discriminator": discriminator}
        handle.write(lambda row: row.stop.update(stop))
    removed: list[str] = []
    left: list[Made] = []
    for entry in to_take.values():
        try:
            what = take_back(entry, record.request_id, clients)
        except Exception:
            logger.warning("request %s: could not take back %s yet", record.request_id, entry.describe(),
                           exc_info=True)
            left.append(entry)
            continue
        if what:
            removed.append(what)
    kept = [f"{entry.describe()}: {entry.why}" for entry in owned.values() if not entry.owned]
    if removed:
        failure = Failure(failure.kind, failure.reason,
                          f"{failure.message} What it had made was removed again: {'; '.join(removed)}.")
    data: dict[str, Any] = dict(details or {})
    if removed:
        data["removed"] = removed
    if left or kept:
        data["left"] = [f"{entry.describe()}: not removed yet; the sweeper keeps trying" for entry in left] + kept
    event = build_document(record.request_id, record.account_name or "unknown", plan.failed_event, step or "unknown",
                           "failed", discriminator=discriminator, reason=failure.reason, message=failure.message,
                           palette=palette_uids(record), **data)
    if plan.failed is not None:
        try:
            plan.failed(clients, record, failure)
        except Exception:
            logger.warning("request %s: could not record the failure elsewhere", record.request_id, exc_info=True)

    def failed(row: RequestRecord) -> None:
        if step:  # the step that failed is where the request stopped, not the last one recorded
            row.steps[step] = StepRecord(StepOutcome.FAILED, iso(utcnow()), failure.reason)
            row.current_step = step
        row.move_to(RequestStatus.FAILED)
        row.error_reason, row.error_message = failure.reason, failure.message
        row.cleanup = [*row.cleanup, *(entry.to_dict() for entry in left)]
        row.due_at = row.retry_token = ""
        row.stop = {}
    handle.write(failed, events=[*also, event], release=True)
    checkpoint("failed.saved")
    handle.publish(clients.events, sent=lambda: checkpoint("failed.sent"))
    checkpoint("failed.published")
    logger.warning("request %s: failed at %s (%s): %s", record.request_id, step, failure.reason, failure.message)
    return handle.record


def step_of(record: RequestRecord) -> str:
    """The step a request stood at, for a failure decided from outside it."""
    return record.current_step if record.current_step not in ("", "queued", "done") else "check"


def stop_request(record: RequestRecord, plan: Plan, clients: Services, failure: Failure, *, discriminator: str,
                 owner: str, lease_seconds: float) -> RequestRecord:
    """Fail a request from outside any delivery of it: at once when nobody holds it (its lease
    taken first), else by asking the delivery that holds it (``stop``). Returns the row as left."""
    lease = dt.timedelta(seconds=lease_seconds)
    wanted = {"reason": failure.reason, "message": failure.message, "discriminator": discriminator}

    def ask(row: RequestRecord) -> None:
        now = utcnow()
        if row.status.finished or row.finishing:
            raise retry.Unchanged  # done, or committed to succeed: whoever holds it finishes it
        held = row.lease_active(now) and row.lease_owner != owner
        if held and row.stop:
            raise retry.Unchanged  # asked already: the holder fails it
        row.stop = row.stop or wanted
        if not held:
            row.lease_owner, row.lease_expires_at = owner, iso(now + lease)

    store = clients.state
    current = retry.update(record, ask, write=store.replace, read=lambda: store.get(record.request_id)) or record
    if current.status.finished or current.lease_owner != owner:
        return current
    stop = requested_stop(current)
    assert stop is not None
    handle = RecordHandle(store, current, owner=owner, lease_seconds=lease_seconds)
    return fail_request(handle, plan, clients, stop.failure, step=step_of(current), discriminator=stop.discriminator)
