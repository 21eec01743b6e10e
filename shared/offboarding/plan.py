"""The offboarding plan for the runner (see shared/offboarding/steps.py), under the account's lease,
so an offboarding never runs beside an onboarding or a rotation of the account."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.engine.plan import Finish, Plan
from shared.offboarding import models, steps
from shared.state.inventory import OFFBOARDED, AccountRecord
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.engine.record import RecordHandle
    from shared.services import Services
    from shared.settings import PipelineConfig

REMOVING_STEPS = ("account", "keys", "passwords", "secrets")


def _parse(body: bytes | str | Mapping[str, Any], config: PipelineConfig) -> models.OffboardingRequest:
    return models.parse_offboarding(body)


def _context(request: models.OffboardingRequest, clients: Services, config: PipelineConfig,
             handle: RecordHandle) -> steps.OffboardingContext:
    return steps.OffboardingContext(request=request, clients=clients, config=config, handle=handle)


def removed_and_left(results: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """What the removing steps recorded, in step order."""
    removed: list[str] = []
    left: list[str] = []
    for name in REMOVING_STEPS:
        removed += json.loads(results.get(f"{steps.REMOVED}{name}", "[]"))
        left += json.loads(results.get(f"{steps.LEFT}{name}", "[]"))
    return removed, left


def _finish(ctx: steps.OffboardingContext) -> Finish:
    if ctx.skipped:  # the ticket still hears that the account is out, and by which request
        account = ctx.clients.inventory.get(ctx.account_name)
        event = ctx.event("offboarded", "finish", "alreadyOffboarded", removed=[], left=[],
                          offboardedBy=account.offboarded_by if account else None)
        return Finish(events=[event], step="inventory", detail="already offboarded: nothing to do")
    removed, left = removed_and_left(ctx.handle.record.results)
    now = iso(utcnow())

    def apply(account: AccountRecord) -> None:
        account.status = OFFBOARDED
        account.offboarded_by, account.offboarded_at = ctx.request_id, now
        account.offboarding_in_flight = ""
        account.rotation_in_flight = ""
        account.drift = []
        account.drift_since = {}
    event = ctx.event("offboarded", "finish", "offboarded", removed=removed, left=left,
                      palette={"accountUid": ctx.result(steps.ACCOUNT_UID) or None})
    return Finish(events=[event], step="inventory",
                  detail=f"Account {ctx.account_name} is offboarded in the inventory. "
                         f"{steps.removed_and_left_detail(removed, left)}",
                  then=lambda: ctx.clients.inventory.update(ctx.account_name, apply))


OFFBOARDING = Plan(
    operation="offboard",
    parse=_parse,
    fingerprint=models.fingerprint,
    queued=models.queued,
    lease_names=lambda request: [f"account:{request.account_name}"],
    context=_context,
    stages=[[[("check", steps.check), ("account", steps.remove_account), ("keys", steps.remove_keys),
              ("passwords", steps.remove_passwords), ("secrets", steps.remove_secrets)]]],
    finish=_finish,
)
