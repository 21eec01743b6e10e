"""The onboarding plan: Palette's "Set up Palette with Azure" guide as the engine's stages.

    check ─┬─ secret ── validate ── register ─┬─ verify
           ├─ sshkey ─────────────────────────┤
           └─ apikey ─────────────────────────┘

The three branches touch different objects (and different Palette prefixes), so they run at the
same time. A generated SSH key's RSA pair is taken when the delivery starts
(:mod:`shared.keypairs`: made ahead, or made beside the check's round trips), so its CPU time does
not lengthen the SSH key branch.

``verify`` is the plan's finish: it reads everything back and announces ``validated`` with one
entry per check; when every check passed, the account goes into the inventory the rotation sweep
and the drift pass work from. When one failed, the request fails, and takes back what it made.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared import credentials
from shared.engine.failures import Failure, FailureKind
from shared.engine.plan import Finish, Plan, build_document
from shared.onboarding import steps
from shared.onboarding.keys import PERMISSIONS

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


def lease_names(request: OnboardingRequest) -> list[str]:
    """The names an onboarding creates or changes, in a fixed order."""
    keys = [credentials.account_lease(request.account_name)]
    if request.ssh_key is not None:
        keys.append(credentials.ssh_key_lease(request.palette.project, request.ssh_key.name))
    if request.api_key is not None:
        keys.append(credentials.api_key_lease(request.api_key.name))
    return keys


def _context(request: OnboardingRequest, clients: Services, config: PipelineConfig,
             handle: RecordHandle) -> steps.StepContext:
    ctx = steps.StepContext(request=request, clients=clients, config=config, handle=handle)
    steps.start_ahead(ctx)
    return ctx


def _requested(request: OnboardingRequest) -> dict[str, Any]:
    return build_document(request.request_id, request.account_name, "requested", "requested", "accepted",
                          cloud=request.azure.cloud.value, scope=request.palette.scope.value)


def _verify(ctx: steps.StepContext) -> Finish:
    checks = steps.verify(ctx)
    all_ok = all(check["ok"] for check in checks)
    permissions = ctx.handle.record.results.get(PERMISSIONS)  # per scope, as the check found them
    extra = {"permissions": json.loads(permissions)} if permissions else {}
    validated = ctx.event("validated", "verify", "passed" if all_ok else "failed", checks=checks,
                          palette=ctx.palette_uids(), **extra)
    if not all_ok:
        failed = ", ".join(c["check"] for c in checks if not c["ok"])
        return Finish(events=[validated], step="verify", failure=Failure(
            FailureKind.PERMANENT, "verification_failed", f"Onboarding finished but these checks failed: {failed}."))
    return Finish(events=[validated], step="verify", detail="all checks passed",
                  then=lambda: steps.record_in_inventory(ctx))


ONBOARDING = Plan(
    operation="onboard",
    parse=_parse,
    fingerprint=_fingerprint,
    queued=_queued,
    lease_names=lease_names,
    context=_context,
    stages=[
        [[("check", steps.check)]],
        [[("secret", steps.secret), ("validate", steps.validate), ("register", steps.register)],
         [("sshkey", steps.sshkey)], [("apikey", steps.apikey)]],
    ],
    finish=_verify,
    started_event=_requested,
)
