"""Azure credential validation for the Palette stand-in, done the way Palette does it: by asking
Entra for a token with the client credentials.

Against the local stack this asks the Entra stand-in, so a wrong secret, or one added so recently
that it has not propagated yet, fails validation for real instead of being waved through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

if TYPE_CHECKING:
    from collections.abc import Callable

ARM_SCOPE = "https://management.azure.com/.default"
#: The stand-in's own calls say who they are, so the fault and latency knobs can tell Palette's
#: sign-in to Azure from the app's calls (``exceptUserAgent``).
USER_AGENT = "devstack-palette (credential validation)"


def entra_credential_validator(authority_host: str, *, verify: str | bool = True,
                               timeout: float = 10.0) -> Callable[[str, str, str, str], str | None]:
    """A ``credential_validator`` that POSTs a client-credentials grant to
    ``{authority_host}/{tenant}/oauth2/v2.0/token``.

    It returns ``None`` when a token is issued, else Entra's ``error_description`` (or a short
    reason when Entra cannot be reached). The secret never appears in what it returns. The local
    stack has one authority for every cloud, so ``azure_environment`` does not change the host.
    """
    base = authority_host.rstrip("/")
    # One pool of kept-alive connections, as a service calling Entra all day would have: a TLS
    # handshake per validation would be the stand-in's own cost, not Palette's.
    session = requests.Session()
    session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=32))
    session.headers["User-Agent"] = USER_AGENT

    def validate(azure_environment: str, tenant_id: str, client_id: str, client_secret: str) -> str | None:
        url = f"{base}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret,
                "scope": ARM_SCOPE}
        try:
            response = session.post(url, data=form, timeout=timeout, verify=verify)
        except requests.RequestException as exc:
            return f"the identity endpoint could not be reached ({type(exc).__name__})"
        if response.status_code == 200:
            try:
                issued = response.json()
            except ValueError:
                issued = None
            if isinstance(issued, dict) and issued.get("access_token"):
                return None
            return "the identity endpoint answered 200 without an access token"
        try:
            error = response.json()
        except ValueError:
            error = None
        reason = None
        if isinstance(error, dict):
            reason = error.get("error_description") or error.get("error")
        text = str(reason) if reason else f"the identity endpoint answered HTTP {response.status_code}"
        return text.replace(client_secret, "********") if client_secret else text

    return validate
