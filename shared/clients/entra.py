"""Proof that a client secret works: a client-credentials token from Entra ID, as Palette will ask.

A new Graph password is refused by the token endpoint for a while (4-18 s seen in real tenants);
rotation asks here, with backoff, before it hands the secret to Palette, instead of sleeping a
fixed time. Uses azure-identity's ``ClientSecretCredential`` (MSAL underneath) against the
configured authority: the public cloud's by default, a sovereign cloud's, or another one (Azure
Stack Hub, a private cloud, the local stack), for which MSAL's instance discovery (a check of the
authority against Microsoft's public list) is turned off, as azure-identity documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

if TYPE_CHECKING:
    from pydantic import SecretStr

#: The authorities MSAL's instance discovery knows.
KNOWN_AUTHORITIES = frozenset({"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn",
                               "login.partner.microsoftonline.cn"})


class ClientSecretProbe:
    """``check(tenant, client, secret)`` returns when Entra ID issues a token for the secret.

    :param authority_host: ``AZURE_AUTHORITY_HOST``, e.g. ``https://login.microsoftonline.us``;
        None for the public cloud.
    :param scope: the scope to ask a token for (Graph's ``.default``: any app may ask for it).
    """

    def __init__(self, *, authority_host: str | None, scope: str) -> None:
        self.authority_host = authority_host
        self.scope = scope

    def check(self, tenant_id: str, client_id: str, secret: SecretStr) -> None:
        """Return once Entra ID accepts the secret.

        Raises
        ------
        ClientAuthenticationError
            Entra ID refused the secret (an ``AADSTS`` error: not propagated yet, or wrong).
        ServiceRequestError
            Entra ID could not be reached.
        """
        from urllib.parse import urlsplit

        from azure.identity import ClientSecretCredential

        options: dict[str, object] = {}
        if self.authority_host:
            options["authority"] = self.authority_host
            host = (urlsplit(self.authority_host).hostname or self.authority_host).lower()
            options["disable_instance_discovery"] = host not in KNOWN_AUTHORITIES
        credential = ClientSecretCredential(tenant_id, client_id, secret.get_secret_value(), **options)
        try:
            credential.get_token(self.scope)
        except ClientAuthenticationError as exc:
            if "AADSTS" in str(exc.message):
                raise
            raise ServiceRequestError(f"Entra ID could not be asked for a token: {exc.message}") from None
        finally:
            credential.close()
