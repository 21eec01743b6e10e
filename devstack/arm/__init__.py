"""A Resource Manager stand-in for Microsoft.Authorization that ``azure-mgmt-authorization`` cannot tell
apart: role assignments, role definitions (Owner, Contributor and Reader built in) and deny assignments.

Serve it over HTTPS (azure-core sends bearer tokens over TLS only) and build the SDK's client on it
with the Resource Manager scope, as the product does::

    server = RunningServer(create_app(authority=identity_url, tenant_id=tenant), tls=cert.server_context())
    client = AuthorizationManagementClient(credential, subscription_id, base_url=server.url,
                                           credential_scopes=["https://management.azure.com/.default"])

Subscriptions and resource groups exist when the admin API makes them (``POST
/_devstack/subscriptions``, or implicitly when it seeds a role or deny assignment at a scope);
requests at any other scope get ARM's 404s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstack.arm.models import EVERYONE, ArmBackend, ArmConfig, Subscription
from devstack.arm.routes import AUDIENCES, ArmApp

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["AUDIENCES", "EVERYONE", "ArmApp", "ArmBackend", "ArmConfig", "Subscription", "create_app"]


def create_app(*, authority: str, tenant_id: str, subscriptions: Iterable[Subscription] = (),
               page_size: int = 100, caller_access: str = "open") -> ArmApp:
    """A fresh stand-in; its 401 challenge names ``authority``, subscriptions default to ``tenant_id``.

    ``subscriptions`` exist from the start and after every reset. ``page_size`` and
    ``caller_access`` (``open``: any valid token may read and write; ``rbac``: the caller needs the
    action through its own role assignments) are what ``reset()`` restores; ``POST
    /_devstack/config`` changes them.
    """
    backend = ArmBackend(tenant_id=tenant_id, subscriptions=subscriptions,
                         config=ArmConfig(page_size=page_size, caller_access=caller_access))
    return ArmApp(backend, authority=authority)
