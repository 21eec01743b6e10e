"""The HTTP intake: validate a request, keep an inline secret in Key Vault, record it, queue it.

The state row is written before the message is sent, so a resubmission of the same body after a
failed send finds it and sends again (the queue's duplicate detection on ``message_id`` drops the
second copy if the first did arrive).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.errors import IdempotencyConflictError
from shared.state import ConcurrentUpdateError, OnboardingRecord, RequestStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.clients.queue import RequestQueue
    from shared.models import OnboardingRequest
    from shared.pipeline import OnboardingClients

INTAKE_FINGERPRINT = "_intakeFingerprint"
INLINE_SECRET_VERSION = "_inlineSecretVersion"


def submit(body: bytes | str | Mapping[str, Any], clients: OnboardingClients, queue: RequestQueue, *,
           allow_inline_secret: bool, require_pcg_for_us_government: bool = True) -> OnboardingRecord:
    """Accept one request; raises RequestValidationError (400) or IdempotencyConflictError (409)."""
    from shared.models import parse_request, request_fingerprint

    request = parse_request(body, allow_inline_secret=allow_inline_secret,
                            require_pcg_for_us_government=require_pcg_for_us_government)
    submitted_fingerprint = request_fingerprint(request)
    existing = clients.state.get(request.request_id)
    if existing is None:
        queued = request
        results = {INTAKE_FINGERPRINT: submitted_fingerprint}
        if request.has_inline_secret:
            queued = _store_inline_secret(request, clients)
            results[INLINE_SECRET_VERSION] = getattr(queued.azure.secret, "version", "") or ""
        record = OnboardingRecord(request_id=request.request_id, account_name=request.account_name,
                                  fingerprint=request_fingerprint(queued), status=RequestStatus.QUEUED,
                                  current_step="queued", results=results)
        try:
            record = clients.state.create(record)
        except ConcurrentUpdateError:
            existing = clients.state.get(request.request_id)
            if existing is None:
                raise
        else:
            _send(queued, queue)
            return record
    if existing.results.get(INTAKE_FINGERPRINT, existing.fingerprint) != submitted_fingerprint:
        raise IdempotencyConflictError(
            f"Request {existing.request_id} was already submitted with a different body; use a new "
            "requestId for a new request.")
    if existing.status is RequestStatus.QUEUED:
        # The first send may have failed after the row was written: send again (deduplicated).
        version = existing.results.get(INLINE_SECRET_VERSION)
        _send(request.with_key_vault_secret(_inline_secret_name(request), version) if version else request,
              queue)
    return existing


def _inline_secret_name(request: OnboardingRequest) -> str:
    from shared.clients.keyvault import secret_name_for

    return secret_name_for(request.account_name, "client-secret")


def _store_inline_secret(request: OnboardingRequest, clients: OnboardingClients) -> OnboardingRequest:
    from shared.clients import keyvault

    secret = request.azure.secret
    value = getattr(secret, "value", None)
    assert value is not None
    name = _inline_secret_name(request)
    tags = keyvault.managed_tags(request.account_name, keyvault.PURPOSE_CLIENT_SECRET, {
        keyvault.REQUEST_ID_TAG: request.request_id, keyvault.TENANT_ID_TAG: request.azure.tenant_id,
        keyvault.CLIENT_ID_TAG: request.azure.client_id})
    stored = clients.secrets.set_secret(name, value, content_type=keyvault.CONTENT_TYPE_CLIENT_SECRET, tags=tags)
    return request.with_key_vault_secret(name, stored.version)


def _send(request: OnboardingRequest, queue: RequestQueue) -> None:
    queue.send(request.model_dump(mode="json", by_alias=True, exclude_none=True), message_id=request.request_id)
