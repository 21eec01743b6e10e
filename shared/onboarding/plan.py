"""The onboarding plan: Palette's "Set up Palette with Azure" guide as the runner's stages.

    check ─┬─ secret ── validate ── register ─┬─ verify
           ├─ sshkey ─────────────────────────┤
           └─ apikey ─────────────────────────┘

The three branches touch different objects (and different Palette prefixes), so they run at the
same time. A generated SSH key's RSA pair is taken when the delivery starts
(:mod:`shared.keypairs`: made ahead, or made beside the check's round trips), so its CPU
time does not lengthen the SSH key branch.

``verify`` is the plan's finish: it reads everything back, announces ``validated`` with one entry
per check and, meanwhile, records the account in the inventory the rotation sweep works from
(the account exists whether or not every read-back passes, and its secret must be rotated).

What a crash must find is written before the calls it is about, and nothing more waits on the
way: the claim writes the marker of every create the request may make (so no step writes one
before its create), the results of the steps that only read (check, validate) go with the next
write, and the branches' last results are written while ``verify`` reads them back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.engine.failures import Failure, FailureKind
from shared.engine.leases import names_of
from shared.engine.plan import Finish, Plan, build_document
from shared.onboarding import steps

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.engine.record import RecordHandle
    from shared.models import OnboardingRequest
    from shared.services import Services
    from shared.settings import PipelineConfig


def _parse(body: bytes | str | Mapping[str, Any], config: PipelineConfig) -> OnboardingRequest:
    from shared.models import parse_request

    return parse_request(body, require_pcg_for_us_government=config.require_pcg_for_us_government,
                         allowed_secret_prefix=config.allowed_secret_prefix)


def _fingerprint(request: OnboardingRequest) -> str:
    from shared.models import request_fingerprint

    return request_fingerprint(request)


def _queued(request: OnboardingRequest) -> str:
    return json.dumps(request.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))


def _context(request: OnboardingRequest, clients: Services, config: PipelineConfig,
             handle: RecordHandle) -> steps.StepContext:
    ctx = steps.StepContext(request=request, clients=clients, config=config, handle=handle)
    if request.ssh_key is not None and request.ssh_key.generate and not handle.record.step_done("sshkey"):
        ctx.key_pair = clients.key_pairs.take()  # made ahead, or started now beside the check
    return ctx


def _prefetch(ctx: steps.StepContext) -> None:
    """The project's lookup, which no lease covers, starts while the names are leased: the SSH
    key's lookup, which needs the project, then waits for one round trip less."""
    if not ctx.handle.record.step_done("check"):
        from shared.onboarding.checks import start_early

        ctx.early_checks = start_early(ctx.request, ctx.clients)


def _requested(request: OnboardingRequest) -> dict[str, Any]:
    return build_document(request.request_id, request.account_name, "requested", "requested", "accepted",
                          cloud=request.azure.cloud.value, scope=request.palette.scope.value)


def _verify(ctx: steps.StepContext) -> Finish:
    def alongside() -> None:
        ctx.handle.settle()  # the branches' last results, written while they are read back
        steps.record_in_inventory(ctx)

    checks = steps.verify(ctx, alongside=alongside)
    all_ok = all(check["ok"] for check in checks)
    validated = ctx.event("validated", "verify", "passed" if all_ok else "failed", checks=checks,
                          palette=ctx.palette_uids())
    if not all_ok:
        failed = ", ".join(c["check"] for c in checks if not c["ok"])
        return Finish(events=[validated], step="verify", failure=Failure(
            FailureKind.PERMANENT, "verification_failed", f"Onboarding finished but these checks failed: {failed}."))
    return Finish(events=[validated], step="verify", detail="all checks passed")


ONBOARDING = Plan(
    operation="onboard",
    parse=_parse,
    fingerprint=_fingerprint,
    queued=_queued,
    lease_names=names_of,
    context=_context,
    stages=[
        [[("check", steps.check)]],
        [[("secret", steps.secret), ("validate", steps.validate), ("register", steps.register)],
         [("sshkey", steps.sshkey)], [("apikey", steps.apikey)]],
    ],
    finish=_verify,
    started_event=_requested,
    markers=steps.markers,
    finish_reads_first=True,
    prefetch=_prefetch,
)
