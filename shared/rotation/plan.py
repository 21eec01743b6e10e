"""The rotation plan for the runner: plan ── rotate ── prune, then the inventory.

A rotation holds the same account lease an onboarding of the account takes, so a rotation and an
onboarding (or two rotations) of one account never run at once. It announces
``palette.onboarding.secret.rotated`` when the new secret is in Palette and Key Vault (and the other
holders of it the product may change), ``palette.onboarding.rotation.blocked`` when a holder it may
not change keeps the older passwords on the app, and ``palette.onboarding.rotation.failed`` (with a
reason a person can act on) when it stops; either way Palette is left on a secret that works, and
the next run retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.engine.plan import Finish, Plan
from shared.rotation import models, steps

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.engine.record import RecordHandle
    from shared.services import Services
    from shared.settings import PipelineConfig


def _parse(body: bytes | str | Mapping[str, Any], config: PipelineConfig) -> models.RotationRequest:
    return models.parse_rotation(dict(body) if not isinstance(body, bytes | str) else body)


def _context(request: models.RotationRequest, clients: Services, config: PipelineConfig,
             handle: RecordHandle) -> steps.RotationContext:
    return steps.RotationContext(request=request, clients=clients, config=config, handle=handle)


def _lease_names(request: models.RotationRequest) -> list[str]:
    return [f"account:{request.account_name}"]


def _finish(ctx: steps.RotationContext) -> Finish:
    reason = ctx.result(steps.SKIPPED)
    return Finish(step="inventory", detail=f"skipped: {reason}" if reason else "inventory updated",
                  then=lambda: steps.record_rotation(ctx))


ROTATION = Plan(
    operation="rotate",
    parse=_parse,
    fingerprint=models.fingerprint,
    queued=models.queued,
    lease_names=_lease_names,
    context=_context,
    stages=[[[("plan", steps.plan), ("rotate", steps.rotate), ("prune", steps.prune)]]],
    finish=_finish,
    failed_event="rotation.failed",
    failed=steps.record_failure,
    background=lambda request: request.trigger is models.RotationTrigger.DUE,  # one asked for is interactive
)
