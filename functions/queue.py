"""Service Bus queue trigger: onboarding requests from ticketing systems."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import azure.functions as func

bp = func.Blueprint()
logger = logging.getLogger(__name__)


@bp.function_name("onboarding_queue")
@bp.service_bus_queue_trigger(arg_name="message", queue_name="%ONBOARDING_QUEUE%",
                              connection="ServiceBusConnection")
def onboarding_queue(message: func.ServiceBusMessage) -> None:
    """Run or resume one onboarding. Permanent failures are recorded, announced and completed;
    when a dependency stays down, a delayed copy is scheduled and this one completes; anything
    unexpected raises, so the host abandons the message and Service Bus redelivers it."""
    from functions import dependencies
    from shared.pipeline import OutcomeKind, process_request

    deps = dependencies.get()
    properties = message.application_properties or {}
    attempt = int(properties.get("attempt", 0) or 0)
    owner = f"{message.message_id}/{message.delivery_count}/{uuid.uuid4().hex[:8]}"
    body = message.get_body()
    outcome = process_request(body, deps.clients, deps.settings.pipeline, owner=owner, attempt=attempt)
    logger.info("request %s: %s %s", outcome.request_id, outcome.kind.value, outcome.reason)
    if outcome.kind in (OutcomeKind.RETRY_LATER, OutcomeKind.BUSY) and outcome.retry_in_seconds:
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=outcome.retry_in_seconds)
        next_attempt = outcome.attempt if outcome.kind is OutcomeKind.RETRY_LATER else attempt
        message_id = f"{outcome.request_id}/{outcome.kind.value}/{uuid.uuid4().hex[:8]}"
        deps.queue.schedule(json.loads(body), message_id=message_id, at=at,
                            application_properties={"attempt": next_attempt})
