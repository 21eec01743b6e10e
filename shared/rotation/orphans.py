"""The drift pass's safety net: Palette objects that carry the product's annotations but that no
inventory row records.

Every request takes back what it made when it fails (:func:`shared.engine.fail.fail_request`), and
every onboarding records what it made when it succeeds; this net catches what slips through
anyway (a table restored from a backup, a bug). For each such object it finds the request its
annotations name:

* the request is **still running**: it is its request's, left alone;
* the request **failed**, or is **unknown**: the object is removed once it is older than the
  orphan grace (``ORPHAN_GRACE_HOURS``), with this request's proof on it checked again first;
  except an unknown request's cloud account whose secret Key Vault still keeps as the account's
  current one (a lost inventory): that one is recorded;
* the request **succeeded**: a cloud account gets its inventory row back (from the account and Key
  Vault); an SSH key or API key is recorded on its account's row when that row has none.

Only active API keys count (a replaced key is deactivated on purpose). Objects are looked for in
tenant scope and in every project the inventory knows. Each finding is announced once,
``drift.detected`` then ``drift.resolved`` with kind ``orphaned_object`` (removed) or
``unrecorded_object`` (recorded), through the outbox of the row of the request that made the object
(a row is written for an unknown request, saying so).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import credentials, made
from shared.credentials import SecretKind
from shared.engine.plan import build_document
from shared.logs import get_logger
from shared.state import ConcurrentUpdateError, RequestRecord, RequestStatus, retry
from shared.state.inventory import MANAGED, SOURCE_GENERATED, SOURCE_KEY_VAULT, AccountRecord
from shared.state.records import iso

if TYPE_CHECKING:
    from shared.clients.palette import AzureAccount
    from shared.services import Services
    from shared.settings import RotationConfig

logger = get_logger(__name__)


@dataclass(frozen=True)
class Found:
    """One product-annotated object: what it is, how to take it back, when it was made."""

    made: made.Made
    uid: str
    name: str
    request_id: str
    created: dt.datetime | None
    account: AzureAccount | None = None
    project_uid: str = ""


@dataclass
class NetReport:
    """What the safety net did in one pass."""

    recorded: int = 0
    removed: int = 0
    errors: int = 0


def safety_net(clients: Services, config: RotationConfig, now: dt.datetime) -> NetReport:
    report = NetReport()
    rows = list(clients.inventory.query())
    recorded = {uid for row in rows for uid in (row.palette_uid, row.ssh_key_uid, row.api_key_uid,
                                                row.previous_api_key_uid) if uid}
    grace = dt.timedelta(hours=config.orphan_grace_hours)
    for found in _annotated(clients, rows):
        if found.uid in recorded:
            continue
        try:
            _decide(found, clients, rows, grace, now, report)
        except Exception:  # one object failing does not stop the others
            report.errors += 1
            logger.warning("drift: %s could not be handled", found.made.describe(), exc_info=True)
    return report


def _annotated(clients: Services, rows: list[AccountRecord]) -> list[Found]:
    """Every object in the scopes the product works in that carries its annotations."""
    palette = clients.palette
    projects = sorted({row.project_uid for row in rows if row.project_uid}
                      | {row.ssh_key_project_uid for row in rows if row.ssh_key_project_uid})
    found: list[Found] = []
    for project in [None, *projects]:
        wanted = "project" if project else "tenant"
        for account in palette.list_azure_accounts(project_uid=project):
            if account.scope == wanted and credentials.made_by_product(account.annotations):
                found.append(Found(made.palette_account(account.name, project).made(uid=account.uid), account.uid,
                                   account.name, _request_of(account.annotations), account.created, account,
                                   project or ""))
        if project:
            for key in palette.list_ssh_keys(project_uid=project):
                if credentials.made_by_product(key.annotations):
                    found.append(Found(made.ssh_key(key.name, project).made(uid=key.uid), key.uid, key.name,
                                       _request_of(key.annotations), key.created, project_uid=project))
    for api_key in palette.list_api_keys():
        if api_key.is_active and credentials.made_by_product(api_key.annotations):
            found.append(Found(made.api_key(api_key.name).made(uid=api_key.uid), api_key.uid, api_key.name,
                               _request_of(api_key.annotations), api_key.created))
    return found


def _request_of(annotations: Any) -> str:
    return str(annotations.get(credentials.REQUEST_ID_ANNOTATION) or "")


def _decide(found: Found, clients: Services, rows: list[AccountRecord], grace: dt.timedelta, now: dt.datetime,
            report: NetReport) -> None:
    record = clients.state.get(found.request_id) if found.request_id else None
    if record is not None and not record.status.finished:
        return  # its request is still at work
    succeeded = record is not None and record.status is RequestStatus.SUCCEEDED
    if found.account is not None and (succeeded or (record is None and _key_vault_backs(found.account, clients))):
        if _record_account(found, clients, rows):
            _announce(found, record, clients, "unrecorded_object", "recorded", "recorded in the inventory")
            report.recorded += 1
        return
    if succeeded:
        if _record_key(found, record, clients):
            _announce(found, record, clients, "unrecorded_object", "recorded", "recorded on its account")
            report.recorded += 1
        return
    if found.created is None or now - found.created < grace:
        return  # within the grace: its request may still be taking it back
    _announce(found, record, clients, "orphaned_object", "removed",
              f"made by request {found.request_id or '(none)'}, which "
              f"{'failed' if record is not None else 'this product has no record of'}; removed")
    made.take_back(found.made, found.request_id, clients)
    report.removed += 1
    logger.warning("drift: removed %s, made by request %s", found.made.describe(), found.request_id)


def _key_vault_backs(account: AzureAccount, clients: Services) -> bool:
    """Whether Key Vault keeps, as the account's current client secret, the one Palette holds (by
    the account's secret-ref annotation): a managed account whose inventory row was lost."""
    versions = [v for v in clients.secrets.list_versions(credentials.secret_name(account.name,
                                                                                  SecretKind.CLIENT_SECRET))
                if v.enabled]
    if not versions or not credentials.is_secret_of(versions[0].tags, account.name, SecretKind.CLIENT_SECRET):
        return False
    current = versions[0]
    expected = credentials.secret_ref(current.tags.get(credentials.CREDENTIAL_ID_TAG), current.version)
    return account.annotations.get(credentials.SECRET_REF_ANNOTATION) == expected


def _record_account(found: Found, clients: Services, rows: list[AccountRecord]) -> bool:
    """Give a product account without a row its row back, from the account and Key Vault's current
    version. An account whose name another row holds (another uid) is left alone."""
    account = found.account
    assert account is not None
    if any(row.account_name == account.name for row in rows):
        logger.warning("drift: account %s (%s) carries this product's annotations, but the inventory records "
                       "another account of that name; it is left alone", account.name, account.uid)
        return False
    name = credentials.secret_name(account.name, SecretKind.CLIENT_SECRET)
    versions = [v for v in clients.secrets.list_versions(name) if v.enabled]
    current = versions[0] if versions and credentials.is_secret_of(
        versions[0].tags, account.name, SecretKind.CLIENT_SECRET) else None
    tags = current.tags if current is not None else {}
    key_id = tags.get(credentials.CREDENTIAL_ID_TAG, "")
    row = AccountRecord(
        account_name=account.name, scope=account.scope, project_uid=found.project_uid, palette_uid=account.uid,
        tenant_id=account.tenant_id or "", client_id=account.client_id or "",
        secret_source=SOURCE_GENERATED if key_id else SOURCE_KEY_VAULT, secret_name=name if current else "",
        secret_version=current.version if current else "", current_key_id=key_id,
        expires_on=iso(current.expires_on) if current and current.expires_on else "",
        secret_created_on=iso(current.created_on) if current and current.created_on else "",
        validity_days=int(tags.get(credentials.VALIDITY_PERIOD_DAYS_TAG) or 180),
        onboarded_by=found.request_id, status=MANAGED)
    try:
        clients.inventory.create(row)
    except ConcurrentUpdateError:
        return False  # recorded meanwhile
    rows.append(row)
    logger.warning("drift: recorded account %s (%s) in the inventory again", account.name, account.uid)
    return True


def _record_key(found: Found, record: RequestRecord | None, clients: Services) -> bool:
    """Record an SSH key or API key of a request that succeeded on its account's row, when the row
    was onboarded by that request and holds no key of that kind."""
    if record is None:
        return False
    ssh = found.made.kind is made.Kind.SSH_KEY

    def attach(row: AccountRecord) -> None:
        if row.onboarded_by != record.request_id or (row.ssh_key_uid if ssh else row.api_key_uid):
            raise retry.Unchanged
        if ssh:
            row.ssh_key_uid, row.ssh_key_name, row.ssh_key_project_uid = found.uid, found.name, found.project_uid
            row.ssh_key_owned = True
        else:
            row.api_key_uid, row.api_key_name = found.uid, found.name
    inventory = clients.inventory
    before = inventory.get(record.account_name)
    after = retry.update(before, attach, write=inventory.replace, read=lambda: inventory.get(record.account_name))
    return after is not None and after is not before


def _announce(found: Found, record: RequestRecord | None, clients: Services, kind: str, action: str,
              detail: str) -> None:
    """Record the finding in the outbox of the row of the request that made the object (writing a
    row for an unknown request), then send it."""
    request_id = found.request_id or f"unknown-{found.uid}"
    account_name = found.account.name if found.account is not None else (record.account_name if record else "")
    account_name = account_name or "unknown"
    data = {"kind": kind, "action": action, "object": found.made.describe(), "detail": detail,
            "palette": {"uid": found.uid}}
    events = [build_document(request_id, account_name, short, "drift", outcome, discriminator=f"{kind}:{found.uid}",
                             **data) for short, outcome in (("drift.detected", "detected"), ("drift.resolved",
                                                                                                   "resolved"))]
    store = clients.state

    def add(row: RequestRecord) -> None:
        added = [row.record_event(event) for event in events]
        if not any(added):
            raise retry.Unchanged

    current = record if record is not None else store.get(request_id)
    if current is None:
        unknown = RequestRecord(request_id=request_id, account_name=account_name, fingerprint="unknown:",
                                status=RequestStatus.FAILED, current_step="drift", error_reason="unknown_request",
                                error_message=("This product has no record of this request, but Palette objects carry "
                                               "its annotations; the drift pass took care of them (see its events)."))
        for event in events:
            unknown.record_event(event)
        try:
            current = store.create(unknown)
        except ConcurrentUpdateError:
            current = store.get(request_id)
    else:
        current = retry.update(current, add, write=store.replace, read=lambda: store.get(request_id))
    if current is not None:
        store.flush(current, clients.events)
