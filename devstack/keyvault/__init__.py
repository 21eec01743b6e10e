"""A Key Vault (secrets) stand-in that the real ``azure-keyvault-secrets`` client cannot tell apart.

Serve it over HTTPS (the SDK refuses bearer tokens over plain HTTP)::

    cert = make_loopback_certificate(directory)
    server = RunningServer(create_app(authority=identity_url, tenant_id=tenant), tls=cert.server_context())
    client = SecretClient(server.url, credential, verify_challenge_resource=False,
                          connection_verify=str(cert.ca_path))
"""

from __future__ import annotations

from devstack.keyvault.models import KeyVaultBackend
from devstack.keyvault.routes import RESOURCE, KeyVaultApp

__all__ = ["RESOURCE", "KeyVaultApp", "KeyVaultBackend", "create_app"]


def create_app(*, authority: str, tenant_id: str, purge_protection: bool = False) -> KeyVaultApp:
    """A fresh, empty vault whose 401 challenge points clients at ``authority``/``tenant_id``.

    ``purge_protection`` mirrors the vault setting: recovery level ``Recoverable`` and purge refused.
    """
    return KeyVaultApp(authority=authority, tenant_id=tenant_id, purge_protection=purge_protection)
