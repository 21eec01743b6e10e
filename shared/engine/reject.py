"""A message whose body is not a valid request: nothing is made anywhere. The refusal is recorded
(when the body names a usable requestId) and announced, so the ticket hears why; a corrected body
may later replace it under the same requestId (a ticket is not burned by a typo)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from shared.engine.claim import announce
from shared.engine.outcome import Outcome, OutcomeKind
from shared.engine.plan import build_document
from shared.logs import bind, get_logger
from shared.state import ConcurrentUpdateError, RequestRecord, RequestStatus, StepOutcome, StepRecord, retry
from shared.state.records import INVALID_FINGERPRINT_PREFIX, iso, utcnow

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Mapping

    from shared.engine.plan import Plan
    from shared.errors import RequestValidationError
    from shared.services import Services

logger = get_logger(__name__)

#: At most this many field errors travel in a ``failed`` event (all of them are in the HTTP answer).
MAX_EVENT_ERRORS = 20


def reject(plan: Plan, body: bytes | str | Mapping[str, Any], exc: RequestValidationError, clients: Services, *,
           message_id: str, checkpoint: Callable[[str], None], enqueued_at: dt.datetime | None = None) -> Outcome:
    """Record and announce why ``body`` was refused; DUPLICATE when this very body was refused before.

    A body with no usable requestId (not JSON, not an object) has no row and no ticket to name: its
    event and log line carry the Service Bus message's id and enqueued time instead, so an operator
    can find the message.
    """
    from shared.models import identity_of

    request_id, account_name = identity_of(body)
    errors = [e.as_dict() for e in exc.errors]
    message = str(exc)
    digest = digest_of(body)
    data: dict[str, Any] = {"reason": "invalid_request", "message": message, "errors": errors[:MAX_EVENT_ERRORS]}
    if len(errors) > MAX_EVENT_ERRORS:
        data["moreErrors"] = len(errors) - MAX_EVENT_ERRORS
    kind = OutcomeKind.REJECTED
    with bind(requestId=request_id):
        if request_id is None:
            # Nothing to record it under: the event id is this message's own, so a second bad
            # message is not taken for a duplicate of the first.
            data.update(message_of(message_id, enqueued_at))
            announce(clients, build_document("unknown", account_name or "unknown", plan.failed_event, "check",
                                             "failed", discriminator=f"invalid:{message_id}:{digest}", **data))
            logger.warning("message %s (enqueued %s) rejected, no valid requestId: %s", message_id or "(no id)",
                           data.get("enqueuedTime", "at an unknown time"), message)
            return Outcome(OutcomeKind.REJECTED, "", "invalid_request", message, errors=errors)
        event = build_document(request_id, account_name or "unknown", plan.failed_event, "check", "failed",
                               discriminator=f"invalid:{digest}", **data)
        if not _record(request_id, account_name or "", f"{INVALID_FINGERPRINT_PREFIX}{digest}", event, message,
                       clients, checkpoint):
            kind = OutcomeKind.DUPLICATE
        logger.warning("request %s rejected: %s", request_id, message)
    return Outcome(kind, request_id, "invalid_request", message, errors=errors)


def _record(request_id: str, account_name: str, fingerprint: str, event: dict[str, Any], message: str,
            clients: Services, checkpoint: Callable[[str], None]) -> bool:
    """Record the rejection in the row of a ticket never started (creating or replacing it) and
    send its event; for a ticket that runs under a valid body, only announce it. False when this
    very body was recorded before (a redelivery)."""
    store = clients.state

    def rejected(base: RequestRecord | None) -> RequestRecord:
        record = (base.fresh(account_name=account_name, fingerprint=fingerprint, request="") if base
                  else RequestRecord(request_id=request_id, account_name=account_name, fingerprint=fingerprint))
        record.status = RequestStatus.FAILED
        record.current_step = "check"
        record.steps["check"] = StepRecord(StepOutcome.FAILED, iso(utcnow()), "invalid_request")
        record.error_reason, record.error_message = "invalid_request", message
        record.record_event(event)
        return record

    record = store.get(request_id)
    if record is None:
        try:
            record = store.create(rejected(None))
        except ConcurrentUpdateError:
            record = store.get(request_id)
        else:
            checkpoint("rejected.saved")
            store.flush(record, clients.events)
            return True
    seen = {"again": False, "valid": False}

    def replace(row: RequestRecord) -> None:
        if not row.rejected:
            seen["valid"] = True  # a valid ticket's row: leave it alone
            raise retry.Unchanged
        if row.fingerprint == fingerprint:
            seen["again"] = True  # this body again: only what is still unsent goes out
            raise retry.Unchanged
        fresh = rejected(row)
        row.__dict__.update(fresh.__dict__)  # another invalid body, never started: it replaces the first

    record = retry.update(record, replace, write=store.replace, read=lambda: store.get(request_id))
    if seen["valid"]:
        announce(clients, event)
        return True
    checkpoint("rejected.saved")
    if record is not None:
        store.flush(record, clients.events)
    return not seen["again"]


def message_of(message_id: str, enqueued_at: dt.datetime | None) -> dict[str, str]:
    """The ``messageId`` and ``enqueuedTime`` (RFC 3339, UTC) an event carries for a queue message
    that names no request; each only where it is known."""
    from shared.models.fields import as_utc

    found = {"messageId": message_id} if message_id else {}
    if enqueued_at is not None:
        found["enqueuedTime"] = iso(as_utc(enqueued_at))
    return found


def digest_of(body: bytes | str | Mapping[str, Any]) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
    elif isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    else:
        raw = json.dumps(body, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]
