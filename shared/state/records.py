"""What the state row of one onboarding request holds. Never a secret value: ids and uids only.

The row is also the request's outbox: an event the pipeline decides on is appended to
``outbox`` in the same write that records the state change causing it, and leaves the outbox only
once the topic has taken it. So a crash or a topic outage between the two can delay an event, never
lose it; and since event ids are stable, sending one twice is harmless (the topic's duplicate
detection drops the second copy).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


class RequestStatus(StrEnum):
    QUEUED = "queued"        # accepted over HTTP and put on the queue; no delivery has started
    RUNNING = "running"      # a delivery holds (or held) the lease and works on it
    WAITING = "waiting"      # paused until ``due_at``: a dependency was down, or the account was busy
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.SUCCEEDED, RequestStatus.FAILED)


#: The one state machine of a request's status. A failed request whose body was invalid, or that
#: was refused at its check, is not resumed but replaced by a new record for a corrected body
#: (:meth:`RequestRecord.fresh`, :meth:`RequestRecord.rerun`), which starts at QUEUED or RUNNING.
TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.QUEUED: frozenset({RequestStatus.RUNNING, RequestStatus.FAILED}),
    RequestStatus.RUNNING: frozenset({RequestStatus.RUNNING, RequestStatus.WAITING, RequestStatus.SUCCEEDED,
                                      RequestStatus.FAILED}),
    RequestStatus.WAITING: frozenset({RequestStatus.RUNNING, RequestStatus.WAITING, RequestStatus.FAILED}),
    RequestStatus.SUCCEEDED: frozenset(),
    RequestStatus.FAILED: frozenset(),
}


class InvalidTransitionError(RuntimeError):
    """A bug: the code asked for a status change the state machine does not allow."""


class StepOutcome(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


#: The fingerprint prefix of a row recorded for a body that failed validation; such a row can be
#: replaced by a valid body with the same requestId (a corrected resend of the ticket).
INVALID_FINGERPRINT_PREFIX = "invalid:"


def _flag(text: str) -> bool | str:
    """``"true"`` or ``"false"`` as a boolean (anything else, never written, as it is kept)."""
    return {"true": True, "false": False}.get(text, text)


def _number(text: str) -> int | str:
    """A whole number as a number (anything else, never written, as it is kept)."""
    return int(text) if text.isdigit() else text


#: Results that mean a flag or a number. Every result is kept as text (``"true"``, ``"180"``);
#: :meth:`RequestRecord.to_public` answers these as JSON booleans and numbers. Written by the
#: onboarding (``sshKeyOwned``) and by rotation and API key renewal (``lifetimeDays``).
TYPED_RESULTS: dict[str, Callable[[str], Any]] = {"sshKeyOwned": _flag, "lifetimeDays": _number}


@dataclass
class StepRecord:
    outcome: StepOutcome
    at: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "at": self.at, "detail": self.detail}


@dataclass
class RequestRecord:
    """The state of one request.

    ``results`` holds what later steps and retries need: Palette uids, the Graph keyId, Key Vault
    secret ids, and markers written *before* a call that creates something (so a retry knows the
    call may have happened and looks for its result before calling again). ``request`` is the
    request as queued (JSON, never a raw secret), kept so that the sweeper can re-drive a row
    whose message was lost. ``outbox`` holds the events recorded but not yet confirmed sent;
    ``event_ids`` every event id ever recorded for the request, so none is recorded twice.
    ``made`` is what the request made or may have made (:mod:`shared.made`), keyed by the plan:
    written by a fence before the call that makes it. ``cleanup`` lists what a failed request made
    and could not take back yet (the sweeper retries), in the same form. ``stop`` is a failure
    asked for while a delivery held the lease (by the dead-letter handler or the sweeper): the
    holder stops at its next fence or step and fails the request with it. ``finishing`` says the
    request passed its last check and is recording its end (the inventory, then ``succeeded``):
    from then on nobody asks it to stop, and whoever takes it over finishes it. ``run`` counts the
    runs of the requestId: 1, and one more each time a refused request is run again with a
    corrected body (:meth:`rerun`); the events of a later run have ids of their own.
    """

    request_id: str
    account_name: str
    fingerprint: str
    status: RequestStatus = RequestStatus.RUNNING
    current_step: str = ""
    steps: dict[str, StepRecord] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    request: str = ""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    made: dict[str, dict[str, Any]] = field(default_factory=dict)
    cleanup: list[dict[str, Any]] = field(default_factory=list)
    stop: dict[str, str] = field(default_factory=dict)
    finishing: bool = False
    error_reason: str = ""
    error_message: str = ""
    lease_owner: str = ""
    lease_expires_at: str = ""
    due_at: str = ""
    retry_token: str = ""
    attempts: int = 0
    defects: int = 0
    redrives: int = 0
    run: int = 1
    created_at: str = ""
    updated_at: str = ""
    etag: str | None = None

    # -- reading --------------------------------------------------------------------------------

    def step_done(self, step: str) -> bool:
        record = self.steps.get(step)
        return record is not None and record.outcome in (StepOutcome.SUCCEEDED, StepOutcome.SKIPPED)

    def lease_active(self, now: dt.datetime) -> bool:
        expires = parse_iso(self.lease_expires_at)
        return bool(self.lease_owner) and expires is not None and expires > now

    def due(self, now: dt.datetime) -> bool:
        """Whether a waiting request may resume now (a record that is not waiting always may)."""
        due_at = parse_iso(self.due_at)
        return self.status is not RequestStatus.WAITING or due_at is None or due_at <= now

    @property
    def rejected(self) -> bool:
        """Recorded for a body that failed validation (replaceable by a valid one)."""
        return self.fingerprint.startswith(INVALID_FINGERPRINT_PREFIX)

    # -- changing -------------------------------------------------------------------------------

    def move_to(self, status: RequestStatus) -> None:
        if status is not self.status and status not in TRANSITIONS[self.status]:
            raise InvalidTransitionError(
                f"Request {self.request_id} cannot go from {self.status.value} to {status.value}.")
        self.status = status

    def record_event(self, event: dict[str, Any]) -> bool:
        """Put an event (structured-mode CloudEvent JSON) in the outbox unless it was recorded before.

        An event of a later run gets that run's id (:func:`shared.clients.events.of_run`): the ids
        derived from the requestId, the type and the step are the first run's, already recorded
        here and seen by the topic's duplicate detection, so the run's own ``requested``,
        ``failed`` or ``validated`` would otherwise be dropped as a copy.
        """
        if self.run > 1:
            from shared.clients.events import of_run

            event = of_run(event, self.run)
        event_id = str(event["id"])
        if event_id in self.event_ids:
            return False
        self.event_ids.append(event_id)
        self.outbox.append(event)
        return True

    def confirm_sent(self, event_ids: set[str]) -> None:
        self.outbox = [event for event in self.outbox if event["id"] not in event_ids]

    def release_lease(self) -> None:
        self.lease_owner = self.lease_expires_at = ""

    # -- views ----------------------------------------------------------------------------------

    def to_public(self) -> dict[str, Any]:
        """The view for the HTTP API and the demo (no lease internals)."""
        return {
            "requestId": self.request_id,
            "accountName": self.account_name,
            "status": self.status.value,
            "currentStep": self.current_step,
            "steps": {name: step.as_dict() for name, step in self.steps.items()},
            "palette": {k: TYPED_RESULTS.get(k, str)(v) for k, v in self.results.items() if not k.startswith("_")},
            "error": ({"reason": self.error_reason, "message": self.error_message}
                      if self.error_reason else None),
            "attempts": self.attempts,
            "run": self.run,
            "resumesAt": self.due_at or None if self.status is RequestStatus.WAITING else None,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    @property
    def operation(self) -> str:
        """The operation of the request as queued (``onboard`` when it names none)."""
        try:
            value = json.loads(self.request).get("operation") if self.request else None
        except (ValueError, AttributeError):
            value = None
        return value if isinstance(value, str) and value else "onboard"

    def copy(self) -> RequestRecord:
        return copy.deepcopy(self)

    def fresh(self, *, account_name: str, fingerprint: str, request: str) -> RequestRecord:
        """A new record for the same requestId that keeps only what must survive: the ETag (to
        replace the row), the run, the ids of events already recorded and any events still unsent."""
        return RequestRecord(request_id=self.request_id, account_name=account_name, fingerprint=fingerprint,
                                request=request, outbox=list(self.outbox), event_ids=list(self.event_ids),
                                run=self.run, created_at=self.created_at, etag=self.etag)

    def rerun(self, *, account_name: str, fingerprint: str, request: str) -> RequestRecord:
        """The next run of a refused request under its requestId, with the corrected body: a
        :meth:`fresh` record numbered one more, so its events get ids of their own."""
        record = self.fresh(account_name=account_name, fingerprint=fingerprint, request=request)
        record.run = self.run + 1
        return record
