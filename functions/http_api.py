"""HTTP triggers: internal tools submit requests and ask for their state.

Routes (under ``/api``): ``POST onboardings``, ``GET onboardings``, ``GET onboardings/{requestId}``,
``GET health``. Function keys guard every route but health (auth level set on the app); where Easy
Auth is on, the caller's app roles are checked too (``functions/auth.py``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import azure.functions as func

if TYPE_CHECKING:
    from functions.dependencies import Dependencies

bp = func.Blueprint()
logger = logging.getLogger(__name__)


def _json(status: int, payload: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


def _problem(status: int, title: str, detail: str, **extra: Any) -> func.HttpResponse:
    return _json(status, {"title": title, "detail": detail, **extra})


def _denied(req: func.HttpRequest, *roles: str) -> func.HttpResponse | None:
    """A 401/403 response when Easy Auth's principal lacks every one of ``roles`` (or, where
    ``REQUIRE_CLIENT_PRINCIPAL`` is on, when there is no principal); else None."""
    from functions.auth import AuthorizationError, require_role
    from shared.settings import requires_client_principal

    try:
        require_role(req.headers, *roles, require_principal=requires_client_principal(os.environ))
    except AuthorizationError as exc:
        return _problem(exc.status, "Forbidden" if exc.status == 403 else "Unauthorized", str(exc))
    return None


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _json(200, {"status": "ok"})


@bp.function_name("submit_onboarding")
@bp.route(route="onboardings", methods=["POST"])
def submit_onboarding(req: func.HttpRequest) -> func.HttpResponse:
    """Accept a request (202), reject it with field errors (400), or refuse a conflicting reuse of
    its requestId (409). An inline secret is written to Key Vault at once; the queued message
    carries only the reference."""
    from functions import dependencies
    from functions.auth import SUBMIT_ROLE
    from shared.errors import IdempotencyConflictError, RequestValidationError
    from shared.intake import SecretNameBlockedError, submit

    if (denied := _denied(req, SUBMIT_ROLE)) is not None:
        return denied
    deps: Dependencies = dependencies.get()
    try:
        record = submit(req.get_body(), deps.clients, deps.queue, allow_inline_secret=_is_https(req),
                        config=deps.settings.pipeline)
    except RequestValidationError as exc:
        return _problem(400, "Invalid onboarding request", str(exc), errors=[e.as_dict() for e in exc.errors])
    except IdempotencyConflictError as exc:
        return _problem(409, "requestId already used", str(exc))
    except SecretNameBlockedError as exc:
        return _problem(409, "Key Vault secret name unavailable", str(exc))
    status_url = req.url.split("/api/")[0] + f"/api/onboardings/{record.request_id}"
    return _json(202, {"id": record.request_id, "status": record.status.value, "statusUrl": status_url})


@bp.function_name("list_onboardings")
@bp.route(route="onboardings", methods=["GET"])
def list_onboardings(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READ_ROLE, SUBMIT_ROLE
    from shared.state import RequestStatus

    if (denied := _denied(req, READ_ROLE, SUBMIT_ROLE)) is not None:
        return denied
    status_text = req.params.get("status")
    status = None
    if status_text:
        try:
            status = RequestStatus(status_text)
        except ValueError:
            allowed = ", ".join(s.value for s in RequestStatus)
            return _problem(400, "Invalid filter", f"status must be one of {allowed}",
                            errors=[{"path": "status", "message": f"must be one of {allowed}"}])
    records = dependencies.get().clients.state.list(status=status)
    return _json(200, {"items": [r.to_public() for r in records]})


@bp.function_name("get_onboarding")
@bp.route(route="onboardings/{requestId}", methods=["GET"])
def get_onboarding(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READ_ROLE, SUBMIT_ROLE

    if (denied := _denied(req, READ_ROLE, SUBMIT_ROLE)) is not None:
        return denied
    from shared.models.fields import REQUEST_ID_PATTERN

    request_id = req.route_params.get("requestId", "")
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        rule = "must be 1-64 characters: letters, digits, '.', '_' or '-'"
        return _problem(400, "Invalid requestId", f"requestId {rule}.", errors=[{"path": "requestId", "message": rule}])
    record = dependencies.get().clients.state.get(request_id)
    if record is None:
        return _problem(404, "Not found", f"No onboarding request has the id {request_id!r}.")
    return _json(200, record.to_public())


def _is_https(req: func.HttpRequest) -> bool:
    """Behind the Functions front end the scheme is in the URL or X-Forwarded-Proto; loopback
    (the local runner) counts as secure, as nothing leaves the machine."""
    from shared.net import is_loopback_url

    proto = req.headers.get("x-forwarded-proto", "")
    return req.url.startswith("https://") or proto == "https" or is_loopback_url(req.url)
