"""Rotation triggers: the daily sweep, Key Vault's near-expiry event, and the rotation routes.

All of them put a rotation request on the onboarding queue; the queue trigger carries it out
(shared/rotation). Routes (under ``/api``): ``POST rotations/{accountName}``, ``GET
rotations/{id}``, ``GET accounts``, ``GET accounts/{name}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.logs import bind, get_logger

if TYPE_CHECKING:
    from functions.dependencies import Dependencies

bp = func.Blueprint()
logger = get_logger(__name__)


@bp.function_name("rotation_sweep")
@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False)
def rotation_sweep(timer: func.TimerRequest, context: func.Context) -> None:
    from functions import dependencies
    from shared.rotation.sweep import sweep

    deps = dependencies.get()
    with bind(invocationId=context.invocation_id):
        report = sweep(deps.clients, deps.queue, deps.settings.pipeline.rotation)
        if report.errors and report.errors >= report.due:
            raise RuntimeError(f"The rotation sweep could not start any of {report.due} due accounts.")


@bp.function_name("drift_pass")
@bp.timer_trigger(arg_name="timer", schedule="%DRIFT_SCHEDULE%", run_on_startup=False)
def drift_pass(timer: func.TimerRequest, context: func.Context) -> None:
    """The full look at every managed account (shared/rotation/drift.py), daily by default."""
    from functions import dependencies
    from shared.rotation.drift import drift_pass as run_drift_pass

    deps = dependencies.get()
    with bind(invocationId=context.invocation_id):
        report = run_drift_pass(deps.clients, deps.queue, deps.settings.pipeline.rotation)
        if report.errors and report.errors >= report.accounts:
            raise RuntimeError(f"The drift pass could not check any of {report.accounts} accounts.")


@bp.function_name("rotation_near_expiry")
@bp.event_grid_trigger(arg_name="event")
def rotation_near_expiry(event: func.EventGridEvent, context: func.Context) -> None:
    """``Microsoft.KeyVault.SecretNearExpiry``: rotate the account now, if the event is current."""
    from functions import dependencies
    from shared.rotation.sweep import near_expiry

    deps = dependencies.get()
    with bind(invocationId=context.invocation_id):
        data = event.get_json()
        if event.event_type != "Microsoft.KeyVault.SecretNearExpiry" or not isinstance(data, dict):
            logger.info("rotation: ignored Event Grid event %s of type %s", event.id, event.event_type)
            return
        logger.info("rotation: %s", near_expiry(data, deps.clients, deps.queue, deps.settings.pipeline.rotation))


def _json(status: int, payload: Any, **headers: str) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json", headers=headers)


def _problem(status: int, title: str, detail: str, **extra: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail,
                                         **extra}), status_code=status, mimetype="application/problem+json")


def _denied(req: func.HttpRequest, *roles: str) -> func.HttpResponse | None:
    from functions.http_api import _denied as denied

    return denied(req, *roles)


@bp.function_name("start_rotation")
@bp.route(route="rotations/{accountName}", methods=["POST"])
def start_rotation(req: func.HttpRequest) -> func.HttpResponse:
    """Rotate an account's secret now: 202 with a status URL; 404 not managed; 409 when one runs."""
    from functions import dependencies
    from functions.auth import SUBMIT_ROLE
    from shared.models.fields import ACCOUNT_NAME_PATTERN
    from shared.rotation.sweep import RotateNow, rotate_now

    if (denied := _denied(req, SUBMIT_ROLE)) is not None:
        return denied
    name = req.route_params.get("accountName", "")
    if not ACCOUNT_NAME_PATTERN.fullmatch(name):
        return _problem(400, "Invalid accountName", "accountName must be 3-64 lower-case letters, digits or '-'.",
                        errors=[{"path": "accountName", "message": "must be 3-64 characters: lower-case letters, "
                                                                  "digits or '-', starting with a letter"}])
    deps: Dependencies = dependencies.get()
    outcome, rotation = rotate_now(deps.clients, deps.queue, name)
    if outcome is RotateNow.NOT_MANAGED:
        return _problem(404, "Not found", f"Account '{name}' is not one this product manages.")
    url = _status_url(req, rotation)
    if outcome is RotateNow.IN_FLIGHT:
        return _problem(409, "Rotation in progress", f"A rotation of account '{name}' is running: {rotation}.",
                        runningRotationId=rotation, statusUrl=url)
    return _json(202, {"id": rotation, "status": "queued", "statusUrl": url}, Location=url)


@bp.function_name("get_rotation")
@bp.route(route="rotations/{id}", methods=["GET"])
def get_rotation(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READ_ROLE, SUBMIT_ROLE
    from shared.models.fields import REQUEST_ID_PATTERN

    if (denied := _denied(req, READ_ROLE, SUBMIT_ROLE)) is not None:
        return denied
    rotation = req.route_params.get("id", "")
    record = dependencies.get().clients.state.get(rotation) if REQUEST_ID_PATTERN.fullmatch(rotation) else None
    if record is None or not rotation.startswith("rot-"):
        return _problem(404, "Not found", f"No rotation has the id {rotation!r}.")
    return _json(200, {**record.to_public(), "operation": "rotate"})


def _status_url(req: func.HttpRequest, rotation: str) -> str:
    return req.url.split("/api/")[0] + f"/api/rotations/{rotation}"


@bp.function_name("list_accounts")
@bp.route(route="accounts", methods=["GET"])
def list_accounts(req: func.HttpRequest) -> func.HttpResponse:
    """The inventory, a page at a time: ``dueWithinDays``, ``drift``, ``failed`` filters; ``top``
    and ``continuationToken`` page by the table's own continuation."""
    import datetime as dt

    from functions import dependencies
    from functions.auth import READ_ROLE, SUBMIT_ROLE
    from shared.state.records import iso, utcnow

    if (denied := _denied(req, READ_ROLE, SUBMIT_ROLE)) is not None:
        return denied
    errors = []
    where: list[str] = []
    parameters: dict[str, Any] = {}
    due = req.params.get("dueWithinDays")
    if due is not None:
        if not due.isdigit() or not 0 <= int(due) <= 3650:
            errors.append({"path": "dueWithinDays", "message": "must be a whole number of days from 0 to 3650"})
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
    if not top_text.isdigit() or not 1 <= int(top_text) <= 1000:
        errors.append({"path": "top", "message": "must be a whole number from 1 to 1000"})
    if errors:
        return _problem(400, "Invalid filter", "; ".join(f"{e['path']} {e['message']}" for e in errors),
                        errors=errors)
    try:
        rows, token = dependencies.get().clients.inventory.page(
            " and ".join(where), parameters, top=int(top_text), continuation=req.params.get("continuationToken"))
    except ValueError as exc:
        return _problem(400, "Invalid continuationToken", str(exc),
                        errors=[{"path": "continuationToken", "message": str(exc)}])
    return _json(200, {"items": [row.to_public() for row in rows], "continuationToken": token})


@bp.function_name("get_account")
@bp.route(route="accounts/{name}", methods=["GET"])
def get_account(req: func.HttpRequest) -> func.HttpResponse:
    from functions import dependencies
    from functions.auth import READ_ROLE, SUBMIT_ROLE
    from shared.models.fields import ACCOUNT_NAME_PATTERN

    if (denied := _denied(req, READ_ROLE, SUBMIT_ROLE)) is not None:
        return denied
    name = req.route_params.get("name", "")
    row = dependencies.get().clients.inventory.get(name) if ACCOUNT_NAME_PATTERN.fullmatch(name) else None
    if row is None:
        return _problem(404, "Not found", f"Account {name!r} is not one this product manages.")
    return _json(200, row.to_public())
