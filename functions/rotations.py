"""Rotation triggers: the daily sweep, Key Vault's near-expiry event, and the drift pass.

The sweep and the event put a rotation request (and the sweep an API key renewal) on the
background queue, whose trigger carries it out (shared/rotation); a rotation the drift pass or a
person asks for goes on the onboarding queue. The rotation and inventory routes are in
functions/http_api.py.
"""

from __future__ import annotations

import azure.functions as func

from shared.logs import bind, get_logger

bp = func.Blueprint()
logger = get_logger(__name__)


@bp.function_name("rotation_sweep")
@bp.timer_trigger(arg_name="timer", schedule="%ROTATION_SCHEDULE%", run_on_startup=False)
def rotation_sweep(timer: func.TimerRequest, context: func.Context) -> None:
    from functions import dependencies
    from shared.rotation.sweep import sweep

    deps = dependencies.get()
    with bind(invocationId=context.invocation_id):
        report = sweep(deps.clients, deps.background_queue, deps.settings.pipeline.rotation)
        if report.errors and report.errors >= report.due:
            raise RuntimeError(f"The rotation sweep could not start any of {report.due} due accounts.")


@bp.function_name("drift_pass")
@bp.timer_trigger(arg_name="timer", schedule="%DRIFT_SCHEDULE%", run_on_startup=False)
def drift_pass(timer: func.TimerRequest, context: func.Context) -> None:
    """The drift pass's slice of the managed accounts that fell due (shared/rotation/drift.py), hourly."""
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
        logger.info("rotation: %s", near_expiry(data, deps.clients, deps.background_queue,
                                                 deps.settings.pipeline.rotation))
