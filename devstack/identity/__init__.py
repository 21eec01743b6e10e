"""Local stand-in for Microsoft Entra ID (token endpoints) and Graph's app registrations.

Serve the one app object on two listeners: plain HTTP for the managed identity endpoint
(``IDENTITY_ENDPOINT=http://127.0.0.1:PORT/msi/token``) and HTTPS for the authority and Graph
(``AZURE_AUTHORITY_HOST`` and ``GRAPH_ENDPOINT`` = ``https://127.0.0.1:PORT2``); every route works
on both.
"""

from __future__ import annotations

from devstack.identity.models import IdentityBackend, IdentityConfig
from devstack.identity.routes import GRAPH_RESOURCE, IdentityApp

__all__ = ["GRAPH_RESOURCE", "IdentityApp", "IdentityBackend", "IdentityConfig", "create_app"]


def create_app(*, identity_header: str, managed_identity_tenant_id: str, managed_identity_client_id: str,
               propagation_delay_seconds: float = 0.0, password_cap: int | None = None,
               password_lifetime_max_days: int | None = None,
               graph_requests_per_second: float = 0.0, graph_write_limits: bool = False) -> IdentityApp:
    """Build the identity app over a fresh backend.

    ``propagation_delay_seconds`` is how long a new secret is refused (the real service takes
    seconds to know it); ``password_cap`` is a tenant policy's limit of passwords per app;
    ``password_lifetime_max_days`` the default app management policy's lifetime limit;
    ``graph_requests_per_second`` a plain rate limit (0: off); ``graph_write_limits`` Graph's own
    write windows at their real figures (3,000 writes per 150 s per caller in a tenant, 18,000 per
    300 s per tenant). They are what ``reset()`` restores, and ``POST /_devstack/config`` changes
    them (and the windows' figures) at run time.
    """
    backend = IdentityBackend(
        managed_identity_tenant_id=managed_identity_tenant_id,
        managed_identity_client_id=managed_identity_client_id,
        config=IdentityConfig(propagation_delay_seconds=propagation_delay_seconds, password_cap=password_cap,
                              password_lifetime_max_days=password_lifetime_max_days,
                              graph_requests_per_second=graph_requests_per_second,
                              graph_write_limits=graph_write_limits),
    )
    return IdentityApp(backend, identity_header=identity_header)
