"""Process one delivery of an onboarding request: claim it, run the steps, record and announce.

The runner owns the protocol every step relies on:

1. **Publish what is pending.** Every delivery first sends the events its row recorded but the
   topic never confirmed (a crash or an outage after the save), including deliveries of a
   finished, failed or conflicting request.
2. **Claim.** Insert the state row (the fast path: a ticket's first delivery tries the insert
   first; a message the product sent, or a redelivery, reads the row first) or take it over with
   an ETag-conditioned replace when its lease has lapsed; a live lease means another delivery
   works on it (busy), a waiting request resumes only on its scheduled copy or once due, a
   finished one is a no-op. The claim writes the plan's markers of every create the request may
   make (``Plan.markers``), so no step writes one of its own before its create.
3. **Lease the names** the request creates or changes (:mod:`shared.engine.leases`): a second
   request for the same account waits for the first. Meanwhile the plan's first lookup, which no
   lease covers, goes out (``Plan.prefetch``) and the claim's events are sent; nothing is made
   before they are out.
4. **Run the steps** under a heartbeat that keeps both leases short and alive; each step's result
   and events are saved in one write, then published (:mod:`shared.engine.record`). A step that
   only read has its result written with the next write; the last steps' results are written
   while the plan's finish reads them back (``Plan.finish_reads_first``).
5. **Decide** through the one failure table (:mod:`shared.engine.failures`): permanent failures
   are recorded and announced; transient ones pause the request within *its own* retry budget
   (kept in the row, whatever messages carry it); defects are redelivered, and a request that
   keeps hitting one ends ``failed`` with ``internal_error``.

``checkpoint`` is the seam tests use to kill a delivery at a named point (after a save, before the
publish that follows it, and so on): a checkpoint that raises a ``BaseException`` stops the delivery
as a killed process would, with none of the pipeline's own error handling running.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.concurrency import in_thread
from shared.engine.failures import Failure, FailureKind, classify
from shared.engine.leases import Heartbeat, Held, NameLeases
from shared.engine.outcome import Outcome, OutcomeKind
from shared.engine.plan import Finish, StepDone, build_document
from shared.engine.record import LeaseLostError, RecordHandle, flush_outbox
from shared.errors import RequestValidationError, StateStoreError
from shared.logs import bind, get_logger
from shared.state import ConcurrentUpdateError, OnboardingRecord, RequestStatus, StepOutcome, StepRecord
from shared.state.records import INVALID_FINGERPRINT_PREFIX, iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping
    from concurrent.futures import Future

    from shared.engine.plan import Branch, Plan, WorkContext
    from shared.services import Services
    from shared.settings import PipelineConfig
    from shared.state import StateStore

logger = get_logger(__name__)

Checkpoint = Callable[[str], None]

#: At most this many field errors travel in a ``failed`` event (all of them are in the HTTP answer).
MAX_EVENT_ERRORS = 20


def _no_checkpoint(_name: str) -> None:
    return None


@dataclass
class _Run:
    """One delivery's work on one claimed request."""

    plan: Plan
    ctx: WorkContext
    leases: NameLeases
    #: The claim's events being sent (None once waited for).
    announced: Future[None] | None = None


def process_request(
    plan: Plan,
    body: bytes | str | Mapping[str, Any],
    clients: Services,
    config: PipelineConfig,
    *,
    owner: str,
    message_id: str = "",
    retry_token: str = "",
    row_expected: bool = False,
    checkpoint: Checkpoint | None = None,
) -> Outcome:
    """Run (or resume) one onboarding request.

    Parameters
    ----------
    body: the request as received (schema v1).
    owner: who holds the lease while this runs (unique per delivery).
    message_id: the Service Bus message id (correlation, and the event id of an unreadable body).
    retry_token: the ``retryToken`` of a scheduled copy; a waiting request resumes early only on it.
    row_expected: the request's state row is known to exist (the product sent the message, or it
        is a redelivery): it is read first. Otherwise the claim tries to insert it, one round trip
        fewer for a ticket's first delivery.
    checkpoint: called at named points; tests raise from it to kill the delivery there.

    Returns an :class:`Outcome`; raises only for an unexpected error (a defect), after recording
    it, so the host abandons the message and Service Bus redelivers it.
    """
    delivery = _Delivery(clients, config, owner=owner, message_id=message_id, retry_token=retry_token,
                         row_expected=row_expected, checkpoint=checkpoint or _no_checkpoint)
    with bind(messageId=message_id or None):
        return delivery.run(plan, body)


class _Delivery:
    def __init__(self, clients: Services, config: PipelineConfig, *, owner: str, message_id: str,
                 retry_token: str, row_expected: bool, checkpoint: Checkpoint) -> None:
        self.clients = clients
        self.row_expected = row_expected
        self.config = config
        self.owner = owner
        self.message_id = message_id
        self.retry_token = retry_token
        self.checkpoint = checkpoint
        self.lease = dt.timedelta(seconds=config.lease_seconds)
        #: The plan's markers this delivery's claim wrote (none were in the row before).
        self.fresh_markers: frozenset[str] = frozenset()

    @property
    def state(self) -> StateStore:
        return self.clients.state

    # -- entry ------------------------------------------------------------------------------------

    def run(self, plan: Plan, body: bytes | str | Mapping[str, Any]) -> Outcome:
        try:
            request = plan.parse(body, self.config)
        except RequestValidationError as exc:
            return self._reject(plan, body, exc)
        with bind(requestId=request.request_id):
            return self._work(plan, request)

    def _work(self, plan: Plan, request: Any) -> Outcome:
        fingerprint = plan.fingerprint(request)
        queued = plan.queued(request)
        record = self.state.get(request.request_id) if self.row_expected else None
        if record is None:
            new = OnboardingRecord(request_id=request.request_id, account_name=request.account_name,
                                   fingerprint=fingerprint, request=queued, current_step="queued")
            self._claim_into(new, plan, request)
            try:
                created = self.state.create(new)
            except ConcurrentUpdateError:
                record = self.state.get(request.request_id)
                if record is None:
                    raise StateStoreError(f"The state of request {request.request_id} vanished.") from None
            else:
                return self._run(plan, request, created)
        return self._resume(plan, request, record, fingerprint, queued)

    def _claim_into(self, record: OnboardingRecord, plan: Plan, request: Any) -> None:
        record.move_to(RequestStatus.RUNNING)
        record.lease_owner = self.owner
        record.lease_expires_at = iso(utcnow() + self.lease)
        record.due_at = record.retry_token = ""
        if plan.markers is not None:
            fresh = {key: value for key, value in plan.markers(request).items() if key not in record.results}
            record.results.update(fresh)
            self.fresh_markers = frozenset(fresh)
        if plan.started_event is not None:
            record.record_event(plan.started_event(request))

    def _resume(self, plan: Plan, request: Any, record: OnboardingRecord, fingerprint: str,
                queued: str) -> Outcome:
        record = flush_outbox(self.state, self.clients.events, record)
        if record.fingerprint != fingerprint:
            if not record.rejected:
                return self._conflict(plan, request, record, fingerprint)
            # A corrected resend of a ticket whose first body was invalid: it starts afresh.
            record = record.fresh(account_name=request.account_name, fingerprint=fingerprint, request=queued)
        if record.status.finished:
            return Outcome(OutcomeKind.DUPLICATE, request.request_id, record.error_reason,
                           f"Request {request.request_id} already {record.status.value}; nothing to do.",
                           state=record.to_public())
        now = utcnow()
        if not record.due(now) and self.retry_token != record.retry_token:
            return Outcome(OutcomeKind.NOT_DUE, request.request_id, "waiting",
                           f"Request {request.request_id} resumes at {record.due_at} on its scheduled copy.",
                           state=record.to_public())
        if record.lease_active(now) and record.lease_owner != self.owner:
            expires = parse_iso(record.lease_expires_at) or now
            return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress",
                           f"Request {request.request_id} is being processed by another delivery.",
                           retry_in_seconds=max((expires - now).total_seconds(), 0) + 1, state=record.to_public())
        claimed = record.copy()
        self._claim_into(claimed, plan, request)
        try:
            record = self.state.replace(claimed)
        except ConcurrentUpdateError:
            return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress",
                           f"Request {request.request_id} was claimed by another delivery.",
                           retry_in_seconds=self.config.busy_delay_seconds)
        return self._run(plan, request, record)

    # -- the run ----------------------------------------------------------------------------------

    def _run(self, plan: Plan, request: Any, record: OnboardingRecord) -> Outcome:
        handle = RecordHandle(self.state, record, owner=self.owner, lease_seconds=self.config.lease_seconds)
        ctx = plan.context(request, self.clients, self.config, handle)
        ctx.checkpoint = self.checkpoint
        ctx.fresh_markers = self.fresh_markers
        run = _Run(plan, ctx, NameLeases(self.state, request.request_id, plan.lease_names(request),
                                         is_finished=self._is_finished))
        # The names are leased, the plan's first lookup goes out and the claim's events are sent,
        # all at once; the first stage that may make something waits for the events (_announced).
        try:
            leased = run.leases.begin(utcnow() + self.lease)
            if plan.prefetch is not None:
                plan.prefetch(ctx)
            run.announced = in_thread(lambda: self._publish(handle, "claimed"), name="onboarding-announce")
            held = leased()
        except Exception as exc:  # noqa: BLE001 - the state store failing: decided by the failure table
            return self._failure(exc, run, "")
        if held is not None:
            try:
                self._announced(run)
            except Exception as exc:  # noqa: BLE001 - decided by the failure table
                return self._failure(exc, run, "")
            return self._wait_for_name(run, held)

        def beat() -> bool:
            handle.renew()
            if run.leases.extend(utcnow() + self.lease):
                return True
            handle.abandon()
            return False

        failed_in: dict[int, str] = {}
        error: Exception | None = None
        finish = Finish()
        with Heartbeat(beat, interval=self.config.lease_seconds / 3, max_seconds=self.config.max_run_seconds):
            try:
                self._stages(run, failed_in)
                if not plan.finish_reads_first:
                    handle.settle()
                with bind(step=plan.finish.__name__.strip("_")):
                    finish = plan.finish(ctx)
            except Exception as exc:  # noqa: BLE001 - decided below by the failure table
                error = exc
        if error is not None:
            return self._failure(error, run, failed_in.get(id(error), ""))
        return self._finish(run, finish)

    def _stages(self, run: _Run, failed_in: dict[int, str]) -> None:
        handle = run.ctx.handle
        last_stage = len(run.plan.stages) - 1

        def run_steps(branch: Branch, behind: bool) -> None:
            for index, (name, step) in enumerate(branch):
                if handle.record.step_done(name):
                    continue
                with bind(step=name):
                    logger.info("request %s: step %s", run.ctx.request_id, name)
                    try:
                        done = step(run.ctx)
                    except Exception as exc:
                        failed_in.setdefault(id(exc), name)
                        raise
                    self._record_step(handle, name, done, behind=behind and index == len(branch) - 1)

        for number, stage in enumerate(run.plan.stages):
            if number > 0:
                self._announced(run)  # nothing is made before the claim's events are out
            behind = number == last_stage and run.plan.finish_reads_first
            first, *others = stage
            if not others:
                run_steps(first, behind)
                continue
            futures = [in_thread(functools.partial(run_steps, branch, behind), name="onboarding-branch")
                       for branch in others]
            first_error: BaseException | None = None
            try:
                run_steps(first, behind)
            except Exception as exc:  # noqa: BLE001 - wait for the other branches, then decide
                first_error = exc
            errors = [first_error, *(future.exception() for future in futures)]
            _raise_first(*errors)
        self._announced(run)

    @staticmethod
    def _announced(run: _Run) -> None:
        """Wait for the claim's events to be sent (a crash there is raised here)."""
        announced, run.announced = run.announced, None
        if announced is not None:
            announced.result()

    def _record_step(self, handle: RecordHandle, name: str, done: StepDone, *, behind: bool) -> None:
        """Write a step's result and events, then publish them: at once; with the next write (a
        step that only read); or behind the finish's reads (a branch's last step)."""
        if done.deferred and not done.events:
            handle.stage(_recorder(name, done))
            self.checkpoint(f"{name}.saved")  # as good as written: a crash here runs the step again
            self.checkpoint(f"{name}.published")
        elif behind:
            handle.save_behind(_recorder(name, done), events=done.events, then=lambda: self._publish(handle, name))
        else:
            handle.save(_recorder(name, done), events=done.events, settle=False)
            self._publish(handle, name)

    def _publish(self, handle: RecordHandle, point: str) -> None:
        """Send what ``point`` recorded, with checkpoints after the save, after the send, and after
        the write that confirms it."""
        self.checkpoint(f"{point}.saved")
        handle.publish_pending(self.clients.events, sent=lambda: self.checkpoint(f"{point}.sent"))
        self.checkpoint(f"{point}.published")

    def _finish(self, run: _Run, finish: Finish) -> Outcome:
        ctx = run.ctx
        if finish.failure is not None:
            return self._fail(run, finish.step, finish.failure, also=list(finish.events))

        def done(r: OnboardingRecord) -> None:
            r.steps[finish.step] = StepRecord(StepOutcome.SUCCEEDED, iso(utcnow()), finish.detail)
            r.move_to(RequestStatus.SUCCEEDED)
            r.current_step = "done"
            r.release_lease()
        ctx.handle.save(done, keep_lease=False, events=finish.events)
        self._publish(ctx.handle, finish.step)
        run.leases.release()  # after the announcement: a request waiting for the names checks back later anyway
        logger.info("request %s: %s of account %s succeeded", ctx.request_id, run.plan.operation, ctx.account_name)
        return Outcome(OutcomeKind.SUCCEEDED, ctx.request_id, state=ctx.handle.record.to_public())

    # -- failures ---------------------------------------------------------------------------------

    def _failure(self, exc: Exception, run: _Run, failed_step: str) -> Outcome:
        from shared.errors import PermanentStepError

        ctx = run.ctx
        handle = ctx.handle
        try:
            self._announced(run)
            handle.settle()  # what the finish had not written yet: writing it may find the row lost
        except LeaseLostError as lost:
            exc = lost
        except Exception:  # what it held is still owed: it goes with the failure's own write
            logger.warning("request %s: could not send or write what was owed before the failure", ctx.request_id,
                           exc_info=True)
        failure = classify(exc)
        step = exc.step if isinstance(exc, PermanentStepError) else failed_step or handle.record.current_step
        if failure.kind is FailureKind.BUSY:
            # Another delivery took the request over: it carries on, with the request's leases.
            return Outcome(OutcomeKind.BUSY, ctx.request_id, failure.reason, failure.message)
        if failure.kind is FailureKind.PERMANENT:
            return self._fail(run, step, failure, error=exc)
        if failure.kind is FailureKind.TRANSIENT:
            attempts = handle.record.attempts
            if attempts >= len(self.config.retry_delays_seconds):
                return self._fail(run, step, Failure(
                    FailureKind.PERMANENT, "dependency_unavailable",
                    f"Gave up after {attempts + 1} attempts: {failure.message}"))
            return self._pause(run, self.config.retry_delays_seconds[attempts], failure)
        # A defect: count it; redeliver (the host abandons the message) until the budget is spent.
        defects = handle.record.defects + 1
        logger.error("request %s: unexpected error in step %s (%d of %d)", ctx.request_id, step or "?",
                     defects, self.config.max_defects, exc_info=exc)
        if defects >= self.config.max_defects:
            return self._fail(run, step, Failure(
                FailureKind.PERMANENT, "internal_error",
                f"The onboarding hit an unexpected error {defects} times ({type(exc).__name__}); it was "
                "stopped. Nothing it made was left half-made; report it with the requestId."))

        def count(r: OnboardingRecord) -> None:
            r.defects = defects
            r.release_lease()
        try:
            handle.save(count, keep_lease=False)
        except Exception:
            logger.warning("request %s: could not record the error", ctx.request_id, exc_info=True)
        raise exc

    def _fail(self, run: _Run, step: str, failure: Failure, *, error: Exception | None = None,
              also: list[dict[str, Any]] | None = None) -> Outcome:
        from shared.errors import PermanentStepError

        ctx = run.ctx
        details: dict[str, Any] = {}
        cleanup: list[dict[str, str]] = []
        if isinstance(error, PermanentStepError):
            if error.field:
                details["field"] = error.field
            if error.removed:
                details["removed"] = error.removed
            if error.cleanup:
                details["left"] = [" ".join(f"{k}={v}" for k, v in item.items()) for item in error.cleanup]
            cleanup = error.cleanup
        event = ctx.event(run.plan.failed_event, step or "unknown", "failed", reason=failure.reason,
                          message=failure.message, palette=ctx.palette_uids(), **details)
        if run.plan.failed is not None:
            try:
                run.plan.failed(ctx, failure)
            except Exception:
                logger.warning("request %s: could not record the failure elsewhere", ctx.request_id, exc_info=True)

        def apply(r: OnboardingRecord) -> None:
            if step:
                r.steps[step] = StepRecord(StepOutcome.FAILED, iso(utcnow()), failure.reason)
            r.move_to(RequestStatus.FAILED)
            r.error_reason = failure.reason
            r.error_message = failure.message
            r.cleanup.extend(cleanup)
            r.due_at = r.retry_token = ""
            r.release_lease()
        ctx.handle.save(apply, keep_lease=False, events=[*(also or []), event])
        run.leases.release()
        self._publish(ctx.handle, "failed")
        logger.warning("request %s: failed at %s (%s): %s", ctx.request_id, step, failure.reason, failure.message)
        return Outcome(OutcomeKind.FAILED, ctx.request_id, failure.reason, failure.message,
                       state=ctx.handle.record.to_public())

    def _pause(self, run: _Run, delay: float, failure: Failure) -> Outcome:
        """Wait ``delay`` seconds for a dependency, keeping the request's names meanwhile."""
        ctx = run.ctx
        token = uuid.uuid4().hex
        due = utcnow() + dt.timedelta(seconds=delay)

        def apply(r: OnboardingRecord) -> None:
            r.move_to(RequestStatus.WAITING)
            r.attempts += 1
            r.due_at = iso(due)
            r.retry_token = token
            r.release_lease()
        ctx.handle.save(apply, keep_lease=False)
        run.leases.extend(due + self.lease)
        logger.warning("request %s: %s (%s); resuming in %.0f s", ctx.request_id, failure.reason,
                       failure.message, delay)
        return Outcome(OutcomeKind.RETRY_LATER, ctx.request_id, failure.reason,
                       f"A dependency is unavailable; the request resumes in {delay:.0f} s.",
                       retry_in_seconds=delay, retry_token=token, state=ctx.handle.record.to_public())

    def _wait_for_name(self, run: _Run, held: Held) -> Outcome:
        """Another request holds one of this request's names: check back when its lease ends."""
        ctx = run.ctx
        now = utcnow()
        delay = max((held.until - now).total_seconds(), 0.0) + 1
        token = uuid.uuid4().hex
        due = now + dt.timedelta(seconds=delay)

        def apply(r: OnboardingRecord) -> None:
            r.move_to(RequestStatus.WAITING)
            r.due_at = iso(due)
            r.retry_token = token
            r.release_lease()
        ctx.handle.save(apply, keep_lease=False)
        run.leases.extend(due + self.lease)
        what = held.key.partition(":")[0]
        message = (f"The {what} '{held.key.rpartition(':')[2]}' is being worked on by request {held.owner}; "
                   f"this request checks back in {delay:.0f} s.")
        logger.info("request %s: %s", ctx.request_id, message)
        return Outcome(OutcomeKind.BUSY, ctx.request_id, f"{what}_busy", message, retry_in_seconds=delay,
                       retry_token=token, state=ctx.handle.record.to_public())

    def _is_finished(self, request_id: str) -> bool:
        record = self.state.get(request_id)
        return record is None or record.status.finished

    # -- requests that cannot run -------------------------------------------------------------------

    def _conflict(self, plan: Plan, request: Any, record: OnboardingRecord, fingerprint: str) -> Outcome:
        """The requestId was used with another body: the row (another request's) is left alone and
        the ticket hears why. The event id is this body's, so a redelivery does not repeat it."""
        message = (f"Request {request.request_id} was already submitted with a different body; use a new "
                   "requestId for a new request.")
        self._announce(build_document(request.request_id, request.account_name, plan.failed_event, "check",
                                      "failed", discriminator=f"conflict:{fingerprint[:16]}",
                                      reason="request_id_conflict", message=message))
        logger.warning("request %s: conflicting resubmission refused", request.request_id)
        return Outcome(OutcomeKind.CONFLICT, request.request_id, "request_id_conflict", message,
                       state=record.to_public())

    def _announce(self, document: dict[str, Any]) -> None:
        """Publish an event that belongs to no row of its own. A failure raises, so the message is
        redelivered and the event (same id) sent then: nothing else records it."""
        from azure.core.messaging import CloudEvent

        self.clients.events.publish(CloudEvent.from_dict(document))

    def _reject(self, plan: Plan, body: bytes | str | Mapping[str, Any], exc: RequestValidationError) -> Outcome:
        """An invalid request: nothing is created anywhere. Recorded (when it names a usable
        requestId) and announced, so the ticket hears why; a corrected body may replace it."""
        from shared.models import identity_of

        request_id, account_name = identity_of(body)
        errors = [e.as_dict() for e in exc.errors]
        message = str(exc)
        digest = _digest(body)
        data: dict[str, Any] = {"reason": "invalid_request", "message": message,
                                "errors": errors[:MAX_EVENT_ERRORS]}
        if len(errors) > MAX_EVENT_ERRORS:
            data["moreErrors"] = len(errors) - MAX_EVENT_ERRORS
        kind = OutcomeKind.REJECTED
        with bind(requestId=request_id):
            if request_id is None:
                # Nothing to record it under: the event id is this message's own, so a second
                # bad message is not taken for a duplicate of the first.
                self._announce(build_document("unknown", account_name or "unknown", plan.failed_event, "check",
                                              "failed", discriminator=f"invalid:{self.message_id}:{digest}", **data))
            else:
                event = build_document(request_id, account_name or "unknown", plan.failed_event, "check", "failed",
                                       discriminator=f"invalid:{digest}", **data)
                if not self._record_rejection(request_id, account_name or "", f"{INVALID_FINGERPRINT_PREFIX}{digest}",
                                              event, message):
                    kind = OutcomeKind.DUPLICATE
            logger.warning("request %s rejected: %s", request_id or "(no valid requestId)", message)
        return Outcome(kind, request_id or "", "invalid_request", message, errors=errors)

    def _record_rejection(self, request_id: str, account_name: str, fingerprint: str, event: dict[str, Any],
                          message: str) -> bool:
        """Record the rejection in the row of a ticket never started (creating or replacing it) and
        send its event; for a ticket that runs under a valid body, only announce it. False when
        this very body was recorded before (a redelivery)."""

        def rejected(base: OnboardingRecord | None) -> OnboardingRecord:
            record = (base.fresh(account_name=account_name, fingerprint=fingerprint, request="") if base
                      else OnboardingRecord(request_id=request_id, account_name=account_name, fingerprint=fingerprint))
            record.status = RequestStatus.FAILED
            record.current_step = "check"
            record.steps["check"] = StepRecord(StepOutcome.FAILED, iso(utcnow()), "invalid_request")
            record.error_reason, record.error_message = "invalid_request", message
            record.record_event(event)
            return record

        record = self.state.get(request_id)
        new = True
        if record is None:
            try:
                record = self.state.create(rejected(None))
            except ConcurrentUpdateError:
                record = self.state.get(request_id)
            else:
                self.checkpoint("rejected.saved")
                flush_outbox(self.state, self.clients.events, record)
                return True
        for _ in range(5):
            if record is None:
                raise StateStoreError(f"The state of request {request_id} vanished.")
            if not record.rejected:
                self._announce(event)  # a valid ticket's row: leave it alone
                return True
            if record.fingerprint == fingerprint:
                new = False  # this body again: only what is still unsent goes out
                break
            try:
                record = self.state.replace(rejected(record))  # another invalid body, never started
                break
            except ConcurrentUpdateError:
                record = self.state.get(request_id)
        self.checkpoint("rejected.saved")
        if record is not None:
            flush_outbox(self.state, self.clients.events, record)
        return new


def _recorder(name: str, done: StepDone) -> Callable[[OnboardingRecord], None]:
    def apply(record: OnboardingRecord) -> None:
        record.steps[name] = StepRecord(done.outcome, iso(utcnow()), done.detail)
        record.results.update(done.results)
        record.current_step = name
    return apply


def _raise_first(*errors: BaseException | None) -> None:
    """Crashes first (nothing may handle them), then permanent failures over transient ones: the
    message a person reads should be the one that needs them."""
    present = [e for e in errors if e is not None]
    if not present:
        return
    order = {FailureKind.PERMANENT: 1, FailureKind.BUSY: 2, FailureKind.TRANSIENT: 3, FailureKind.DEFECT: 4}
    present.sort(key=lambda e: 0 if not isinstance(e, Exception) else order[classify(e).kind])
    raise present[0]


def _digest(body: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
    elif isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    else:
        raw = json.dumps(body, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
