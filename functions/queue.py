"""Service Bus queue triggers: onboarding requests from ticketing systems (the ``onboarding``
queue, with offboardings and the rotations someone asked for), the product's own background work
(the ``background`` queue: timed rotations and API key renewals, which must never hold an
onboarding up), and the messages Service Bus gave up on (each queue's dead-letter queue)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import TYPE_CHECKING

import azure.functions as func

from shared.logs import bind, get_logger

if TYPE_CHECKING:
    from shared.clients.queue import RequestQueue

bp = func.Blueprint()
logger = get_logger(__name__)


@bp.function_name("onboarding_queue")
@bp.service_bus_queue_trigger(arg_name="message", queue_name="%ONBOARDING_QUEUE%",
                              connection="ServiceBusConnection")
def onboarding_queue(message: func.ServiceBusMessage, context: func.Context) -> None:
    """Run or resume one onboarding, offboarding or rotation asked for (see :func:`_run`)."""
    from functions import dependencies

    _run(message, context, dependencies.get().queue)


@bp.function_name("background_queue")
@bp.service_bus_queue_trigger(arg_name="message", queue_name="%BACKGROUND_QUEUE%",
                              connection="ServiceBusConnection")
def background_queue(message: func.ServiceBusMessage, context: func.Context) -> None:
    """Run or resume one timed rotation or API key renewal (see :func:`_run`)."""
    from functions import dependencies

    _run(message, context, dependencies.get().background_queue)


def _run(message: func.ServiceBusMessage, context: func.Context, queue: RequestQueue) -> None:
    """Permanent failures are recorded, announced and completed; when the request must wait, a
    delayed copy is scheduled on the queue the message came from and this one completes; anything
    unexpected raises, so the host abandons the message and Service Bus redelivers it."""
    from functions import dependencies
    from shared.engine.enqueue import RECORDED, recorded
    from shared.operations import process_request

    deps = dependencies.get()
    properties = message.application_properties or {}
    body = message.get_body()
    retry_token = str(properties.get("retryToken") or "")
    with bind(messageId=message.message_id, invocationId=context.invocation_id):
        began = time.monotonic()
        outcome = process_request(body, deps.clients, deps.settings.pipeline, owner=context.invocation_id,
                                  message_id=message.message_id or "", retry_token=retry_token,
                                  row_expected=bool(retry_token) or str(properties.get(RECORDED)) == "true"
                                  or (message.delivery_count or 0) > 1, enqueued_at=message.enqueued_time_utc)
        logger.info("request %s: %s in %.1f s (delivery %s)%s", outcome.request_id or _unnamed(message),
                    outcome.kind.value, time.monotonic() - began, message.delivery_count,
                    f": {outcome.reason}" if outcome.reason else "")
        if outcome.retry_in_seconds is not None:
            at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=outcome.retry_in_seconds)
            queue.schedule(json.loads(body), message_id=f"{outcome.request_id}/{outcome.kind.value}/"
                           f"{uuid.uuid4().hex[:8]}", at=at, application_properties=recorded(outcome.retry_token or ""))


@bp.function_name("onboarding_dead_letters")
@bp.service_bus_queue_trigger(arg_name="message", queue_name="%ONBOARDING_QUEUE%/$DeadLetterQueue",
                              connection="ServiceBusConnection")
def onboarding_dead_letters(message: func.ServiceBusMessage, context: func.Context) -> None:
    """A message Service Bus dead-lettered: fail its request with the reason and announce it."""
    _dead_letter(message, context)


@bp.function_name("background_dead_letters")
@bp.service_bus_queue_trigger(arg_name="message", queue_name="%BACKGROUND_QUEUE%/$DeadLetterQueue",
                              connection="ServiceBusConnection")
def background_dead_letters(message: func.ServiceBusMessage, context: func.Context) -> None:
    """A background message Service Bus dead-lettered: the same as the onboarding queue's."""
    _dead_letter(message, context)


def _dead_letter(message: func.ServiceBusMessage, context: func.Context) -> None:
    from functions import dependencies
    from shared.operations import handle_dead_letter

    deps = dependencies.get()
    properties = message.application_properties or {}
    # The Service Bus extension passes the dead-letter reason in the message's application
    # properties, not as trigger metadata: read them there first.
    reason = str(properties.get("DeadLetterReason") or message.dead_letter_reason or "")
    description = str(properties.get("DeadLetterErrorDescription") or message.dead_letter_error_description or "")
    with bind(messageId=message.message_id, invocationId=context.invocation_id):
        outcome = handle_dead_letter(message.get_body(), deps.clients, message_id=message.message_id or "",
                                     reason=reason, description=description, pipeline=deps.settings.pipeline,
                                     enqueued_at=message.enqueued_time_utc)
        logger.warning("dead-lettered message %s of request %s: %s (%s)", message.message_id,
                       outcome.request_id or "(none)", reason or "no reason given", outcome.kind.value)


def _unnamed(message: func.ServiceBusMessage) -> str:
    """What a log line calls a message that names no request: its Service Bus id and enqueued time."""
    enqueued = message.enqueued_time_utc
    return (f"(none: message {message.message_id or '(no id)'}, enqueued "
            f"{enqueued.isoformat() if enqueued is not None else 'at an unknown time'})")
