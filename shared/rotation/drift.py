"""The drift pass: a look at every managed account once per ``DRIFT_PERIOD_DAYS``, a slice per run.

Each account has a fixed phase in the cycle (from its name's hash, :func:`shared.state.inventory.drift_phase`)
and each run (``DRIFT_SCHEDULE``, hourly) looks at the accounts whose phases passed since the last
run: the ones looked at longest ago, evenly spread over the period whenever they were onboarded, at
most ``DRIFT_SLICE_MAX`` a run (a missed run is caught up over the next ones). Per account the pass
reads the Palette account, Key Vault's current version and the app's passwords, one call each, and
asks Palette to validate the secret only when those leave it in doubt. Its Palette calls are
background work in the app's shared pace (:mod:`shared.state.pace`): onboardings go first.

What it finds (``kind`` of ``palette.onboarding.drift.detected``, and a field of the inventory row):

* ``secret_changed``: the cloud account in Palette still carries the product's annotations but not
  the product's record of which secret it put there (Palette never shows a secret back). Repaired
  by putting Key Vault's current secret back into the account.
* ``not_ours``: the cloud account no longer carries the product's annotations at all (a full PUT
  by anybody else, such as a Terraform apply, replaces them): the product can no longer prove it
  made it, so it changes nothing there (no repair, no rotation, no offboarding of it) and says so.
* ``secret_invalid``: Palette no longer accepts Key Vault's current secret. Repaired by a rotation
  (for a secret the product makes; an operator's secret needs its operator).
* ``account_missing``: the product keeps a secret for an account Palette no longer has.
* ``secret_missing``: a Palette account the product registered that Key Vault no longer backs.
* ``orphan_password``: a Graph password the product made for the account that is neither its
  current nor its previous one. Removed once seen for ``ORPHAN_GRACE_HOURS``.
* ``permissions``: for an account onboarded with ``azure.permissions``, the principal no longer
  holds (or never held, under ``enforce: false``) an action Palette needs at one of its scopes:
  announced as ``palette.onboarding.account.permissions_drifted`` with the finding per scope.
* ``holder_secret_invalid``: another holder of the secret (an Azure backup location,
  :mod:`shared.rotation.holders`) holds the Graph password the last rotation gave it, and the app
  no longer has that password. Repaired by a rotation, which gives it the new secret.
* ``holder_unmanaged``: a holder the product may not change that the last rotation did not know:
  the next rotation will keep the older passwords for it (``rotation.blocked``).

A kind that is found no more (or was repaired) is announced with ``drift.resolved``. Events go out
through the account's row (an outbox), once each. Each account is looked at under its name's lease,
so the pass never works on an account an onboarding, rotation or offboarding is changing; one held
is looked at next time.

First, the safety net (:mod:`shared.rotation.orphans`): Palette objects carrying the product's
annotations that no inventory row records are recorded (their request succeeded) or removed after
the orphan grace (their request failed or is unknown).
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared import credentials
from shared.engine.failures import FailureKind, classify
from shared.engine.plan import build_document
from shared.logs import Counts, bind, get_logger
from shared.rotation import holders
from shared.state import ConcurrentUpdateError
from shared.state.inventory import DRIFT, MANAGED, PHASES, SOURCE_GENERATED, AccountRecord
from shared.state.pace import in_background
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.clients.graph import PasswordCredential
    from shared.clients.keyvault import StoredSecret
    from shared.clients.palette import AzureAccount
    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.settings import RotationConfig
    from shared.state.inventory import Indexed

logger = get_logger(__name__)

KINDS = ("secret_changed", "not_ours", "secret_invalid", "account_missing", "secret_missing", "orphan_password",
         "permissions", "holder_secret_invalid", "holder_unmanaged")
#: How long the pass holds an account's name while it looks at it.
LEASE_SECONDS = 60.0


@dataclass
class DriftReport(Counts):
    accounts: int = 0
    detected: int = 0
    resolved: int = 0
    repaired: int = 0
    orphans_removed: int = 0
    objects_recorded: int = 0
    objects_removed: int = 0
    busy: int = 0
    errors: int = 0


@dataclass
class Found:
    """One account's drift this pass: the kinds, and what was repaired."""

    kinds: set[str]
    repaired: set[str]
    orphans: dict[str, str]  # keyId -> when it was first seen
    #: More data for a kind's ``detected`` event (the permissions finding per scope).
    data: dict[str, dict[str, object]] = field(default_factory=dict)
    #: The app's service principal, as read for the permissions check (kept on the row).
    principal_id: str = ""


#: The inventory's bookkeeping row of the drift cycle (:meth:`InventoryStore.read_meta`).
CURSOR_ROW = "drift"


@in_background
def drift_pass(clients: Services, queue: RequestQueue, config: RotationConfig, *,
               now: dt.datetime | None = None, whole: bool = False) -> DriftReport:
    """One run: the slice of the drift cycle that has fallen due since the last (``whole``: every
    managed account, the cycle left as it is). See :func:`_slice`."""
    from shared.rotation.orphans import safety_net

    moment = now or utcnow()
    report = DriftReport()
    owner = f"drift:{uuid.uuid4().hex[:12]}"
    locations = holders.ScopeLocations(clients.palette)  # each scope's backup locations, listed once a run
    cursor, etag = clients.inventory.read_meta(CURSOR_ROW)
    period = dt.timedelta(days=config.drift_period_days)
    net_due = whole or (parse_iso(str(cursor.get("NetAt") or "")) or dt.datetime.min.replace(tzinfo=dt.UTC)) \
        <= moment - period
    if net_due:  # the safety net reads every account: once a cycle
        try:
            net = safety_net(clients, config, moment)
            report.objects_recorded, report.objects_removed, report.errors = net.recorded, net.removed, net.errors
        except Exception:  # the accounts are still looked at
            report.errors += 1
            logger.warning("drift: the safety net could not run", exc_info=True)
    reached = str(cursor.get("Cursor") or "") or phase_of(moment, period)  # the first run starts the cycle here
    entries = _slice(clients, config, moment, cursor) if not whole else clients.inventory.due(DRIFT)
    looked_since = iso(moment - period / 2) if not whole else None  # looked at since: not again this run
    stopped = False  # at an account looked at next run (its name held by other work)
    for entry in entries:
        if report.accounts >= config.drift_slice_max and not whole and entry.value != reached:
            break
        report.accounts += 1
        try:
            looked = _look_at(entry.account_name, owner, clients, queue, config, moment, report, locations,
                              looked_since)
        except Exception:  # one account failing does not stop the pass
            looked = True
            report.errors += 1
            logger.warning("drift: account %s could not be checked", entry.account_name, exc_info=True)
        stopped = stopped or not looked
        if not stopped:
            reached = entry.value
    else:  # the whole slice: every phase up to now's was looked at, accounts there or not
        if not stopped:
            reached = phase_of(moment, period)
    if not whole:
        _move_cursor(clients, cursor, etag, reached, moment, net_due)
    logger.info("drift pass: %s", report.as_dict())
    return report


def phase_of(moment: dt.datetime, period: dt.timedelta) -> str:
    """Where in the drift cycle a moment is: the phase (:func:`~shared.state.inventory.drift_phase`)
    whose accounts are looked at then."""
    seconds = period.total_seconds()
    return f"{int((moment.timestamp() % seconds) / seconds * PHASES) % PHASES:06d}"


def _slice(clients: Services, config: RotationConfig, now: dt.datetime,
           cursor: dict[str, object]) -> Iterator[Indexed]:
    """The accounts due this run, oldest look first: their phases run from the cursor (the last
    phase looked at) to the phase of now. Every account is thereby looked at once a period, the
    runs spread evenly whenever accounts were onboarded; a run after a gap starts where the last
    stopped, and one that fell a whole period behind goes once round the cycle."""
    period = dt.timedelta(days=config.drift_period_days)
    target = phase_of(now, period)
    start = str(cursor.get("Cursor") or "")
    last_run = parse_iso(str(cursor.get("RunAt") or ""))
    if not start:
        return iter(())  # the first run starts the cycle here
    if last_run is not None and now - last_run < period:
        if start < target:
            return clients.inventory.due(DRIFT, target, after=start)
        if start == target:
            return iter(())
        wrap_to = target  # the cycle wrapped since the last run
    else:
        wrap_to = start  # a whole period behind: once round
    return itertools.chain(clients.inventory.due(DRIFT, after=start), clients.inventory.due(DRIFT, wrap_to))


def _move_cursor(clients: Services, cursor: dict[str, object], etag: str | None, reached: str, now: dt.datetime,
                 net_ran: bool) -> None:
    """Record how far the cycle got: every account up to phase ``reached`` was looked at this lap."""
    values = {"Cursor": reached, "RunAt": iso(now),
              "NetAt": iso(now) if net_ran else str(cursor.get("NetAt") or "")}
    try:
        clients.inventory.write_meta(CURSOR_ROW, values, etag)
    except ConcurrentUpdateError:
        logger.warning("drift: another run moved the cycle on meanwhile; this run's progress is not recorded")


def _look_at(account_name: str, owner: str, clients: Services, queue: RequestQueue, config: RotationConfig,
             now: dt.datetime, report: DriftReport, locations: holders.ScopeLocations,
             looked_since: str | None) -> bool:
    """Look at one account under its name's lease; False when an onboarding, rotation or
    offboarding holds it (it is looked at next run)."""
    from shared.engine.leases import NameLeases

    lease = NameLeases(clients.state, owner, [credentials.account_lease(account_name)])
    held = lease.acquire(utcnow() + dt.timedelta(seconds=LEASE_SECONDS))
    if held is not None:
        report.busy += 1
        logger.info("drift: account %s is being worked on by %s; it is looked at next time", account_name, held.owner)
        return False
    try:
        current = clients.inventory.get(account_name)  # as it is now that nobody changes it
        if current is None or current.status != MANAGED:
            return True
        if looked_since is not None and current.drift_looked_at >= looked_since:
            return True  # looked at already this lap (a run that stopped at a busy account)
        with bind(requestId=current.onboarded_by or None):
            found = _inspect(current, clients, queue, config, now, report, locations)
            _record(current, found, clients, now, report)
    finally:
        lease.release()
    return True


def _inspect(account: AccountRecord, clients: Services, queue: RequestQueue, config: RotationConfig,
             now: dt.datetime, report: DriftReport, locations: holders.ScopeLocations) -> Found:
    """What is wrong with one account, from the fewest reads: the Palette account, Key Vault's
    current version and the app's passwords, one read each; Palette validates the secret only when
    those leave it in doubt (:func:`_in_doubt`)."""
    found = Found(kinds=set(), repaired=set(), orphans={})
    palette = _palette_account(account, clients)
    current = _current_secret(account, clients)
    passwords = _passwords(account, clients)
    if palette is None:
        found.kinds.add("account_missing")
    elif not credentials.made_by_product(palette.annotations):
        found.kinds.add("not_ours")
        palette = None  # nothing below may read it as the product's
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
        elif _in_doubt(account, current, passwords, now) and not _palette_accepts(account, palette, current, clients):
            found.kinds.add("secret_invalid")
            if account.secret_source == SOURCE_GENERATED:
                _rotate(account, clients, queue)  # resolved when the next pass finds the new secret accepted
    if account.secret_source == SOURCE_GENERATED and not account.blocked_holders:  # else they are kept for them
        in_use = {_key_id_of(palette.annotations.get(credentials.SECRET_REF_ANNOTATION, "")) if palette else "",
                  current.tags.get(credentials.CREDENTIAL_ID_TAG, "") if current else "", *account.holders.values()}
        _orphans(account, clients, config, now, found, report, passwords, in_use=in_use - {""})
    if account.permissions:
        _permissions(account, clients, found)
    _holders(account, clients, queue, found, locations, passwords)
    return found


def _passwords(account: AccountRecord, clients: Services) -> list[PasswordCredential] | None:
    """The app registration's passwords (None: no Graph client, or the app is gone)."""
    if clients.graph is None or not account.client_id:
        return None
    try:
        return list(clients.graph.get_application(account.client_id).passwords)
    except ResourceNotFoundError:
        return None


def _in_doubt(account: AccountRecord, current: StoredSecret, passwords: list[PasswordCredential] | None,
              now: dt.datetime) -> bool:
    """Whether Palette must be asked if it still accepts Key Vault's current secret.

    Not for a secret the product made whose version the inventory recorded, whose Graph password
    (the keyId in its tag) the app still has and has not expired, and which has not been found
    invalid before: Palette holds that secret (its annotations say so) and Entra ID still takes it.
    An operator's secret (``keyVault``) carries no keyId, so it is always asked about."""
    if account.secret_source != SOURCE_GENERATED or "secret_invalid" in account.drift or passwords is None:
        return True
    key_id = current.tags.get(credentials.CREDENTIAL_ID_TAG, "")
    if not key_id or current.version != account.secret_version:
        return True
    password = next((item for item in passwords if item.key_id == key_id), None)
    return password is None or (password.end is not None and password.end <= now)


def _permissions(account: AccountRecord, clients: Services, found: Found) -> None:
    """Check the principal's Azure permissions again, as the onboarding's check did."""
    from shared.permissions.check import check_permissions

    if clients.authorization is None or clients.graph is None:
        return
    # The service principal's object id does not change for an app: read once, then kept on the row.
    found.principal_id = account.principal_id or clients.graph.service_principal_id(account.client_id)
    report = check_permissions(account.permissions, found.principal_id, clients.authorization)
    if not report.ok:
        found.kinds.add("permissions")
        found.data["permissions"] = {"permissions": report.as_data(), "detail": report.describe()}


def _holders(account: AccountRecord, clients: Services, queue: RequestQueue, found: Found,
             locations: holders.ScopeLocations, passwords: list[PasswordCredential] | None) -> None:
    """Other holders of the secret: one whose recorded password the app no longer has (a rotation
    is started, which gives it the new secret), and one the product may not change that the last
    rotation did not know of. Backup locations that cannot be read leave these kinds as they were."""
    try:
        holding = locations.holding(account)
    except HttpResponseError as exc:
        logger.warning("drift: the backup locations of account %s could not be read (%s)", account.account_name,
                       exc.status_code)
        found.kinds |= {kind for kind in account.drift if kind in ("holder_secret_invalid", "holder_unmanaged")}
        return
    known = {str(entry.get("uid")) for entry in account.blocked_holders}  # a rotation cannot change these
    recorded = [location for location in holding if account.holders.get(location.uid)]
    if recorded and clients.graph is not None:
        keys = {password.key_id for password in passwords or []}
        invalid = [location for location in recorded if account.holders[location.uid] not in keys]
        if invalid:
            found.kinds.add("holder_secret_invalid")
            found.data["holder_secret_invalid"] = {"holders": [
                {"uid": location.uid, "name": location.name, "keyId": account.holders[location.uid]}
                for location in invalid]}
            if account.secret_source == SOURCE_GENERATED and "secret_invalid" not in found.kinds \
                    and any(holders.may_change(location, account) and location.uid not in known
                            for location in invalid):
                _rotate(account, clients, queue)  # resolved when the next pass finds its password on the app
    unmanaged = [location for location in holding
                 if not holders.may_change(location, account) and location.uid not in known]
    if unmanaged:
        found.kinds.add("holder_unmanaged")
        found.data["holder_unmanaged"] = {"holders": [
            {"uid": location.uid, "name": location.name, "why": holders.NOT_OURS} for location in unmanaged]}


def _key_id_of(secret_ref: str) -> str:
    """The Graph keyId a ``SECRET_REF_ANNOTATION`` names (``key:<id>``), else ''."""
    return secret_ref.removeprefix("key:") if secret_ref.startswith("key:") else ""


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
    """Put Key Vault's current secret back into the account: only one that still carries the
    product's annotations, under the uid the inventory recorded."""
    from shared.clients.palette import AzureCredentials

    if palette.uid != account.palette_uid or not credentials.made_by_product(palette.annotations):
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
             found: Found, report: DriftReport, passwords: list[PasswordCredential] | None, *,
             in_use: set[str]) -> None:
    """The product's passwords of the account that are neither current nor previous, nor the one
    Palette or Key Vault holds now (``in_use``), are reported, and removed after the grace."""
    if clients.graph is None or passwords is None:
        return
    keep = ({account.current_key_id, account.previous_key_id} | in_use) - {""}
    grace = dt.timedelta(hours=config.orphan_grace_hours)
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
        events.append(_event(account, "account.permissions_drifted" if kind == "permissions" else "drift.detected",
                             kind, now, **found.data.get(kind, {})))
    for kind in sorted((before - still) | (found.repaired - before)):
        events.append(_event(account, "drift.resolved", kind, now))
    report.detected += len(found.kinds - before)
    report.resolved += len((before - still) | (found.repaired - before))

    def apply(row: AccountRecord) -> None:
        row.drift_looked_at = iso(now)
        row.principal_id = row.principal_id or found.principal_id
        row.drift = sorted(still)
        since = {kind: row.drift_since.get(kind, iso(now)) for kind in still if kind != "orphan_password"}
        since.update({f"orphan:{key}": first for key, first in found.orphans.items()})
        row.drift_since = since
        for event in events:
            row.record_event(event)
    updated = clients.inventory.update(account.account_name, apply)
    if updated is not None and updated.outbox:
        clients.inventory.flush(updated, clients.events)


_DETAIL = {
    "secret_changed": "the account in Palette no longer holds the secret this product put there (someone else "
                      "updated it, e.g. a Terraform apply with an old secret)",
    "secret_invalid": "Palette no longer accepts the account's current secret",
    "account_missing": "the Palette cloud account is gone, but this product still keeps its secret",
    "secret_missing": "Key Vault no longer holds the account's secret",
    "orphan_password": "a Graph password this product made is neither the current nor the previous one",
    "not_ours": "the Palette cloud account no longer carries this product's annotations (someone replaced it, e.g. "
                "a Terraform apply); the product changes nothing there until they are put back",
    "permissions": "the app's service principal lacks Azure permissions Palette needs at a scope of "
                   "azure.permissions",
    "holder_secret_invalid": "a backup location holds a client secret this product gave it that the app "
                             "registration no longer has",
    "holder_unmanaged": "a backup location this product may not change signs in as the app registration; "
                        "rotations keep the older passwords for it",
}


def _event(account: AccountRecord, short_type: str, kind: str, now: dt.datetime, **data: object) -> dict[str, object]:
    outcome = "resolved" if short_type == "drift.resolved" else "detected"
    return build_document(account.onboarded_by or account.account_name, account.account_name, short_type, "drift",
                          outcome, discriminator=f"{kind}:{now.date().isoformat()}", kind=kind,
                          accountName=account.account_name, **{"detail": _DETAIL[kind], **data})
