"""Process one delivery of an onboarding request: claim it, run the steps, record and announce.

The ordering follows the idempotency protocol of the house style: insert the state row first
(the fast path), read it only on conflict; take over a row whose lease has expired with an
ETag-conditioned replace; a finished request is a no-op that re-emits nothing; a failure of a step
releases the lease so a redelivery starts at once, and storage failures are never passed off as
step failures.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.errors import (
    PermanentStepError,
    RequestValidationError,
    StateStoreError,
    StepInProgressError,
    TransientDependencyError,
)
from shared.pipeline import steps
from shared.pipeline.handle import RecordHandle
from shared.pipeline.outcome import Outcome, OutcomeKind
from shared.state import ConcurrentUpdateError, OnboardingRecord, RequestStatus, StepOutcome, StepRecord
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.clients.events import EventPublisher
    from shared.clients.graph import GraphClient
    from shared.clients.keyvault import SecretStore
    from shared.clients.palette import PaletteClient
    from shared.models import OnboardingRequest
    from shared.settings import PipelineConfig
    from shared.state import StateStore

logger = logging.getLogger(__name__)

StepHook = Callable[[str], None]


@dataclass
class OnboardingClients:
    """The services one onboarding talks to; built once per worker by the trigger."""

    palette: PaletteClient
    graph: GraphClient | None
    secrets: SecretStore
    events: EventPublisher
    state: StateStore


def _classify(exc: BaseException) -> str | None:
    """``permanent``, ``transient``, or None for an unexpected error (a bug or a crash)."""
    if isinstance(exc, PermanentStepError):
        return "permanent"
    if isinstance(exc, StepInProgressError):
        return "busy"
    if isinstance(exc, (TransientDependencyError, StateStoreError, ServiceRequestError, ServiceResponseError)):
        return "transient"
    if isinstance(exc, ClientAuthenticationError):
        # Our own credentials (Palette API key, managed identity) failing is an operator problem
        # that a fix and a later retry can cure; do not fail every request for good over it.
        return "transient"
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        return "transient" if status == 429 or status >= 500 else "permanent"
    return None


def _failure_message(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, PermanentStepError):
        return exc.reason, str(exc)
    if isinstance(exc, HttpResponseError):
        return "dependency_rejected", f"A service refused a call ({exc.status_code}): {exc.message}"
    return "dependency_unavailable", str(exc) or type(exc).__name__


def process_request(
    body: bytes | str | Mapping[str, Any],
    clients: OnboardingClients,
    config: PipelineConfig,
    *,
    owner: str,
    attempt: int = 0,
    after_step: StepHook | None = None,
) -> Outcome:
    """Run (or resume) one onboarding request.

    Parameters
    ----------
    body: the request as received (schema v1).
    owner: who holds the lease while this runs (the invocation or message id).
    attempt: how many delayed retries came before this delivery (from the message).
    after_step: called with each step's name once it is recorded; tests use it to inject crashes.

    Returns an :class:`Outcome`; raises only for unexpected errors (after releasing the lease), so
    the host abandons the message and Service Bus redelivers it.
    """
    from shared.models import parse_request, request_fingerprint

    try:
        request = parse_request(body, require_pcg_for_us_government=config.require_pcg_for_us_government)
    except RequestValidationError as exc:
        return _reject(body, exc, clients)

    fingerprint = request_fingerprint(request)
    now = utcnow()
    record = clients.state.get(request.request_id)
    if record is None:
        record = OnboardingRecord(request_id=request.request_id, account_name=request.account_name,
                                  fingerprint=fingerprint, lease_owner=owner,
                                  lease_expires_at=iso(now + dt.timedelta(seconds=config.lease_seconds)),
                                  attempts=attempt)
        try:
            record = clients.state.create(record)
        except ConcurrentUpdateError:
            record = clients.state.get(request.request_id)
            if record is None:
                raise StateStoreError(f"The state of request {request.request_id} vanished.") from None
            return _claim_existing(request, record, fingerprint, clients, config, owner, attempt, after_step)
        return _run(request, record, clients, config, owner, attempt, after_step)
    return _claim_existing(request, record, fingerprint, clients, config, owner, attempt, after_step)


def _claim_existing(request: OnboardingRequest, record: OnboardingRecord, fingerprint: str,
                    clients: OnboardingClients, config: PipelineConfig, owner: str, attempt: int,
                    after_step: StepHook | None) -> Outcome:
    if record.fingerprint != fingerprint:
        message = (f"Request {request.request_id} was already submitted with a different body; use a new "
                   "requestId for a new request.")
        logger.warning("request %s: conflicting resubmission ignored", request.request_id)
        return Outcome(OutcomeKind.CONFLICT, request.request_id, "request_id_conflict", message,
                       state=record.to_public())
    if record.status.finished:
        return Outcome(OutcomeKind.DUPLICATE, request.request_id, record.error_reason,
                       f"Request {request.request_id} already {record.status.value}; nothing to do.",
                       state=record.to_public())
    now = utcnow()
    if record.lease_active(now) and record.lease_owner != owner:
        return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress",
                       f"Request {request.request_id} is being processed by another delivery.",
                       retry_in_seconds=config.busy_delay_seconds, state=record.to_public())
    record.lease_owner = owner
    record.lease_expires_at = iso(now + dt.timedelta(seconds=config.lease_seconds))
    record.status = RequestStatus.RUNNING
    record.attempts = max(record.attempts, attempt)
    try:
        record = clients.state.replace(record)
    except ConcurrentUpdateError:
        return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress",
                       f"Request {request.request_id} was claimed by another delivery.",
                       retry_in_seconds=config.busy_delay_seconds)
    return _run(request, record, clients, config, owner, attempt, after_step)


def _run(request: OnboardingRequest, record: OnboardingRecord, clients: OnboardingClients,
         config: PipelineConfig, owner: str, attempt: int, after_step: StepHook | None) -> Outcome:
    handle = RecordHandle(clients.state, record, owner=owner, lease_seconds=config.lease_seconds)
    ctx = steps.StepContext(request=request, clients=clients, config=config, handle=handle)
    ctx.emit("requested", "requested", "accepted", cloud=request.azure.cloud, scope=request.palette.scope)
    failed_in: dict[int, str] = {}  # id of an error raised by a step -> that step's name

    def run_steps(names: list[tuple[str, Callable[[steps.StepContext], object]]]) -> None:
        for name, step in names:
            if handle.record.step_done(name):
                continue
            logger.info("request %s: step %s", request.request_id, name)
            try:
                step(ctx)
            except BaseException as exc:
                failed_in.setdefault(id(exc), name)
                raise
            if after_step is not None:
                after_step(name)

    try:
        run_steps([("check", steps.check)])
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onboarding-keys") as pool:
            keys = pool.submit(run_steps, [("sshkey", steps.sshkey), ("apikey", steps.apikey)])
            account_error: BaseException | None = None
            try:
                run_steps([("secret", steps.secret), ("validate", steps.validate),
                           ("register", steps.register)])
            except Exception as exc:  # noqa: BLE001 - wait for the other branch, then decide
                account_error = exc
            key_error = keys.exception()
        _raise_first(account_error, key_error)
        checks = steps.verify(ctx)
        if after_step is not None:
            after_step("verify")
    except Exception as exc:  # noqa: BLE001 - classified below; unexpected errors are re-raised
        return _handle_failure(exc, ctx, request, handle, config, attempt, failed_in.get(id(exc)))

    all_ok = all(check["ok"] for check in checks)
    ctx.emit("validated", "verify", "passed" if all_ok else "failed", checks=checks,
             palette=ctx.palette_uids())
    if not all_ok:
        failed = ", ".join(c["check"] for c in checks if not c["ok"])
        return _fail(ctx, handle, "verify", "verification_failed",
                     f"Onboarding finished but these checks failed: {failed}.")

    def finish(r: OnboardingRecord) -> None:
        r.steps["verify"] = StepRecord(StepOutcome.SUCCEEDED, iso(utcnow()), "all checks passed")
        r.status = RequestStatus.SUCCEEDED
        r.current_step = "done"
        r.lease_owner = r.lease_expires_at = ""
    handle.save(finish, keep_lease=False)
    logger.info("request %s: onboarded account %s", request.request_id, request.account_name)
    return Outcome(OutcomeKind.SUCCEEDED, request.request_id, state=handle.record.to_public())


def _raise_first(*errors: BaseException | None) -> None:
    """Permanent failures win over transient ones, which win over crashes: the message a person
    reads should be the one that needs them."""
    present = [e for e in errors if e is not None]
    if not present:
        return
    present.sort(key=lambda e: {"permanent": 0, "busy": 1, "transient": 2}.get(_classify(e) or "", 3))
    raise present[0]


def _handle_failure(exc: BaseException, ctx: steps.StepContext, request: OnboardingRequest,
                    handle: RecordHandle, config: PipelineConfig, attempt: int,
                    failed_step: str | None = None) -> Outcome:
    kind = _classify(exc)
    failed_step = failed_step or handle.record.current_step
    if kind == "busy":
        return Outcome(OutcomeKind.BUSY, request.request_id, "in_progress", str(exc),
                       retry_in_seconds=config.busy_delay_seconds)
    if kind == "permanent":
        reason, message = _failure_message(exc)
        step = exc.step if isinstance(exc, PermanentStepError) else failed_step
        return _fail(ctx, handle, step, reason, message)
    if kind == "transient":
        if attempt >= len(config.retry_delays_seconds):
            reason, message = _failure_message(exc)
            return _fail(ctx, handle, failed_step, "dependency_unavailable",
                         f"Gave up after {attempt + 1} attempts: {message}")
        delay = config.retry_delays_seconds[attempt]
        logger.warning("request %s: dependency unavailable (%s); resuming in %.0f s",
                       request.request_id, type(exc).__name__, delay)
        _release(handle, RequestStatus.WAITING)
        return Outcome(OutcomeKind.RETRY_LATER, request.request_id, "dependency_unavailable",
                       f"A dependency is unavailable; the request resumes in {delay:.0f} s.",
                       retry_in_seconds=delay, attempt=attempt + 1, state=handle.record.to_public())
    # Unexpected: release the lease so the redelivery can resume at once, then let the host see it.
    _release(handle, RequestStatus.RUNNING)
    raise exc


def _release(handle: RecordHandle, status: RequestStatus) -> None:
    def apply(r: OnboardingRecord) -> None:
        r.status = status
        r.lease_owner = r.lease_expires_at = ""
    try:
        handle.save(apply, keep_lease=False)
    except Exception:
        logger.warning("request %s: could not release the lease", handle.record.request_id, exc_info=True)


def _fail(ctx: steps.StepContext, handle: RecordHandle, step: str, reason: str, message: str) -> Outcome:
    def apply(r: OnboardingRecord) -> None:
        if step:
            r.steps[step] = StepRecord(StepOutcome.FAILED, iso(utcnow()), reason)
        r.status = RequestStatus.FAILED
        r.error_reason = reason
        r.error_message = message
        r.lease_owner = r.lease_expires_at = ""
    handle.save(apply, keep_lease=False)
    ctx.emit("failed", step or "unknown", "failed", reason=reason, message=message,
             palette=ctx.palette_uids())
    logger.warning("request %s: failed at %s (%s): %s", ctx.request_id, step, reason, message)
    return Outcome(OutcomeKind.FAILED, ctx.request_id, reason, message, state=handle.record.to_public())


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ACCOUNT_NAME = re.compile(r"^[a-z][a-z0-9-]{2,63}$")


def _identity_of(body: bytes | str | Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The requestId and accountName of an invalid request, where they are themselves valid."""
    data: Any = body
    if isinstance(body, (bytes, str)):
        try:
            data = json.loads(body)
        except ValueError:
            return None, None
    if not isinstance(data, dict):
        return None, None
    request_id, account_name = data.get("requestId"), data.get("accountName")
    return (request_id if isinstance(request_id, str) and _REQUEST_ID.match(request_id) else None,
            account_name if isinstance(account_name, str) and _ACCOUNT_NAME.match(account_name) else None)


def _reject(body: bytes | str | Mapping[str, Any], exc: RequestValidationError,
            clients: OnboardingClients) -> Outcome:
    """An invalid request: nothing is created anywhere. Recorded as failed (when it has a usable
    requestId and no row yet) and announced, so the ticket hears why."""
    from shared.clients.events import build_event

    request_id, account_name = _identity_of(body)
    errors = [e.as_dict() for e in exc.errors]
    message = str(exc)
    if request_id:
        record = OnboardingRecord(request_id=request_id, account_name=account_name or "",
                                  fingerprint="invalid", status=RequestStatus.FAILED,
                                  error_reason="invalid_request", error_message=message)
        record.steps["check"] = StepRecord(StepOutcome.FAILED, iso(utcnow()), "invalid_request")
        try:
            clients.state.create(record)
        except ConcurrentUpdateError:
            existing = clients.state.get(request_id)
            state = existing.to_public() if existing else {}
            return Outcome(OutcomeKind.DUPLICATE if existing and existing.fingerprint == "invalid"
                           else OutcomeKind.CONFLICT, request_id, "invalid_request", message,
                           state=state, errors=errors)
    clients.events.publish(build_event(
        event_type="failed", account_name=account_name or "unknown", request_id=request_id or "unknown",
        data={"requestId": request_id or "unknown", "step": "check", "outcome": "failed", "reason": "invalid_request",
              "message": message, "errors": errors},
        discriminator="invalid",
    ))
    logger.warning("request %s rejected: %s", request_id or "(no valid requestId)", message)
    return Outcome(OutcomeKind.REJECTED, request_id or "", "invalid_request", message, errors=errors)
