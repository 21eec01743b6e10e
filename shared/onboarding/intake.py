"""The HTTP intake: validate a request, keep an inline secret in Key Vault, record it, queue it;
or, for the dry run, only check it (:func:`dry_run`).

The state row is written before the message is sent, with the request as queued, so a failed send
is repaired by a resubmission of the same body or by the sweeper (the queue's duplicate detection
on ``message_id`` drops the second copy if the first did arrive). Whether a body runs under its
requestId is :mod:`shared.engine.admission`'s rule, which the dry run follows too: a requestId whose
earlier body was invalid, or whose request was refused at its check, runs a corrected body (a
corrected ticket is not a conflict); the same body again is answered with the request's state.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared import credentials
from shared.engine.admission import INTAKE_FINGERPRINT, Admission, admission, conflict_message, restart
from shared.errors import IdempotencyConflictError, OnboardingError
from shared.onboarding import staging
from shared.state import ConcurrentUpdateError, RequestRecord, RequestStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.clients.queue import RequestQueue
    from shared.dryrun import DryRun
    from shared.models import OnboardingRequest
    from shared.services import Services
    from shared.settings import PipelineConfig

INLINE_SECRET_VERSION = "_inlineSecretVersion"


class SecretNameBlockedError(OnboardingError):
    """The Key Vault name an inline secret goes to cannot take it (answer 409, naming it)."""


def submit(body: bytes | str | Mapping[str, Any], clients: Services, queue: RequestQueue, *,
           allow_inline_secret: bool, config: PipelineConfig) -> RequestRecord:
    """Accept one request.

    Raises
    ------
    RequestValidationError
        The body is invalid (400, one error per field).
    IdempotencyConflictError
        The requestId was used with another body by a request that succeeded, runs, or made
        something (409).
    SecretNameBlockedError
        An inline secret's Key Vault name is taken or blocked by a deleted secret (409).
    """
    from shared.models import parse_request, request_fingerprint

    request = parse_request(body, allow_inline_secret=allow_inline_secret,
                            require_pcg_for_us_government=config.require_pcg_for_us_government,
                            allowed_secret_prefix=config.allowed_secret_prefix)
    submitted = request_fingerprint(request)
    existing = clients.state.get(request.request_id)
    admitted = admission(existing, submitted)
    if admitted in (Admission.NEW, Admission.RERUN):
        record = _record_new(request, submitted, clients, existing, admitted)
        if record is not None:
            _send(record, queue)
            return record
        existing = clients.state.get(request.request_id)  # another writer won meanwhile: with this body?
        admitted = admission(existing, submitted)
        if existing is None or admitted in (Admission.NEW, Admission.RERUN):
            raise ConcurrentUpdateError(f"The state of request {request.request_id} changed meanwhile; submit it "
                                        "again.")
    assert existing is not None  # NEW and RERUN returned or raised above
    if admitted is Admission.CONFLICT:
        raise IdempotencyConflictError(conflict_message(existing))
    if existing.status is RequestStatus.QUEUED:
        _send(existing, queue)  # the first send may have failed after the row was written
    return existing


def _record_new(request: OnboardingRequest, submitted: str, clients: Services, replaced: RequestRecord | None,
                admitted: Admission) -> RequestRecord | None:
    """Write the queued row (replacing an invalid body's row, or starting the next run of a refused
    request); None when another submission won."""
    from shared.models import request_fingerprint

    queued = request
    results = {INTAKE_FINGERPRINT: submitted}
    made: dict[str, dict[str, Any]] = {}
    if request.has_inline_secret:
        _client_secret_name_usable(request, clients)
        run = 1 if replaced is None else replaced.run + (1 if admitted is Admission.RERUN else 0)
        queued, staged = staging.stage(request, clients, run=run)
        results[INLINE_SECRET_VERSION] = staged.ids["version"]
        made[staging.STAGED] = staged.to_dict()
    document = json.dumps(queued.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
    if replaced is None:
        record = RequestRecord(request_id=request.request_id, account_name=request.account_name,
                               fingerprint=request_fingerprint(queued), request=document,
                               status=RequestStatus.QUEUED, current_step="queued")
    else:
        record = restart(replaced, admitted, account_name=request.account_name,
                         fingerprint=request_fingerprint(queued), request=document)
    record.results.update(results)
    record.made.update(made)
    try:
        return clients.state.replace(record) if replaced is not None else clients.state.create(record)
    except ConcurrentUpdateError:
        return None


def _client_secret_name_usable(request: OnboardingRequest, clients: Services) -> None:
    """Refuse at once (409) an inline secret whose account's Key Vault name cannot take it: a
    deleted secret in the way, or somebody else's secret. Reads only; the check step asks again
    under the account's lease before anything is written there."""
    from shared.onboarding.checks import deleted_secret_block

    store = clients.secrets
    kind = credentials.SecretKind.CLIENT_SECRET
    name = request.derived_names.client_secret
    blocked = deleted_secret_block(request, kind, store, step="intake")
    if blocked is not None:
        raise SecretNameBlockedError(str(blocked))
    versions = store.list_versions(name)
    if versions and not credentials.is_secret_of(versions[0].tags, request.account_name, kind):
        raise SecretNameBlockedError(
            f"Key Vault secret '{name}' exists and was not written by this product for account "
            f"'{request.account_name}'; nothing was stored. Rename or remove that secret, or choose another "
            "accountName.")


def _send(record: RequestRecord, queue: RequestQueue) -> None:
    from shared.engine.enqueue import send_recorded

    send_recorded(queue, record)


def dry_run(body: bytes | str | Mapping[str, Any], clients: Services, *, allow_inline_secret: bool,
            config: PipelineConfig) -> DryRun:
    """Check a request as the check step would, and say what submitting it would do, with no side
    effect anywhere: nothing is recorded, queued, stored in Key Vault or written to Graph or
    Palette. A body that breaks the schema is one ``schema`` result with its field errors; a body
    submitted before under its requestId is answered by the ``requestId`` result alone (submitting
    it again runs nothing, so no lookup would say what happens)."""
    from shared.dryrun import CheckOutcome, CheckResult, DryRun, request_id_check
    from shared.errors import RequestValidationError
    from shared.models import identity_of, parse_request, request_fingerprint
    from shared.onboarding.checks import run_checks
    try:
        request = parse_request(body, allow_inline_secret=allow_inline_secret,
                                require_pcg_for_us_government=config.require_pcg_for_us_government,
                                allowed_secret_prefix=config.allowed_secret_prefix)
    except RequestValidationError as exc:
        request_id, account_name = identity_of(body)
        return DryRun(request_id, account_name, [CheckResult(
            "schema", CheckOutcome.INVALID, str(exc), reason="invalid_request",
            errors=tuple(error.as_dict() for error in exc.errors))])
    from shared.models.request import GeneratedSecret

    names = request.derived_names
    written = [credentials.secret_name(request.account_name, kind) for kind in request.secrets_written]
    found = [
        CheckResult("schema", CheckOutcome.OK, "the request is a valid schema-v1 request"),
        CheckResult("names", CheckOutcome.OK,
                    (f"Key Vault secret(s) written: {', '.join(written)}" if written
                     else "no Key Vault secret written")
                    + (f"; Graph password '{names.password_display_name}'"
                       if isinstance(request.azure.secret, GeneratedSecret) else "")),
    ]
    submission, runs = request_id_check(request.request_id, request_fingerprint(request), clients)
    found.append(submission)
    if runs:
        found.extend(run_checks(request, clients, errors_as_results=True))
    return DryRun(request.request_id, request.account_name, found)
