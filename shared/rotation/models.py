"""The rotation request: what the sweep, Key Vault's near-expiry event and the HTTP route put on the
onboarding queue (``operation: rotate``), so a rotation runs through the same runner as an
onboarding: leases, outbox, failure table, retries, the sweeper and the dead-letter trigger.

    {"operation": "rotate", "requestId": "rot-<24 hex>", "accountName": "contoso-prod",
     "trigger": "due" | "onDemand", "version": "<Key Vault version the trigger saw>"?}

``due`` rotations (the timer, the Event Grid event) re-check that the account is still due when
they run, and skip a version that was already replaced; ``onDemand`` ones rotate regardless.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from shared.models.fields import AccountName, KeyVaultVersion, RequestId, one_of
from shared.models.request import WireModel


class RotationTrigger(StrEnum):
    DUE = "due"              # the timer or Key Vault's near-expiry event: rotate if still due
    ON_DEMAND = "onDemand"   # POST /api/rotations/{accountName}: rotate now


class RotationRequest(WireModel):
    operation: Literal["rotate"]
    request_id: RequestId
    account_name: AccountName
    trigger: Annotated[RotationTrigger, one_of(RotationTrigger)] = RotationTrigger.DUE
    version: KeyVaultVersion | None = None

    @classmethod
    def of(cls, request_id: str, account_name: str, trigger: RotationTrigger,
           version: str | None = None) -> RotationRequest:
        """Build one in code (the wire names are camelCase)."""
        body: dict[str, Any] = {"operation": "rotate", "requestId": request_id, "accountName": account_name,
                                "trigger": trigger.value}
        if version:
            body["version"] = version
        return cls.model_validate(body)


def parse_rotation(body: bytes | str | dict[str, Any]) -> RotationRequest:
    """Raises RequestValidationError with one error per bad field."""
    from shared.models.parsing import parse_model

    return parse_model(RotationRequest, body, what="rotation request")


def fingerprint(request: RotationRequest) -> str:
    document = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def queued(request: RotationRequest) -> str:
    return json.dumps(request.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
