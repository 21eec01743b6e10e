"""The one registry of operations: which plan a request body asks for.

The engine (:mod:`shared.engine`) runs any :class:`~shared.engine.plan.Plan` and imports none of
them; the triggers come here, and this module hands the engine the plan a body names.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    from shared.clients.queue import RequestQueue
    from shared.dryrun import DryRun
    from shared.engine.delivery import Checkpoint
    from shared.engine.outcome import Outcome
    from shared.engine.plan import Plan
    from shared.engine.sweeper import SweepReport
    from shared.services import Services
    from shared.settings import PipelineConfig, SweepConfig

#: Every operation a request may name, and where its plan lives (imported on first use).
OPERATIONS = ("onboard", "rotate", "renewApiKey", "offboard")


class ListedOperation(StrEnum):
    """What ``GET /api/onboardings?operation=`` lists: by its name, or by the requests' own name for
    it (each listed item's ``operation``). A rotation is also an API key's renewal, which the
    rotation sweep starts the same way."""

    ONBOARDING = "onboarding"
    ROTATION = "rotation"
    OFFBOARDING = "offboarding"
    ONBOARD = "onboard"
    ROTATE = "rotate"
    OFFBOARD = "offboard"

    @property
    def operations(self) -> tuple[str, ...]:
        """The requests' operations (of :data:`OPERATIONS`) listed under this name."""
        if self in (ListedOperation.ROTATION, ListedOperation.ROTATE):
            return ("rotate", "renewApiKey")
        if self in (ListedOperation.OFFBOARDING, ListedOperation.OFFBOARD):
            return ("offboard",)
        return ("onboard",)


def plan_named(operation: str) -> Plan:
    """The plan of ``operation`` (onboarding for a name it does not know: the schema then says why)."""
    if operation == "rotate":
        from shared.rotation.plan import ROTATION

        return ROTATION
    if operation == "renewApiKey":
        from shared.rotation.apikeys import API_KEY_RENEWAL

        return API_KEY_RENEWAL
    if operation == "offboard":
        from shared.offboarding.plan import OFFBOARDING

        return OFFBOARDING
    from shared.onboarding.plan import ONBOARDING

    return ONBOARDING


def plan_for(body: bytes | str | Mapping[str, Any]) -> Plan:
    """The plan a body asks for, by its ``operation`` (onboarding unless it says otherwise)."""
    from shared.models.parsing import operation_of

    return plan_named(operation_of(body))


def process_request(body: bytes | str | Mapping[str, Any], clients: Services, config: PipelineConfig, *,
                    owner: str, message_id: str = "", retry_token: str = "", row_expected: bool = False,
                    checkpoint: Checkpoint | None = None, enqueued_at: dt.datetime | None = None) -> Outcome:
    """Run (or resume) one delivery of the request ``body`` names (see
    :func:`shared.engine.delivery.process_request`)."""
    from shared.engine.delivery import process_request as run

    return run(plan_for(body), body, clients, config, owner=owner, message_id=message_id,
               retry_token=retry_token, row_expected=row_expected, checkpoint=checkpoint, enqueued_at=enqueued_at)


def sweep(clients: Services, queue: RequestQueue, config: SweepConfig, *, pipeline: PipelineConfig | None = None,
          background_queue: RequestQueue | None = None, now: dt.datetime | None = None) -> SweepReport:
    """The sweeper's pass (:func:`shared.engine.sweeper.sweep`), with every operation's plan."""
    from shared.engine.sweeper import sweep as run
    from shared.settings import PipelineConfig

    return run(clients, queue, config, pipeline=pipeline or PipelineConfig(), plan_for=plan_for,
               background_queue=background_queue, now=now)


def handle_dead_letter(body: bytes | str | Mapping[str, Any], clients: Services, *, message_id: str, reason: str,
                       description: str, pipeline: PipelineConfig | None = None,
                       enqueued_at: dt.datetime | None = None) -> Outcome:
    """A message Service Bus dead-lettered (:func:`shared.engine.sweeper.handle_dead_letter`)."""
    from shared.engine.sweeper import handle_dead_letter as handle
    from shared.settings import PipelineConfig

    return handle(body, clients, pipeline or PipelineConfig(), plan_for=plan_for, message_id=message_id,
                  reason=reason, description=description, enqueued_at=enqueued_at)


def dry_run(body: bytes | str | Mapping[str, Any], clients: Services, *, allow_inline_secret: bool,
            config: PipelineConfig) -> DryRun:
    """``POST /api/onboardings/validate``: what submitting ``body`` would do, with no side effect."""
    from shared.models.parsing import operation_of

    if operation_of(body) == "offboard":
        from shared.offboarding.intake import preview

        return preview(body, clients)
    from shared.onboarding.intake import dry_run as onboarding_dry_run

    return onboarding_dry_run(body, clients, allow_inline_secret=allow_inline_secret, config=config)
