"""Other Palette objects that hold an account's client secret: Azure backup locations
(``/v1/users/assets/locations/azure``) whose credentials name the account's service principal.

A team that onboarded an account often points a backup location at the same principal. Rotation
gives such a *holder* the new secret when the product may change it, and the older passwords are
pruned only once every holder has the new one:

* a holder the product **may change** carries the product's annotations, or is named (by name or
  uid, in any case) in the account's ``rotation.alsoUpdate``;
* any other holder is **never touched**; it *blocks* the prune (the passwords it may hold stay),
  and so does a changeable holder whose update Palette refused.

Holders are looked for in the account's own scope only (tenant scope for a tenant account, its
project for a project-scoped one): Palette lists a location in its own scope.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError

from shared import credentials

if TYPE_CHECKING:
    from pydantic import SecretStr

    from shared.clients.palette import AzureBackupLocation, AzureCredentials, PaletteClient
    from shared.state.inventory import AccountRecord

#: Why a holder the product may not change blocks the prune.
NOT_OURS = "not made by this product and not named in rotation.alsoUpdate"


@dataclass(frozen=True)
class Holder:
    """One holder as a rotation records it (in its row, as JSON): never a secret."""

    uid: str
    name: str
    may_change: bool
    #: The Graph keyId this rotation gave it ('' until then).
    key_id: str = ""
    #: Why it keeps the older passwords on the app ('' when it does not block the prune).
    blocks: str = ""
    #: Why it is no longer a holder (it names another principal now, or is gone); '' while it is one.
    left: str = ""

    def named(self) -> dict[str, str]:
        return {"uid": self.uid, "name": self.name}

    def blocking(self) -> dict[str, str]:
        return {"uid": self.uid, "name": self.name, "why": self.blocks}


def holds(location: AzureBackupLocation, account: AccountRecord) -> bool:
    """Whether ``location`` signs in as the account's service principal (client id and tenant id,
    compared as GUIDs: in any case)."""
    return bool(account.client_id) and (location.client_id or "").lower() == account.client_id.lower() \
        and (location.tenant_id or "").lower() == account.tenant_id.lower()


def may_change(location: AzureBackupLocation, account: AccountRecord) -> bool:
    """The product's own location, or one the request named in ``rotation.alsoUpdate``."""
    if credentials.made_by_product(location.annotations):
        return True
    named = {entry.casefold() for entry in account.also_update}
    return location.name.casefold() in named or location.uid.casefold() in named


def find(palette: PaletteClient, account: AccountRecord) -> list[AzureBackupLocation]:
    """The Azure backup locations in the account's scope that hold its principal's secret: one list
    call and one read per Azure location of the scope (Palette's list carries no credentials)."""
    return ScopeLocations(palette).holding(account)


def of(location: AzureBackupLocation, account: AccountRecord) -> Holder:
    changeable = may_change(location, account)
    return Holder(location.uid, location.name, changeable, blocks="" if changeable else NOT_OURS)


def refused(exc: BaseException) -> bool:
    """Palette refused to read or change one holder for good: any 4xx but 401 (the product's own
    API key, which a later try may find fixed) and 429 (throttled). A 403 or 404 about one location
    says nothing about the others or about the account, so it is not retried."""
    return isinstance(exc, HttpResponseError) and exc.status_code is not None \
        and 400 <= exc.status_code < 500 and exc.status_code not in (401, 429)


def location_credentials(location: AzureBackupLocation, account: AccountRecord,
                         secret: SecretStr) -> AzureCredentials:
    """The location's own tenant and client ids (as it spells them) with ``secret``."""
    from shared.clients.palette import AzureCredentials

    return AzureCredentials(tenant_id=location.tenant_id or account.tenant_id,
                            client_id=location.client_id or account.client_id, client_secret=secret)


def dump(holders: list[Holder]) -> str:
    return json.dumps([asdict(holder) for holder in holders], separators=(",", ":"))


def load(text: str | None) -> list[Holder]:
    return [Holder(**entry) for entry in json.loads(text or "[]")]


def replace(text: str | None, holder: Holder) -> str:
    """``text`` (a dumped list) with the entry of ``holder.uid`` replaced by ``holder``."""
    return dump([holder if entry.uid == holder.uid else entry for entry in load(text)])


class ScopeLocations:
    """The Azure backup locations of each scope, listed once (for a pass over many accounts)."""

    def __init__(self, palette: PaletteClient) -> None:
        self._palette = palette
        self._listed: dict[str | None, list[AzureBackupLocation]] = {}

    def holding(self, account: AccountRecord) -> list[AzureBackupLocation]:
        """The locations in the account's scope that hold its principal's secret."""
        scope = account.project_uid or None
        if scope not in self._listed:
            self._listed[scope] = self._palette.list_azure_backup_locations(project_uid=scope)
        return [location for location in self._listed[scope] if holds(location, account)]
