"""What a delivery does when it cannot carry on, decided once through the failure table
(:mod:`shared.engine.failures`):

* **busy**: another delivery took the request over: it carries on; this one does nothing more;
* **stop requested** or **permanent**: the request fails (:func:`shared.engine.fail.fail_request`);
* **transient**: the request waits (30 s, 1, 2, 5, 10, 15 min) within *its own* retry budget,
  kept in its row whatever message carries it, and fails once the budget is spent;
* **defect**: redelivered (the host abandons the message) until the request has hit one
  ``max_defects`` times, then it fails with ``internal_error``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.engine.fail import fail_request
from shared.engine.failures import Failure, FailureKind, classify
from shared.engine.outcome import Outcome, OutcomeKind
from shared.engine.record import LeaseLostError, StopRequested
from shared.errors import PermanentStepError
from shared.logs import get_logger
from shared.state import RequestStatus
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from shared.engine.leases import Held, NameLeases
    from shared.engine.plan import Plan, WorkContext
    from shared.engine.record import RecordHandle
    from shared.settings import PipelineConfig
    from shared.state import RequestRecord

logger = get_logger(__name__)


@dataclass
class Verdict:
    plan: Plan
    ctx: WorkContext
    leases: NameLeases
    config: PipelineConfig

    @property
    def handle(self) -> RecordHandle:
        return self.ctx.handle

    def after(self, exc: Exception, failed_step: str) -> Outcome:
        """Decide what ``exc``, raised at ``failed_step``, means for the request."""
        request_id = self.ctx.request_id
        if isinstance(exc, StopRequested):
            return self.fail(exc.failure, step=failed_step or self.handle.record.current_step,
                             discriminator=exc.discriminator)
        failure = classify(exc)
        step = exc.step if isinstance(exc, PermanentStepError) else failed_step or self.handle.record.current_step
        if failure.kind is FailureKind.BUSY:
            return Outcome(OutcomeKind.BUSY, request_id, failure.reason, failure.message)
        if failure.kind is FailureKind.PERMANENT:
            details = {"field": exc.field} if isinstance(exc, PermanentStepError) and exc.field else {}
            return self.fail(failure, step=step, details=details)
        if failure.kind is FailureKind.TRANSIENT:
            attempts = self.handle.record.attempts
            if attempts >= len(self.config.retry_delays_seconds):
                return self.fail(Failure(FailureKind.PERMANENT, "dependency_unavailable",
                                         f"Gave up after {attempts + 1} attempts: {failure.message}"), step=step)
            return self.pause(self.config.retry_delays_seconds[attempts], failure)
        return self.defect(exc, step)

    def fail(self, failure: Failure, *, step: str, discriminator: str = "", also: Sequence[dict[str, Any]] = (),
             details: dict[str, Any] | None = None) -> Outcome:
        request_id = self.ctx.request_id
        try:
            record = fail_request(self.handle, self.plan, self.ctx.clients, failure, step=step,
                                  discriminator=discriminator, also=also, details=details,
                                  checkpoint=self.ctx.checkpoint)
        except LeaseLostError as lost:
            return Outcome(OutcomeKind.BUSY, request_id, "in_progress", str(lost))
        self.leases.release()
        return Outcome(OutcomeKind.FAILED, request_id, failure.reason, record.error_message, state=record.to_public())

    def defect(self, exc: Exception, step: str) -> Outcome:
        """A bug: count it in the row; redeliver until the budget is spent, then fail."""
        request_id = self.ctx.request_id
        defects = self.handle.record.defects + 1
        logger.error("request %s: unexpected error in step %s (%d of %d)", request_id, step or "?", defects,
                     self.config.max_defects, exc_info=exc)
        if defects >= self.config.max_defects:
            return self.fail(Failure(
                FailureKind.PERMANENT, "internal_error",
                f"The request hit an unexpected error {defects} times ({type(exc).__name__}); it was stopped and "
                "what it made was taken back. Report it with the requestId."), step=step)

        def count(row: RequestRecord) -> None:
            row.defects = defects
        try:
            self.handle.write(count, release=True)
        except Exception:
            logger.warning("request %s: could not record the error", request_id, exc_info=True)
        raise exc

    def pause(self, delay: float, failure: Failure) -> Outcome:
        """Wait ``delay`` seconds for a dependency, keeping the request's names meanwhile."""
        token = uuid.uuid4().hex
        due = utcnow() + dt.timedelta(seconds=delay)

        def waiting(row: RequestRecord) -> None:
            row.move_to(RequestStatus.WAITING)
            row.attempts += 1
            row.due_at, row.retry_token = iso(due), token
        logger.warning("request %s: %s (%s)", self.ctx.request_id, failure.reason, failure.message)
        return self._wait(waiting, due, OutcomeKind.RETRY_LATER, failure.reason,
                          f"A dependency is unavailable; the request resumes in {delay:.0f} s.", delay, token)

    def wait_for_name(self, held: Held) -> Outcome:
        """Another request holds one of this request's names: check back when its lease ends."""
        now = utcnow()
        delay = max((held.until - now).total_seconds(), 0.0) + 1
        token = uuid.uuid4().hex
        due = now + dt.timedelta(seconds=delay)

        def waiting(row: RequestRecord) -> None:
            row.move_to(RequestStatus.WAITING)
            row.due_at, row.retry_token = iso(due), token
        what = held.key.partition(":")[0]
        message = (f"The {what} '{held.key.rpartition(':')[2]}' is being worked on by request {held.owner}; "
                   f"this request checks back in {delay:.0f} s.")
        return self._wait(waiting, due, OutcomeKind.BUSY, f"{what}_busy", message, delay, token)

    def _wait(self, waiting: Callable[[RequestRecord], None], due: dt.datetime, kind: OutcomeKind, reason: str,
              message: str, delay: float, token: str) -> Outcome:
        request_id = self.ctx.request_id
        try:
            self.handle.write(waiting, release=True)
        except LeaseLostError as lost:
            return Outcome(OutcomeKind.BUSY, request_id, "in_progress", str(lost))
        self.leases.extend(due + dt.timedelta(seconds=self.config.lease_seconds))
        logger.info("request %s: %s; resuming in %.0f s", request_id, message, delay)
        return Outcome(kind, request_id, reason, message, retry_in_seconds=delay, retry_token=token,
                       state=self.handle.record.to_public())
