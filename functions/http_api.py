"""HTTP triggers: internal tools submit requests, dry-run them, read their state; the API describes itself.

Routes (under ``/api``), each described in ``functions/openapi.json`` (OpenAPI 3.1, served at
``GET openapi.json``): ``POST onboardings``, ``POST onboardings/validate``, ``GET onboardings``,
``GET onboardings/{requestId}``, ``GET health``, ``GET openapi.json``, rotation
(``POST rotations/{accountName}``, ``GET rotations/{id}``), the inventory (``GET accounts``,
``GET accounts/{name}``) and offboarding (``DELETE accounts/{name}``).

Function keys guard every route but ``health`` and ``openapi.json`` (the auth level is set on the
app); where Easy Auth is on, the caller's app roles are checked too (``functions/auth.py``). Every
error is ``application/problem+json`` (RFC 9457), made by :func:`problem`; an unexpected exception
is one too (500), and a dependency that does not answer is a 503.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from functions.dependencies import Dependencies

bp = func.Blueprint()
logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Bodies above this are refused (413) before they are parsed: the schema's own limit (64 KiB).
MAX_BODY_BYTES = 64 * 1024
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
#: Seconds a caller is asked to wait (``Retry-After``) when a dependency did not answer.
DEPENDENCY_RETRY_AFTER = 30
ACCOUNT_NAME_RULE = "must be 3-64 characters: lower-case letters, digits or '-', starting with a letter"
#: Problem types (RFC 9457 ``type``) of the problems that mean more than their HTTP status.
PROBLEM_TYPES = {
    "invalid-request": "urn:palette-onboarding:problem:invalid-request",
    "invalid-parameter": "urn:palette-onboarding:problem:invalid-parameter",
    "request-id-conflict": "urn:palette-onboarding:problem:request-id-conflict",
    "secret-name-unavailable": "urn:palette-onboarding:problem:secret-name-unavailable",
    "dependency-unavailable": "urn:palette-onboarding:problem:dependency-unavailable",
    "not-configured": "urn:palette-onboarding:problem:not-configured",
    "not-ready": "urn:palette-onboarding:problem:not-ready",
    "not-implemented": "urn:palette-onboarding:problem:not-implemented",
}


# -- responses --------------------------------------------------------------------------------------

def _json(status: int, payload: Any, *, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json",
                             headers=dict(headers or {}))


def problem(status: int, title: str, detail: str, *, kind: str | None = None,
            errors: list[dict[str, str]] | None = None, headers: Mapping[str, str] | None = None,
            **extensions: Any) -> func.HttpResponse:
    """Every error response: RFC 9457 problem details with ``errors: [{path, message}]`` (empty
    when no field is to blame). ``kind`` picks a :data:`PROBLEM_TYPES` entry; without it the type
    is ``about:blank`` and the title is the HTTP status phrase."""
    body = {"type": PROBLEM_TYPES[kind] if kind else "about:blank", "title": title, "status": status,
            "detail": detail, "errors": errors or [], **extensions}
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=PROBLEM_JSON, headers=dict(headers or {}))


def _retry_advice(method: str) -> str:
    """What a 503 tells the caller to do: a read changed nothing and can simply be made again; a
    write of this API cannot happen twice (a requestId, an account's one running rotation or
    offboarding), so the same request may be sent again."""
    wait = f"after {DEPENDENCY_RETRY_AFTER} s (Retry-After)"
    if method.upper() in ("GET", "HEAD"):
        return f"Nothing was changed; the read can be retried {wait}."
    return f"Try again {wait}; sending the same request again is safe."


def _guarded(function: Callable[[func.HttpRequest], func.HttpResponse]) -> Callable[[func.HttpRequest],
                                                                                    func.HttpResponse]:
    """Answer an exception the route did not expect as a problem, not as the host's bare 500: a
    dependency that failed (state table, queue, Key Vault, Palette) or incomplete settings is a 503
    (try again), anything else a 500. Only the exception's type reaches the caller."""

    @functools.wraps(function)
    def route(req: func.HttpRequest) -> func.HttpResponse:
        from azure.core.exceptions import AzureError

        from shared.errors import StateStoreError
        from shared.settings import SettingsError

        try:
            return function(req)
        except SettingsError as exc:
            logger.error("HTTP %s %s: %s", req.method, _path(req), exc)
            return problem(503, "Not configured", str(exc), kind="not-configured")
        except (StateStoreError, AzureError) as exc:
            logger.warning("HTTP %s %s: a dependency failed", req.method, _path(req), exc_info=True)
            return problem(503, "Dependency unavailable",
                           f"A service this API depends on did not answer ({type(exc).__name__}). "
                           f"{_retry_advice(req.method)}",
                           kind="dependency-unavailable", headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER)})
        except Exception:
            logger.exception("HTTP %s %s failed", req.method, _path(req))
            return problem(500, "Internal Server Error", "The request failed unexpectedly; the error is logged.")
    return route


def _path(req: func.HttpRequest) -> str:
    return req.url.split("?", 1)[0]  # never the query: it may carry the function key


def _url(req: func.HttpRequest, path: str) -> str:
    """An absolute URL of another route of this API."""
    return req.url.split("?", 1)[0].split("/api/", 1)[0] + "/api/" + path


def _denied(req: func.HttpRequest, *roles: str) -> func.HttpResponse | None:
    """A 401/403 response when Easy Auth's principal lacks every one of ``roles`` (or, where
    ``REQUIRE_CLIENT_PRINCIPAL`` is on, when there is no principal); else None."""
    from functions.auth import AuthorizationError, require_role
    from shared.settings import requires_client_principal

    try:
        require_role(req.headers, *roles, require_principal=requires_client_principal(os.environ))
    except AuthorizationError as exc:
        return problem(exc.status, "Forbidden" if exc.status == 403 else "Unauthorized", str(exc))
    return None


def _too_large(req: func.HttpRequest) -> func.HttpResponse | None:
    size = len(req.get_body() or b"")
    if size <= MAX_BODY_BYTES:
        return None
    return problem(413, "Content Too Large", f"The body is {size} bytes; at most {MAX_BODY_BYTES} (64 KiB) are "
                   "accepted. Nothing was read.")


def _account_name_error(name: str, path: str) -> dict[str, str] | None:
    """The field error of an account name in the route that is malformed, naming its path
    parameter ``path``; None for a well-formed one. Every route that takes an account name checks
    it here first: a malformed name is a 400 on each of them, and only a well-formed name the
    product does not manage is a 404."""
    from shared.models.fields import ACCOUNT_NAME_PATTERN

    return None if ACCOUNT_NAME_PATTERN.fullmatch(name) else {"path": path, "message": ACCOUNT_NAME_RULE}


def _invalid_parameters(errors: list[dict[str, str]]) -> func.HttpResponse:
    """The 400 of bad route or query parameters: one ``errors`` entry each, all in ``detail``."""
    title = f"Invalid {errors[0]['path']}" if len(errors) == 1 else "Invalid parameters"
    return problem(400, title, "; ".join(f"{e['path']} {e['message']}" for e in errors) + ".",
                   kind="invalid-parameter", errors=errors)


def _request_id_conflict(detail: str, why: str) -> func.HttpResponse:
    """The 409 of a requestId used before for another request: ``errors`` names the field."""
    return problem(409, "requestId already used", detail, kind="request-id-conflict",
                   errors=[{"path": "requestId", "message": why}])


def _invalid_account_name(name: str, path: str) -> func.HttpResponse | None:
    """The 400 of a malformed account name (see :func:`_account_name_error`); else None."""
    error = _account_name_error(name, path)
    return None if error is None else _invalid_parameters([error])


def _is_https(req: func.HttpRequest) -> bool:
    """Behind the Functions front end the scheme is in the URL or X-Forwarded-Proto. The local
    runner serves HTTPS too, so nothing here tells a local caller from a remote one."""
    return req.url.startswith("https://") or req.headers.get("x-forwarded-proto", "") == "https"


def _query_errors(exc: Exception) -> list[dict[str, str]]:
    from pydantic import ValidationError

    assert isinstance(exc, ValidationError)
    return [{"path": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)]


# -- operations -------------------------------------------------------------------------------------

@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@_guarded
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Readiness: settings present, state table, queue and topic reachable (503 naming what is not)."""
    from functions.readiness import readiness

    probes = readiness(os.environ)
    checks = [p.as_dict() for p in probes]
    failing = [p for p in probes if p.outcome != "ok"]
    if not failing:
        return _json(200, {"status": "ok", "checks": checks})
    named = "; ".join(f"{p.name}: {p.detail}" for p in failing if p.outcome != "skipped")
    return problem(503, "Not ready", f"The app cannot work yet. {named}", kind="not-ready", checks=checks,
                   headers={"Retry-After": "30"})


@functools.cache
def _openapi_document() -> bytes:
    return OPENAPI_PATH.read_bytes()


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@_guarded
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of every route (kept in the repository beside this module)."""
    return func.HttpResponse(_openapi_document(), status_code=200, mimetype="application/json")


@bp.function_name("submit_onboarding")
@bp.route(route="onboardings", methods=["POST"])
@_guarded
def submit_onboarding(req: func.HttpRequest) -> func.HttpResponse:
    """Accept a request (202 with ``Location``), reject it with field errors (400), or refuse a
    conflicting reuse of its requestId (409). An inline secret is written to Key Vault at once; the
    queued message carries only the reference."""
    from functions import dependencies
    from functions.auth import SUBMIT_ROLE
    from shared.errors import IdempotencyConflictError, RequestValidationError
    from shared.onboarding.intake import SecretNameBlockedError, submit

    if (refused := _denied(req, SUBMIT_ROLE) or _too_large(req)) is not None:
        return refused
    deps: Dependencies = dependencies.get()
    try:
        record = submit(req.get_body(), deps.clients, deps.queue, allow_inline_secret=_is_https(req),
                        config=deps.settings.pipeline)
    except RequestValidationError as exc:
        return problem(400, "Invalid onboarding request", str(exc), kind="invalid-request",
                       errors=[e.as_dict() for e in exc.errors])
    except IdempotencyConflictError as exc:
        return _request_id_conflict(str(exc), "was already submitted with a different body: use a new requestId "
                                    "for a new request, or send that body unchanged")
    except SecretNameBlockedError as exc:
        return problem(409, "Key Vault secret name unavailable", str(exc), kind="secret-name-unavailable")
    status_url = _url(req, f"onboardings/{record.request_id}")
    return _json(202, {"id": record.request_id, "status": record.status.value, "statusUrl": status_url},
                 headers={"Location": status_url})


@bp.function_name("validate_onboarding")
@bp.route(route="onboardings/validate", methods=["POST"])
@_guarded
def validate_onboarding(req: func.HttpRequest) -> func.HttpResponse:
    """The dry run: every check of the check step, no side effect anywhere (200 with the checks)."""
    from functions import dependencies
    from functions.auth import READERS
    from shared.operations import dry_run

    if (refused := _denied(req, *READERS) or _too_large(req)) is not None:
        return refused
    deps: Dependencies = dependencies.get()
    report = dry_run(req.get_body(), deps.clients, allow_inline_secret=_is_https(req), config=deps.settings.pipeline)
    return _json(200, report.as_dict())


@functools.cache
def _list_query() -> Any:
    """The query of ``GET onboardings``, validated by pydantic (built on first use: pydantic is not
    imported while the host indexes the app)."""
    from pydantic import BaseModel, ConfigDict, Field

    from shared.operations import ListedOperation  # noqa: TC001 - pydantic reads the annotation at run time
    from shared.state import RequestStatus  # noqa: TC001 - pydantic reads the annotation at run time

    class ListQuery(BaseModel):
        # Other parameters (``code``, the function key) are ignored, as the host passes them on.
        model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
        status: RequestStatus | None = None
        operation: ListedOperation | None = None
        top: int = Field(50, ge=1, le=200)
        continuation_token: str | None = Field(None, alias="continuationToken", min_length=1, max_length=4096)

    return ListQuery


@bp.function_name("list_onboardings")
@bp.route(route="onboardings", methods=["GET"])
@_guarded
def list_onboardings(req: func.HttpRequest) -> func.HttpResponse:
    """One page of requests (onboardings, rotations, offboardings), by the state table's own
    continuation (never the whole table)."""
    from pydantic import ValidationError

    from functions import dependencies
    from functions.auth import READERS
    from shared.state import InvalidContinuationTokenError

    if (denied := _denied(req, *READERS)) is not None:
        return denied
    try:
        query = _list_query().model_validate(dict(req.params))
        operations = query.operation.operations if query.operation else ()
        page = dependencies.get().clients.state.list_page(status=query.status, operations=operations, top=query.top,
                                                          continuation_token=query.continuation_token)
    except ValidationError as exc:
        errors = _query_errors(exc)
        return problem(400, "Invalid query", "; ".join(f"{e['path']}: {e['message']}" for e in errors),
                       kind="invalid-parameter", errors=errors)
    except InvalidContinuationTokenError as exc:
        return problem(400, "Invalid query", f"continuationToken {exc}; start again without it.",
                       kind="invalid-parameter", errors=[{"path": "continuationToken", "message": str(exc)}])
    return _json(200, {"items": [{**r.to_public(), "operation": r.operation} for r in page.items],
                       "continuationToken": page.continuation_token})


@bp.function_name("get_onboarding")
@bp.route(route="onboardings/{requestId}", methods=["GET"])
@_guarded
def get_onboarding(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READERS
    from shared.models.fields import REQUEST_ID_PATTERN

    if (denied := _denied(req, *READERS)) is not None:
        return denied
    request_id = req.route_params.get("requestId", "")
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        rule = "must be 1-64 characters: letters, digits, '.', '_' or '-'"
        return problem(400, "Invalid requestId", f"requestId {rule}.", kind="invalid-parameter",
                       errors=[{"path": "requestId", "message": rule}])
    record = dependencies.get().clients.state.get(request_id)
    if record is None:
        return problem(404, "Not Found", f"No onboarding request has the id {request_id!r}.")
    if record.operation == "offboard":
        from shared.offboarding.plan import removed_and_left

        removed, left = removed_and_left(record.results)
        return _json(200, {**record.to_public(), "operation": "offboard", "removed": removed, "left": left})
    return _json(200, record.to_public())


# -- rotation and the inventory ------------------------------------------------------------------------

@bp.function_name("rotate_account")
@bp.route(route="rotations/{accountName}", methods=["POST"])
@_guarded
def rotate_account(req: func.HttpRequest) -> func.HttpResponse:
    """Rotate an account's secret now: 202 with a status URL; 404 not managed; 409 while one runs."""
    from functions import dependencies
    from functions.auth import ADMIN_ROLE
    from shared.rotation.sweep import RotateNow, rotate_now

    if (denied := _denied(req, ADMIN_ROLE)) is not None:
        return denied
    name = req.route_params.get("accountName", "")
    if (invalid := _invalid_account_name(name, "accountName")) is not None:
        return invalid
    deps: Dependencies = dependencies.get()
    outcome, rotation = rotate_now(deps.clients, deps.queue, name)
    if outcome is RotateNow.NOT_MANAGED:
        return problem(404, "Not Found", f"Account '{name}' is not one this product manages.")
    status_url = _url(req, f"rotations/{rotation}")
    if outcome is RotateNow.IN_FLIGHT:
        return problem(409, "Conflict", f"A rotation of account '{name}' is already running: {rotation}.",
                       runningRotationId=rotation, statusUrl=status_url)
    return _json(202, {"id": rotation, "status": "queued", "statusUrl": status_url},
                 headers={"Location": status_url})


@bp.function_name("get_rotation")
@bp.route(route="rotations/{id}", methods=["GET"])
@_guarded
def get_rotation(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READERS
    from shared.models.fields import REQUEST_ID_PATTERN

    if (denied := _denied(req, *READERS)) is not None:
        return denied
    rotation = req.route_params.get("id", "")
    record = (dependencies.get().clients.state.get(rotation)
              if rotation.startswith("rot-") and REQUEST_ID_PATTERN.fullmatch(rotation) else None)
    if record is None:
        return problem(404, "Not Found", f"No rotation has the id {rotation!r}.")
    return _json(200, {**record.to_public(), "operation": "rotate"})


@bp.function_name("list_accounts")
@bp.route(route="accounts", methods=["GET"])
@_guarded
def list_accounts(req: func.HttpRequest) -> func.HttpResponse:
    """The inventory, a page at a time: ``dueWithinDays``, ``drift``, ``failed`` filters; ``top``
    and ``continuationToken`` page by the table's own continuation."""
    import datetime as dt

    from functions import dependencies
    from functions.auth import READERS
    from shared.state.records import iso, utcnow

    if (denied := _denied(req, *READERS)) is not None:
        return denied
    errors = []
    where: list[str] = []
    parameters: dict[str, Any] = {}
    due = req.params.get("dueWithinDays")
    if due is not None:
        if not due.isdigit() or not 0 <= int(due) <= 730:
            errors.append({"path": "dueWithinDays", "message": "must be a whole number of days from 0 to 730"})
        else:
            where.append("ExpiresOn ne '' and ExpiresOn le @horizon")
            parameters["horizon"] = iso(utcnow() + dt.timedelta(days=int(due)))
    for name, condition in (("drift", "Drift ne '[]'"), ("failed", "LastRotationOutcome eq 'failed'")):
        value = req.params.get(name)
        if value is None:
            continue
        if value not in ("true", "false"):
            errors.append({"path": name, "message": "must be true or false"})
        elif value == "true":
            where.append(condition)
    top_text = req.params.get("top", "50")
    if not top_text.isdigit() or not 1 <= int(top_text) <= 200:
        errors.append({"path": "top", "message": "must be a whole number from 1 to 200"})
    if errors:
        return problem(400, "Invalid parameters", "; ".join(f"{e['path']} {e['message']}" for e in errors),
                       kind="invalid-parameter", errors=errors)
    try:
        rows, token = dependencies.get().clients.inventory.page(
            " and ".join(where), parameters, top=int(top_text), continuation=req.params.get("continuationToken"))
    except ValueError as exc:
        return problem(400, "Invalid parameters", str(exc), kind="invalid-parameter",
                       errors=[{"path": "continuationToken", "message": str(exc)}])
    return _json(200, {"items": [row.to_public() for row in rows], "continuationToken": token})


@bp.function_name("get_account")
@bp.route(route="accounts/{name}", methods=["GET"])
@_guarded
def get_account(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READERS

    if (denied := _denied(req, *READERS)) is not None:
        return denied
    name = req.route_params.get("name", "")
    if (invalid := _invalid_account_name(name, "name")) is not None:
        return invalid
    row = dependencies.get().clients.inventory.get(name)
    if row is None:
        return problem(404, "Not Found", f"Account {name!r} is not one this product manages.")
    return _json(200, row.to_public())


@bp.function_name("reactivate_previous_api_key")
@bp.route(route="accounts/{name}/previous-api-key/reactivate", methods=["POST"])
@_guarded
def reactivate_previous_api_key(req: func.HttpRequest) -> func.HttpResponse:
    """Make an account's replaced Palette API key work again, for another overlap (a consumer still
    needs it): 200 with the key's stage; 404 when the account has no replaced key left to
    reactivate; 409 while a stage of it is being carried out."""
    import math

    from functions import dependencies
    from functions.auth import ADMIN_ROLE
    from shared.rotation.apikeys import ACTIVE, StageHeld, reactivate_replaced_key
    from shared.state.records import utcnow

    if (denied := _denied(req, ADMIN_ROLE)) is not None:
        return denied
    name = req.route_params.get("name", "")
    if (invalid := _invalid_account_name(name, "name")) is not None:
        return invalid
    deps: Dependencies = dependencies.get()
    try:
        row = reactivate_replaced_key(name, deps.clients, deps.settings.pipeline.rotation, utcnow())
    except StageHeld as exc:
        wait = max(1, math.ceil((exc.retry_after - utcnow()).total_seconds()))
        return problem(409, "Conflict", f"The replaced API key of account '{name}' is being {exc.stage}d; try again "
                       f"in {wait} s.", headers={"Retry-After": str(wait)})
    if row is None:
        return problem(404, "Not Found", f"Account '{name}' has no replaced API key to reactivate: it was never "
                       "replaced, was deleted, or is not one this product manages.")
    if row.previous_api_key_state != ACTIVE:
        return problem(409, "Conflict", f"The replaced API key of account '{name}' changed stage meanwhile; try "
                       "again.", headers={"Retry-After": "1"})
    return _json(200, {"accountName": name, "previousApiKey": row.to_public()["previousApiKey"]})


# -- offboarding --------------------------------------------------------------------------------------

@bp.function_name("offboard_account")
@bp.route(route="accounts/{name}", methods=["DELETE"])
@_guarded
def offboard_account(req: func.HttpRequest) -> func.HttpResponse:
    """Offboard an account: 202 with a status URL (a new offboarding, or the one already under
    way); 200 when it was offboarded already; 404 when the product does not manage it. Options
    ``removeSshKey`` (default false), ``removeApiKey`` (default true), ``requestId`` (the ticket)."""
    from functions import dependencies
    from functions.auth import ADMIN_ROLE
    from shared.errors import IdempotencyConflictError
    from shared.models.fields import REQUEST_ID_PATTERN
    from shared.offboarding.intake import OffboardNow, offboard_now

    if (denied := _denied(req, ADMIN_ROLE)) is not None:
        return denied
    name = req.route_params.get("name", "")
    errors = [error for error in (_account_name_error(name, "name"),) if error is not None]
    flags: dict[str, bool] = {}
    for flag, default in (("removeSshKey", False), ("removeApiKey", True)):
        value = req.params.get(flag)
        if value not in (None, "true", "false"):
            errors.append({"path": flag, "message": "must be true or false"})
        flags[flag] = default if value is None else value == "true"
    request_id = req.params.get("requestId")
    if request_id is not None and not REQUEST_ID_PATTERN.fullmatch(request_id):
        errors.append({"path": "requestId", "message": "must be 1-64 characters: letters, digits, '.', '_' or '-'"})
    if errors:
        return _invalid_parameters(errors)
    deps: Dependencies = dependencies.get()
    try:
        outcome, offboarding = offboard_now(deps.clients, deps.queue, name, remove_ssh_key=flags["removeSshKey"],
                                            remove_api_key=flags["removeApiKey"], request_id=request_id)
    except IdempotencyConflictError as exc:
        if request_id is None:  # the id was made from the account's row: no parameter of the caller's to blame
            return problem(409, "Conflict", f"{exc} Send the same options, or name a requestId of your own.")
        return _request_id_conflict(f"{exc} Use another requestId, or the same options.",
                                    "names an offboarding with other options: use another requestId, or the "
                                    "same options")
    if outcome is OffboardNow.NOT_MANAGED:
        return problem(404, "Not Found", f"Account '{name}' is not one this product manages.")
    status_url = _url(req, f"onboardings/{offboarding}")
    record = deps.clients.state.get(offboarding) if offboarding else None
    status = record.status.value if record is not None else ("succeeded" if outcome is OffboardNow.DONE else "queued")
    return _json(200 if outcome is OffboardNow.DONE else 202,
                 {"id": offboarding, "status": status, "statusUrl": status_url}, headers={"Location": status_url})
