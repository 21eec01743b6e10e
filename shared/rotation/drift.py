"""The drift pass: a full look, less often than the rotation sweep, at every managed account.

What it finds (``kind`` of ``palette.onboarding.drift.detected``, and a field of the inventory row):

* ``secret_changed``: the cloud account in Palette no longer carries the product's record of which
  secret it put there (Palette never shows a secret back; a full PUT by anybody else, such as a
  Terraform apply with a stale secret, drops it). Repaired by putting Key Vault's current secret
  back into the account.
* ``secret_invalid``: Palette no longer accepts Key Vault's current secret. Repaired by a rotation
  (for a secret the product makes; an operator's secret needs its operator).
* ``account_missing``: the product keeps a secret for an account Palette no longer has.
* ``secret_missing``: a Palette account the product registered that Key Vault no longer backs.
* ``orphan_password``: a Graph password the product made for the account that is neither its
  current nor its previous one. Removed once seen for ``ORPHAN_GRACE_HOURS``.

A kind that is found no more (or was repaired) is announced with ``drift.resolved``. Events go out
through the account's row (an outbox), once each. An account missing from the inventory but kept
in Key Vault (the table was lost) gets its row back from the secret's tags first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared import credentials
from shared.credentials import SecretKind
from shared.engine.failures import FailureKind, classify
from shared.engine.plan import build_document
from shared.logs import bind, get_logger
from shared.state.inventory import MANAGED, SOURCE_GENERATED, SOURCE_KEY_VAULT, AccountRecord
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from shared.clients.keyvault import StoredSecret
    from shared.clients.palette import AzureAccount
    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.settings import RotationConfig
    from shared.state import RequestRecord

logger = get_logger(__name__)

KINDS = ("secret_changed", "secret_invalid", "account_missing", "secret_missing", "orphan_password")


@dataclass
class DriftReport:
    accounts: int = 0
    rebuilt: int = 0
    detected: int = 0
    resolved: int = 0
    repaired: int = 0
    orphans_removed: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Found:
    """One account's drift this pass: the kinds, and what was repaired."""

    kinds: set[str]
    repaired: set[str]
    orphans: dict[str, str]  # keyId -> when it was first seen


def drift_pass(clients: Services, queue: RequestQueue, config: RotationConfig, *,
               now: dt.datetime | None = None) -> DriftReport:
    moment = now or utcnow()
    report = DriftReport()
    report.rebuilt = rebuild_inventory(clients)
    for account in clients.inventory.query("Status eq @managed", {"managed": MANAGED}):
        report.accounts += 1
        with bind(requestId=account.onboarded_by or None):
            try:
                found = _inspect(account, clients, queue, config, moment, report)
                _record(account, found, clients, moment, report)
            except Exception:  # one account failing does not stop the pass
                report.errors += 1
                logger.warning("drift: account %s could not be checked", account.account_name, exc_info=True)
    logger.info("drift pass: %s", report.as_dict())
    return report


def _inspect(account: AccountRecord, clients: Services, queue: RequestQueue, config: RotationConfig,
             now: dt.datetime, report: DriftReport) -> Found:
    found = Found(kinds=set(), repaired=set(), orphans={})
    palette = _palette_account(account, clients)
    current = _current_secret(account, clients)
    if palette is None:
        found.kinds.add("account_missing")
    if current is None:
        found.kinds.add("secret_missing")
    if palette is not None and current is not None:
        expected = credentials.secret_ref(current.tags.get(credentials.CREDENTIAL_ID_TAG)
                                          if account.secret_source == SOURCE_GENERATED else None, current.version)
        if palette.annotations.get(credentials.SECRET_REF_ANNOTATION) != expected:
            found.kinds.add("secret_changed")
            if _put_back(account, palette, current, expected, clients):
                found.repaired.add("secret_changed")
                report.repaired += 1
        elif not _palette_accepts(account, palette, current, clients):
            found.kinds.add("secret_invalid")
            if account.secret_source == SOURCE_GENERATED:
                _rotate(account, clients, queue)  # resolved when the next pass finds the new secret accepted
    if account.secret_source == SOURCE_GENERATED:
        _orphans(account, clients, config, now, found, report)
    return found


def _palette_account(account: AccountRecord, clients: Services) -> AzureAccount | None:
    try:
        return clients.palette.get_azure_account(account.palette_uid, project_uid=account.project_uid or None)
    except ResourceNotFoundError:
        return None


def _current_secret(account: AccountRecord, clients: Services) -> StoredSecret | None:
    versions = [v for v in clients.secrets.list_versions(account.secret_name) if v.enabled]
    return versions[0] if versions else None


def _credentials_from(account: AccountRecord, palette: AzureAccount, current: StoredSecret,
                      clients: Services) -> object:
    from shared.clients.palette import AzureCredentials

    value, _ = clients.secrets.get_secret(current.name, current.version)
    return AzureCredentials(tenant_id=palette.tenant_id or account.tenant_id,
                            client_id=palette.client_id or account.client_id, client_secret=value,
                            environment=palette.environment or "AzurePublicCloud",
                            tenant_name=palette.tenant_name or "", disable_properties=palette.disable_properties)


def _put_back(account: AccountRecord, palette: AzureAccount, current: StoredSecret, expected: str,
              clients: Services) -> bool:
    """Put Key Vault's current secret back into the account. The account is the product's: its uid
    is the one the inventory recorded from the product's own create (the annotations that proved it
    then are what the other writer removed)."""
    from shared.clients.palette import AzureCredentials

    if palette.uid != account.palette_uid:
        return False
    creds = _credentials_from(account, palette, current, clients)
    assert isinstance(creds, AzureCredentials)
    annotations = {**{k: v for k, v in palette.annotations.items() if k not in ("scope", "projectUid")},
                   **credentials.ownership_annotations(account.onboarded_by, secret_ref=expected)}
    try:
        clients.palette.validate_azure_credentials(creds, project_uid=account.project_uid or None)
        clients.palette.update_azure_account(palette.uid, palette.name, creds, project_uid=account.project_uid or None,
                                             overlord_uid=palette.overlord_uid, annotations=annotations)
    except HttpResponseError as exc:
        logger.warning("drift: could not put the current secret back into account %s (%s)", account.account_name,
                       exc.status_code)
        return False
    return True


def _palette_accepts(account: AccountRecord, palette: AzureAccount, current: StoredSecret,
                     clients: Services) -> bool:
    from shared.clients.palette import AzureCredentials

    creds = _credentials_from(account, palette, current, clients)
    assert isinstance(creds, AzureCredentials)
    try:
        clients.palette.validate_azure_credentials(creds, project_uid=account.project_uid or None)
    except HttpResponseError as exc:
        if classify(exc).kind is FailureKind.PERMANENT:
            return False
        raise
    return True


def _rotate(account: AccountRecord, clients: Services, queue: RequestQueue) -> None:
    from shared.rotation.sweep import rotate_now

    outcome, rotation = rotate_now(clients, queue, account.account_name)
    logger.warning("drift: account %s no longer validates; rotation %s (%s)", account.account_name, rotation,
                   outcome.value)


def _orphans(account: AccountRecord, clients: Services, config: RotationConfig, now: dt.datetime,
             found: Found, report: DriftReport) -> None:
    if clients.graph is None or not account.client_id:
        return
    keep = {account.current_key_id, account.previous_key_id} - {""}
    grace = dt.timedelta(hours=config.orphan_grace_hours)
    try:
        passwords = clients.graph.get_application(account.client_id).passwords
    except ResourceNotFoundError:
        return
    for password in passwords:
        if not credentials.is_product_password(password.display_name, account.account_name) \
                or password.key_id in keep:
            continue
        since = account.drift_since.get(f"orphan:{password.key_id}", iso(now))
        if now - (parse_iso(since) or now) >= grace:
            clients.graph.remove_password(account.client_id, password.key_id)
            report.orphans_removed += 1
            logger.warning("drift: removed orphaned password %s of account %s", password.key_id, account.account_name)
            continue
        found.orphans[password.key_id] = since
        found.kinds.add("orphan_password")


def _record(account: AccountRecord, found: Found, clients: Services, now: dt.datetime,
            report: DriftReport) -> None:
    """Announce what changed since the last pass, in the account's row with the new drift state."""
    still = found.kinds - found.repaired
    before = set(account.drift)
    events = []
    for kind in sorted(found.kinds - before):
        events.append(_event(account, "drift.detected", kind, now))
    for kind in sorted((before - still) | (found.repaired - before)):
        events.append(_event(account, "drift.resolved", kind, now))
    report.detected += len(found.kinds - before)
    report.resolved += len((before - still) | (found.repaired - before))

    def apply(row: AccountRecord) -> None:
        row.drift = sorted(still)
        since = {kind: row.drift_since.get(kind, iso(now)) for kind in still if kind != "orphan_password"}
        since.update({f"orphan:{key}": first for key, first in found.orphans.items()})
        row.drift_since = since
        for event in events:
            row.record_event(event)
    if not events and still == before and not found.orphans and not account.drift_since:
        return
    updated = clients.inventory.update(account.account_name, apply)
    if updated is not None and updated.outbox:
        from shared.rotation.sweep import flush_account

        flush_account(updated, clients)


_DETAIL = {
    "secret_changed": "the account in Palette no longer holds the secret this product put there (someone else "
                      "updated it, e.g. a Terraform apply with an old secret)",
    "secret_invalid": "Palette no longer accepts the account's current secret",
    "account_missing": "the Palette cloud account is gone, but this product still keeps its secret",
    "secret_missing": "Key Vault no longer holds the account's secret",
    "orphan_password": "a Graph password this product made is neither the current nor the previous one",
}


def _event(account: AccountRecord, short_type: str, kind: str, now: dt.datetime) -> dict[str, object]:
    outcome = "detected" if short_type == "drift.detected" else "resolved"
    return build_document(account.onboarded_by or account.account_name, account.account_name, short_type, "drift",
                          outcome, discriminator=f"{kind}:{now.date().isoformat()}", kind=kind,
                          accountName=account.account_name, detail=_DETAIL[kind])


# ------------------------------------------------------------------------------ rebuild from tags

def rebuild_inventory(clients: Services) -> int:
    """Give every client secret the product keeps in Key Vault a row, from its tags (and the state
    of the request that made it, for the Palette uid and scope), if the inventory lost it."""
    rebuilt = 0
    for secret in clients.secrets.list_secrets(tag=credentials.MANAGED_BY_TAG, value=credentials.PRODUCT):
        parsed = credentials.parse_secret_name(secret.name)
        if parsed is None or parsed[1] is not SecretKind.CLIENT_SECRET:
            continue
        account_name = parsed[0]
        if clients.inventory.get(account_name) is not None:
            continue
        versions = clients.secrets.list_versions(secret.name)
        if not versions:
            continue
        current = versions[0]
        tags = current.tags
        origin = clients.state.get(tags.get(credentials.REQUEST_ID_TAG, "")) if tags.get(
            credentials.REQUEST_ID_TAG) else None
        results = origin.results if origin is not None else {}
        key_id = tags.get(credentials.CREDENTIAL_ID_TAG, "")
        scoped = _project_scoped(origin)
        record = AccountRecord(
            account_name=account_name, scope="project" if scoped else "tenant",
            project_uid=results.get("projectUid", "") if scoped else "",
            palette_uid=results.get("accountUid", ""), tenant_id=tags.get(credentials.TENANT_ID_TAG, ""),
            client_id=tags.get(credentials.CLIENT_ID_TAG, ""),
            secret_source=SOURCE_GENERATED if key_id else SOURCE_KEY_VAULT, secret_name=secret.name,
            secret_version=current.version, current_key_id=key_id,
            expires_on=iso(current.expires_on) if current.expires_on else "",
            secret_created_on=iso(current.created_on) if current.created_on else "",
            validity_days=int(tags.get(credentials.VALIDITY_PERIOD_DAYS_TAG) or 180),
            onboarded_by=tags.get(credentials.REQUEST_ID_TAG, ""))
        if not record.palette_uid:
            found = clients.palette.find_azure_account(account_name)
            record.palette_uid = found.uid if found is not None else ""
        try:
            clients.inventory.create(record)
        except Exception:  # noqa: BLE001 - made meanwhile by onboarding: fine
            continue
        rebuilt += 1
        logger.warning("drift: rebuilt the inventory row of account %s from Key Vault's tags", account_name)
    return rebuilt


def _project_scoped(origin: RequestRecord | None) -> bool:
    """Whether the onboarding that made the secret registered a project-scoped account."""
    import json

    if origin is None or not origin.request:
        return False
    try:
        return bool(json.loads(origin.request).get("palette", {}).get("scope") == "project")
    except ValueError:
        return False
