"""The Entra ID app-role check for the HTTP API, where App Service authentication (Easy Auth) runs.

Function keys guard every route. When Easy Auth is enabled it strips any client-sent
``X-MS-CLIENT-PRINCIPAL`` and sets its own, so a present principal is trustworthy: the caller must
then also hold the app role the route needs. Roles (define them on the API's app registration):

* ``Onboarding.Submit``: submit onboarding requests (and read them).
* ``Onboarding.Read``: read state and dry-run.
* ``Onboarding.Admin``: what changes or removes what is already in place: rotate a secret now,
  offboard an account, reactivate a replaced API key (and read). Its own role, so the teams that
  submit onboardings cannot also take accounts away.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

SUBMIT_ROLE = "Onboarding.Submit"
READ_ROLE = "Onboarding.Read"
ADMIN_ROLE = "Onboarding.Admin"
#: Every role may read.
READERS = (READ_ROLE, SUBMIT_ROLE, ADMIN_ROLE)
PRINCIPAL_HEADER = "x-ms-client-principal"


class AuthorizationError(Exception):
    """The caller is signed in but may not do this (403), or the principal is unreadable (401)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def roles_of(headers: Mapping[str, str]) -> set[str] | None:
    """The app roles of the Easy Auth principal, or None when no principal was sent."""
    encoded = next((v for k, v in headers.items() if k.lower() == PRINCIPAL_HEADER), None)
    if encoded is None:
        return None
    try:
        principal = json.loads(base64.b64decode(encoded, validate=True))
        role_type = principal.get("role_typ") or "roles"
        return {str(c["val"]) for c in principal.get("claims", [])
                if isinstance(c, dict) and c.get("typ") in (role_type, "roles") and "val" in c}
    except (binascii.Error, ValueError, TypeError, AttributeError, KeyError):
        raise AuthorizationError(401, "The X-MS-CLIENT-PRINCIPAL header is not a valid principal.") from None


def require_role(headers: Mapping[str, str], *accepted: str, require_principal: bool = False) -> None:
    """Raise :class:`AuthorizationError` unless the principal holds an accepted role.

    Without a principal the call passes on its function key alone, unless ``require_principal``
    (the ``REQUIRE_CLIENT_PRINCIPAL`` setting, on in Azure): Easy Auth configured to let
    anonymous callers through would otherwise skip the role check, failing open.
    """
    roles = roles_of(headers)
    if roles is None and require_principal:
        raise AuthorizationError(401, "This API needs a signed-in caller (App Service authentication with Entra "
                                      "ID); no client principal came with the request.")
    if roles is None or roles & set(accepted):
        return
    raise AuthorizationError(403, f"This call needs the app role {' or '.join(accepted)}.")
