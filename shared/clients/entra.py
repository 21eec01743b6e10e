"""Proof that a client secret works: a client-credentials token from Entra ID, as Palette will ask.

A new Graph password is refused by the token endpoint for a while (4-18 s seen in real tenants);
rotation asks here, with backoff, before it hands the secret to Palette, instead of sleeping a
fixed time.

One OAuth 2.0 client-credentials request (RFC 6749 section 4.4) to
``{authority}/{tenant}/oauth2/v2.0/token`` per attempt, over one reused session. Not through
azure-identity's ``ClientSecretCredential``: every new secret is a new MSAL application, which
first fetches the authority's metadata (instance discovery and OpenID configuration), doubling the
calls of a rotation sweep for a token that is thrown away. The token is never kept or logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import requests
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

if TYPE_CHECKING:
    from pydantic import SecretStr

PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
USER_AGENT = "palette-onboarding (client secret probe)"


class ClientSecretProbe:
    """``check(tenant, client, secret)`` returns when Entra ID issues a token for the secret.

    :param authority_host: ``AZURE_AUTHORITY_HOST``, e.g. ``https://login.microsoftonline.us``;
        None for the public cloud.
    :param scope: the scope to ask a token for (Graph's ``.default``: any app may ask for it).
    :param timeout: seconds per connect and per read.
    """

    def __init__(self, *, authority_host: str | None, scope: str, timeout: float = 15) -> None:
        self.authority_host = (authority_host or PUBLIC_AUTHORITY).rstrip("/")
        self.scope = scope
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT

    def check(self, tenant_id: str, client_id: str, secret: SecretStr) -> None:
        """Return once Entra ID accepts the secret.

        Raises
        ------
        ClientAuthenticationError
            Entra ID refused the secret (an ``AADSTS`` error: not propagated yet, or wrong).
        ServiceRequestError
            Entra ID could not be reached, or failed on its side.
        """
        url = f"{self.authority_host}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"
        form = {"grant_type": "client_credentials", "client_id": client_id,
                "client_secret": secret.get_secret_value(), "scope": self.scope}
        try:
            response = self._session.post(url, data=form, timeout=self._timeout, verify=self._session.verify)
        except requests.RequestException as exc:
            raise ServiceRequestError(f"Entra ID could not be asked for a token ({type(exc).__name__}).") from None
        with response:
            if response.status_code == 200:
                return
            code, description = _error_of(response)
            if response.status_code in (400, 401) and code:
                raise ClientAuthenticationError(message=f"Entra ID refused the client secret of {client_id}: "
                                                        f"{code}: {description}")
            raise ServiceRequestError(f"Entra ID answered {response.status_code} to a token request.")

    def close(self) -> None:
        self._session.close()


def _error_of(response: requests.Response) -> tuple[str, str]:
    """Entra's ``error`` and the first line of its ``error_description`` (which never holds the secret)."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    description = str(body.get("error_description") or "").splitlines()[0][:300] if body.get(
        "error_description") else ""
    return str(body.get("error") or ""), description
