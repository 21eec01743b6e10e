"""The offboarding request (schema v1 with ``operation: offboard``): what the queue or
``DELETE /api/accounts/{name}`` asks for to take an account out as cleanly as it came in.

    {"operation": "offboard", "requestId": "...", "accountName": "...",
     "palette": {"scope": "tenant" | "project", "project": "Default"}?,
     "removeSshKey": false, "removeApiKey": true}

``palette`` is optional: the inventory knows where the account lives; when given, it must match.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from shared.models.fields import AccountName, RequestId  # noqa: TC001 - pydantic reads annotations at run time
from shared.models.request import PaletteSpec, WireModel

if TYPE_CHECKING:
    from collections.abc import Mapping


class OffboardingRequest(WireModel):
    operation: Literal["offboard"]
    request_id: RequestId
    account_name: AccountName
    palette: PaletteSpec | None = None
    remove_ssh_key: bool = Field(default=False, strict=True)
    remove_api_key: bool = Field(default=True, strict=True)

    @classmethod
    def of(cls, request_id: str, account_name: str, *, remove_ssh_key: bool = False,
           remove_api_key: bool = True) -> OffboardingRequest:
        return cls.model_validate({"operation": "offboard", "requestId": request_id, "accountName": account_name,
                                   "removeSshKey": remove_ssh_key, "removeApiKey": remove_api_key})


def parse_offboarding(body: bytes | str | Mapping[str, Any]) -> OffboardingRequest:
    """Raises RequestValidationError with one error per bad field."""
    from shared.models.parsing import parse_model

    return parse_model(OffboardingRequest, body, what="offboarding request")


def queued(request: OffboardingRequest) -> str:
    return json.dumps(request.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True,
                      separators=(",", ":"))


def fingerprint(request: OffboardingRequest) -> str:
    return hashlib.sha256(queued(request).encode()).hexdigest()
