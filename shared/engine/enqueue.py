"""Put work the product starts itself (a rotation) on the queue the way the HTTP intake does: the
state row first, with the request as queued, then the message, under the requestId. A failed send
leaves a ``queued`` row the sweeper sends again; the queue's duplicate detection drops a second
copy; the same requestId with another body is refused, unless its request was refused at its check
(:mod:`shared.engine.admission`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.engine.admission import Admission, admission, conflict_message, restart
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
    queue.send(json.loads(record.request), message_id=message_id or message_id_of(record),
               application_properties=recorded(retry_token))


def message_id_of(record: RequestRecord) -> str:
    """The queue message id of a request's run: its requestId for the first run, and
    ``<requestId>/run/<n>`` for a later one (a refused request run again), which the queue's
    duplicate detection must not drop as a copy of the first run's message."""
    return record.request_id if record.run <= 1 else f"{record.request_id}/run/{record.run}"


def enqueue(clients: Services, queue: RequestQueue, plan: Plan, request: Any) -> tuple[RequestRecord, bool]:
    """Record and send ``request``; returns its row and whether this call made it.

    Raises
    ------
    IdempotencyConflictError
        The requestId is taken by another body (:mod:`shared.engine.admission`).
    shared.errors.ConcurrentUpdateError
        Another writer replaced the row of a refused request at the same moment; try again.
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
        admitted = admission(existing, fingerprint)
        if admitted is Admission.CONFLICT:
            raise IdempotencyConflictError(conflict_message(existing)) from None
        if admitted is Admission.SAME:
            record, created = existing, False
        else:  # an invalid body's row, or a request refused at its check: this body runs
            record = clients.state.replace(restart(existing, admitted, account_name=request.account_name,
                                                   fingerprint=fingerprint, request=plan.queued(request)))
            created = True
    if record.status is RequestStatus.QUEUED:
        send_recorded(queue, record)
    return record, created
