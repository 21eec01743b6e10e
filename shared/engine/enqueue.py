"""Put work the product starts itself (a rotation) on the queue the way the HTTP intake does: the
state row first, with the request as queued, then the message, under the requestId. A failed send
leaves a ``queued`` row the sweeper sends again; the queue's duplicate detection drops a second
copy; the same requestId with another body is refused.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.errors import IdempotencyConflictError
from shared.state import ConcurrentUpdateError, RequestRecord, RequestStatus

if TYPE_CHECKING:
    from shared.clients.queue import RequestQueue
    from shared.engine.plan import Plan
    from shared.services import Services

#: Set on every message the product sends for a request whose state row it wrote first: the
#: delivery reads that row at once instead of trying to insert one (``process_request(row_expected=)``).
RECORDED = "stateRecorded"


def recorded(retry_token: str = "") -> dict[str, str | int]:
    """The application properties of a message about a recorded request."""
    return {RECORDED: "true", **({"retryToken": retry_token} if retry_token else {})}


def send_recorded(queue: RequestQueue, record: RequestRecord, *, message_id: str = "",
                  retry_token: str = "") -> None:
    """Send the request a state row holds (as queued), marked as recorded."""
    queue.send(json.loads(record.request), message_id=message_id or record.request_id,
               application_properties=recorded(retry_token))


def enqueue(clients: Services, queue: RequestQueue, plan: Plan, request: Any) -> tuple[RequestRecord, bool]:
    """Record and send ``request``; returns its row and whether this call made it.

    Raises
    ------
    IdempotencyConflictError
        The requestId is taken by another body.
    azure.servicebus.exceptions.ServiceBusError
        The send failed (the row stays ``queued``; the sweeper sends it again).
    """
    fingerprint = plan.fingerprint(request)
    record = RequestRecord(request_id=request.request_id, account_name=request.account_name,
                              fingerprint=fingerprint, request=plan.queued(request), status=RequestStatus.QUEUED,
                              current_step="queued")
    try:
        record = clients.state.create(record)
        created = True
    except ConcurrentUpdateError:
        existing = clients.state.get(request.request_id)
        if existing is None:
            raise
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                f"Request {request.request_id} already exists with another body.") from None
        record, created = existing, False
    if record.status is RequestStatus.QUEUED:
        send_recorded(queue, record)
    return record, created
