"""One delivery of a request: parse it, claim it, lease its names, run its steps, decide.

1. **Parse.** A body the plan cannot parse is refused (:mod:`shared.engine.reject`): nothing is
   made anywhere.
2. **Claim** (:mod:`shared.engine.claim`): the row inserted or taken over under a short lease, or
   the reason this delivery does nothing (finished, not due, held, a conflicting body).
3. **Lease the names** the request creates or changes (:mod:`shared.engine.leases`): a second
   request for the same account waits for the first.
4. **Run the steps** (:mod:`shared.engine.stages`) under a heartbeat that keeps both leases short
   and alive; every create and destructive call behind a fence (:mod:`shared.engine.record`).
5. **Finish or decide** (:mod:`shared.engine.decide`): the plan's finish reads the end state;
   any failure goes through the one failure table, and a request that fails, fails through
   :func:`shared.engine.fail.fail_request`.

``checkpoint`` is the seam tests use to kill a delivery at a named point (after a write, before
the publish that follows it, and so on): a checkpoint that raises a ``BaseException`` stops the
delivery as a killed process would, with none of the engine's own error handling running.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.engine import decide
from shared.engine.claim import claim
from shared.engine.fail import step_of
from shared.engine.leases import Heartbeat, NameLeases
from shared.engine.outcome import Outcome, OutcomeKind
from shared.engine.record import RecordHandle, requested_stop
from shared.engine.reject import reject
from shared.engine.stages import run_stages
from shared.errors import RequestValidationError
from shared.logs import bind, get_logger
from shared.state import RequestStatus, StepOutcome, StepRecord
from shared.state.pace import background_work
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.engine.plan import Finish, Plan, WorkContext
    from shared.services import Services
    from shared.settings import PipelineConfig
    from shared.state import RequestRecord

logger = get_logger(__name__)

Checkpoint = Callable[[str], None]


def _no_checkpoint(_name: str) -> None:
    return None


def process_request(plan: Plan, body: bytes | str | Mapping[str, Any], clients: Services, config: PipelineConfig, *,
                    owner: str, message_id: str = "", retry_token: str = "", row_expected: bool = False,
                    checkpoint: Checkpoint | None = None, enqueued_at: dt.datetime | None = None) -> Outcome:
    """Run (or resume) one request.

    Parameters
    ----------
    body: the request as received.
    owner: who holds the lease while this runs (unique per delivery).
    message_id: the Service Bus message id (correlation, and the event id of an unreadable body).
    retry_token: the ``retryToken`` of a scheduled copy; a waiting request resumes early only on it.
    row_expected: the request's state row is known to exist (the product sent the message, or it
        is a redelivery): it is read first. Otherwise the claim tries to insert it, one round trip
        fewer for a ticket's first delivery.
    checkpoint: called at named points; tests raise from it to kill the delivery there.
    enqueued_at: when Service Bus enqueued the message (with ``message_id``, what an unreadable
        body's ``failed`` event and log line name the message by).

    Returns an :class:`Outcome`; raises only for an unexpected error (a defect), after recording
    it, so the host abandons the message and Service Bus redelivers it.
    """
    checkpoint = checkpoint or _no_checkpoint
    with bind(messageId=message_id or None):
        try:
            request = plan.parse(body, config)
        except RequestValidationError as exc:
            return reject(plan, body, exc, clients, message_id=message_id, checkpoint=checkpoint,
                          enqueued_at=enqueued_at)
        with bind(requestId=request.request_id), background_work(plan.background(request)):
            claimed = claim(plan, request, clients, config, owner=owner, retry_token=retry_token,
                            row_expected=row_expected)
            if isinstance(claimed, Outcome):
                return claimed
            return _Delivery(plan, request, claimed, clients, config, owner, checkpoint).run()


@dataclass
class _Delivery:
    """One delivery's work on the request it claimed."""

    plan: Plan
    request: Any
    claimed: RequestRecord
    clients: Services
    config: PipelineConfig
    owner: str
    checkpoint: Checkpoint

    def run(self) -> Outcome:
        leases = NameLeases(self.clients.state, self.request.request_id, self.plan.lease_names(self.request))
        handle = RecordHandle(self.clients.state, self.claimed, owner=self.owner,
                              lease_seconds=self.config.lease_seconds, names=leases)
        ctx = self.plan.context(self.request, self.clients, self.config, handle)
        ctx.checkpoint = self.checkpoint
        verdict = decide.Verdict(self.plan, ctx, leases, self.config)
        try:
            self.publish(handle, "claimed")
            stop = requested_stop(handle.record)
            if stop is not None:  # asked to fail while nobody held it, or while failing
                return verdict.fail(stop.failure, step=step_of(handle.record), discriminator=stop.discriminator)
            lease = dt.timedelta(seconds=self.config.lease_seconds)
            held = leases.acquire(utcnow() + lease)
        except Exception as exc:  # noqa: BLE001 - the state store failing: decided by the failure table
            return verdict.after(exc, "")
        if held is not None:
            return verdict.wait_for_name(held)

        def beat() -> bool:
            handle.renew()
            if leases.extend(utcnow() + lease):
                return True
            handle.abandon()
            return False

        failed_in: dict[int, str] = {}
        with Heartbeat(beat, interval=self.config.lease_seconds / 3, max_seconds=self.config.max_run_seconds):
            try:
                run_stages(self.plan, ctx, lambda point: self.publish(handle, point), failed_in)
                with bind(step=self.plan.finish.__name__.strip("_")):
                    finish = self.plan.finish(ctx)
                if finish.failure is not None:
                    return verdict.fail(finish.failure, step=finish.step, also=finish.events)
                return self.succeed(ctx, leases, finish)
            except Exception as exc:  # noqa: BLE001 - decided by the failure table
                return verdict.after(exc, failed_in.get(id(exc), ""))

    def succeed(self, ctx: WorkContext, leases: NameLeases, finish: Finish) -> Outcome:
        """Commit to success (nobody may ask it to stop from here on), record what success records
        elsewhere, then the final status with its events."""
        def commit(row: RequestRecord) -> None:
            stop = requested_stop(row)
            if stop is not None and not row.finishing:
                raise stop  # asked to fail meanwhile: it fails instead
            row.finishing = True

        def done(row: RequestRecord) -> None:
            commit(row)
            row.steps[finish.step] = StepRecord(StepOutcome.SUCCEEDED, iso(utcnow()), finish.detail)
            row.move_to(RequestStatus.SUCCEEDED)
            row.current_step = "done"
            row.stop = {}

        if finish.then is not None:
            ctx.handle.write(commit)
            finish.then()
        ctx.handle.write(done, events=finish.events, release=True)
        self.publish(ctx.handle, finish.step)
        leases.release()  # after the announcement: a request waiting for the names checks back later anyway
        logger.info("request %s: %s of account %s succeeded", ctx.request_id, self.plan.operation, ctx.account_name)
        return Outcome(OutcomeKind.SUCCEEDED, ctx.request_id, state=ctx.handle.record.to_public())

    def publish(self, handle: RecordHandle, point: str) -> None:
        """Send what the write at ``point`` recorded, with checkpoints after the write, after the
        send, and after the confirmation."""
        self.checkpoint(f"{point}.saved")
        handle.publish(self.clients.events, sent=lambda: self.checkpoint(f"{point}.sent"))
        self.checkpoint(f"{point}.published")
