"""A Key Vault (secrets) stand-in that the real ``azure-keyvault-secrets`` client cannot tell apart.

Serve it over HTTPS (the SDK refuses bearer tokens over plain HTTP) and use ``SecretClient`` with
its default settings::

    cert = make_loopback_certificate(directory)
    server = RunningServer(create_app(authority=identity_url, tenant_id=tenant), tls=cert.server_context())
    client = SecretClient(server.url, credential, connection_verify=str(cert.ca_path))

The challenge resource. With ``verify_challenge_resource`` on (the SDK's default), ``SecretClient``
asks the credential for ``<resource>/.default`` only when the vault's ``host:port`` ends with
``"." + <the resource's host:port>``; Azure's vaults (``<name>.vault.azure.net``) name
``https://vault.azure.net``. This vault, served at ``https://127.0.0.1:<port>``, names its own
authority minus the first label, ``https://0.0.1:<port>`` (:func:`challenge_resource`), learnt
when it is bound, so the rule holds for whatever port the stack picks. The identity stand-in
issues tokens for that audience like any other; the vault accepts only those and refuses tokens
for any other audience, ``https://vault.azure.net`` and other vaults' included (``AKV10022``). It
must be served on a dotted address (``127.0.0.1``): ``localhost`` and ``::1`` have no parent
domain the SDK would accept, and binding there fails.
"""

from __future__ import annotations

from devstack.keyvault.models import KeyVaultBackend
from devstack.keyvault.routes import DEFAULT_VAULT_NAME, KeyVaultApp, challenge_resource

__all__ = ["DEFAULT_VAULT_NAME", "KeyVaultApp", "KeyVaultBackend", "challenge_resource", "create_app"]


def create_app(*, authority: str, tenant_id: str, purge_protection: bool = False,
               vault_name: str = DEFAULT_VAULT_NAME, webhook_verify: bool | str = True) -> KeyVaultApp:
    """A fresh, empty vault whose 401 challenge points clients at ``authority``/``tenant_id``.

    ``purge_protection`` mirrors the vault setting: recovery level ``Recoverable`` and purge refused.
    ``vault_name`` is what its Event Grid events call it (``VaultName``, the topic's resource id);
    ``webhook_verify`` is the CA bundle (or ``True``: the environment's) its deliveries trust.
    """
    return KeyVaultApp(authority=authority, tenant_id=tenant_id, purge_protection=purge_protection,
                       vault_name=vault_name, webhook_verify=webhook_verify)
