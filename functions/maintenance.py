"""Timer triggers that keep the product's state healthy."""

from __future__ import annotations

import azure.functions as func

from shared.logs import bind, get_logger

bp = func.Blueprint()
logger = get_logger(__name__)


@bp.function_name("sweep_onboardings")
@bp.timer_trigger(arg_name="timer", schedule="%SWEEP_SCHEDULE%", run_on_startup=False)
def sweep_onboardings(timer: func.TimerRequest, context: func.Context) -> None:
    """Re-drive stuck requests, send events still pending, finish pending cleanup (see
    :mod:`shared.engine.sweeper`)."""
    from functions import dependencies
    from shared.operations import sweep

    deps = dependencies.get()
    with bind(invocationId=context.invocation_id):
        if timer.past_due:
            logger.info("sweep: running late")
        report = sweep(deps.clients, deps.queue, deps.settings.sweep, pipeline=deps.settings.pipeline,
                       background_queue=deps.background_queue)
        if report.errors and report.errors == report.looked_at:
            raise RuntimeError(f"The sweep could not handle any of {report.looked_at} rows; see the warnings.")
