"""A Palette API stand-in (plain HTTP JSON) that checks every request against the published spec.

``create_app`` loads the Swagger 2.0 spec from ``spec_path`` (never copied into the repository)
and returns the :class:`~devstack.palette.routes.PaletteApp` to serve with
:class:`devstack.httpbase.RunningServer`. ``spec.py`` loads the spec and validates requests,
``models.py`` is the resettable backend, ``routes.py`` the wire, ``errors.py`` the V1Error codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from devstack.palette.credentials import entra_credential_validator
from devstack.palette.models import PaletteBackend
from devstack.palette.routes import PaletteApp
from devstack.palette.spec import PaletteSpec

if TYPE_CHECKING:
    from collections.abc import Callable


def create_app(*, spec_path: Path, api_key: str,
               credential_validator: Callable[[str, str, str, str], str | None] | None = None,
               rate_per_second: float = 10, burst: int = 5) -> PaletteApp:
    """The Palette stand-in.

    ``api_key`` is the tenant admin's key (owned by the seeded ``admin@example.com``).
    ``credential_validator(azure_environment, tenant_id, client_id, client_secret)`` returns
    ``None`` when Azure accepts the credentials, else the reason; without one any non-empty secret
    is accepted. ``rate_per_second`` and ``burst`` are Palette's documented limit per resource
    prefix (10 and 5: 50 requests at once, then 10 a second); ``rate_per_second <= 0`` disables it.
    """
    spec = PaletteSpec.load(Path(spec_path))
    backend = PaletteBackend(admin_api_key=api_key, credential_validator=credential_validator)
    return PaletteApp(spec=spec, backend=backend, rate_per_second=rate_per_second, burst=burst)


__all__ = ["PaletteApp", "PaletteBackend", "PaletteSpec", "create_app", "entra_credential_validator"]
