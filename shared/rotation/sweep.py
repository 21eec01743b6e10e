"""What starts a rotation: the daily sweep, Key Vault's near-expiry event, and a person asking.

All three put a rotation request on the queue (:mod:`shared.engine.enqueue`); the runner does the
rest. The sweep reads only what is due, from the inventory's index (a key-range read per kind and
partition, then each due account's row), so its cost grows with the accounts due, not with the
accounts managed:

* accounts whose generated secret is due get a rotation, under an id made of the account, the
  version and the day, so the timer and the Event Grid event of one day ask for the same one
  (and a failed one is tried again the next day);
* accounts whose secret the product did not make (``azure.secret.source = keyVault``) are never
  rotated: at the threshold, and again 7 and 1 days before the end, a
  ``palette.onboarding.secret.expiring`` event says so, once per version and milestone, sent
  through the account's row as an outbox;
* events an outage left in account rows are sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared import credentials
from shared.credentials import SecretKind
from shared.engine.enqueue import enqueue
from shared.engine.plan import build_document
from shared.logs import Counts, bind, get_logger
from shared.rotation.apikeys import advance_replaced_key
from shared.rotation.models import RotationRequest, RotationTrigger
from shared.rotation.steps import is_due
from shared.state.inventory import (
    API_KEY,
    EXPIRES,
    MANAGED,
    OUTBOX,
    REVOKE,
    SOURCE_GENERATED,
    SOURCE_KEY_VAULT,
    AccountRecord,
)
from shared.state.pace import in_background
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.settings import RotationConfig
    from shared.state.inventory import InventoryStore

logger = get_logger(__name__)


@dataclass
class RotationSweepReport(Counts):
    """What one sweep did (logged as one line by the timer)."""

    due: int = 0
    enqueued: int = 0
    too_young: int = 0
    in_flight: int = 0
    warned: int = 0
    api_keys: int = 0
    deactivated: int = 0
    deleted: int = 0
    flushed: int = 0
    errors: int = 0


def rotation_id(account: AccountRecord, day: dt.date) -> str:
    """The id of the due rotation of ``account``'s current version on ``day``."""
    digest = hashlib.sha256(f"{account.account_name}|{account.secret_version}|{day.isoformat()}".encode())
    return f"rot-{digest.hexdigest()[:24]}"


@in_background
def sweep(clients: Services, queue: RequestQueue, config: RotationConfig, *,
          now: dt.datetime | None = None) -> RotationSweepReport:
    """Start the rotations that are due, warn of expiring secrets the product does not rotate.

    What is due is read from the inventory's index (:mod:`shared.state.inventory`), rebuilt first
    if it was lost; each account's row is then read again and decides (the index only finds it)."""
    moment = now or utcnow()
    horizon = iso(moment + dt.timedelta(days=config.threshold_days))
    report = RotationSweepReport()
    inventory = clients.inventory
    if not inventory.index_ready():
        logger.warning("rotation sweep: the inventory's index is missing; rebuilding it from the account rows")
        inventory.rebuild_index()
    for account in _rows(inventory, EXPIRES, horizon):
        if account.expires_on > horizon:
            continue
        if account.secret_source == SOURCE_KEY_VAULT:
            _each(account, report, "could not be warned about",
                  lambda row: setattr(report, "warned", report.warned + _warn(row, clients, config, moment)))
        elif account.secret_source == SOURCE_GENERATED:
            report.due += 1
            _each(account, report, "could not be started",
                  lambda row: _start_due(row, clients, queue, config, moment, report))
    for account in _rows(inventory, API_KEY, horizon):
        if account.api_key_uid and account.api_key_expires_on and account.api_key_expires_on <= horizon \
                and not _renewed_lately(account, moment):
            _each(account, report, "could not have its API key renewed",
                  lambda row: setattr(report, "api_keys", report.api_keys + _renew(row, clients, queue)))
    for account in _rows(inventory, REVOKE, iso(moment)):
        if account.previous_api_key_uid and account.previous_api_key_revoke_after <= iso(moment):
            _each(account, report, "could not have its replaced API key taken to its next stage",
                  lambda row: _advance(row, clients, config, moment, report))
    for entry in inventory.due(OUTBOX):
        pending = inventory.get(entry.account_name)
        if pending is not None and pending.outbox:
            flushed = inventory.flush(pending, clients.events)
            report.flushed += 0 if flushed.outbox else 1
    logger.info("rotation sweep: %s", report.as_dict())
    return report


def _rows(inventory: InventoryStore, kind: str, upto: str) -> Iterator[AccountRecord]:
    """The managed accounts the index has due by ``upto`` for ``kind``, each read as it is now."""
    for entry in inventory.due(kind, upto):
        account = inventory.get(entry.account_name)
        if account is not None and account.status == MANAGED:
            yield account


def _each(account: AccountRecord, report: RotationSweepReport, failed: str,
          work: Callable[[AccountRecord], object]) -> None:
    """Do one account's part of the sweep; one account failing does not stop the sweep."""
    with bind(requestId=account.request_id):
        try:
            work(account)
        except Exception:
            report.errors += 1
            logger.warning("rotation sweep: account %s %s", account.account_name, failed, exc_info=True)


def _advance(account: AccountRecord, clients: Services, config: RotationConfig, now: dt.datetime,
             report: RotationSweepReport) -> None:
    outcome = advance_replaced_key(account, clients, config, now)
    report.deactivated += outcome == "deactivated"
    report.deleted += outcome == "deleted"


def _start_due(account: AccountRecord, clients: Services, queue: RequestQueue, config: RotationConfig,
               now: dt.datetime, report: RotationSweepReport) -> None:
    logger.info("rotation check: account %s expires %s", account.account_name, account.expires_on)
    if not is_due(account, now, config):
        report.too_young += 1
        return
    if _running(clients, account):
        report.in_flight += 1
        return
    request = RotationRequest.of(rotation_id(account, now.date()), account.account_name, RotationTrigger.DUE,
                                 account.secret_version or None)
    _start(clients, queue, request)
    report.enqueued += 1


def _running(clients: Services, account: AccountRecord) -> str:
    """The id of a rotation of the account still in flight, or ''."""
    if not account.rotation_in_flight:
        return ""
    record = clients.state.get(account.rotation_in_flight)
    return account.rotation_in_flight if record is not None and not record.status.finished else ""


def _start(clients: Services, queue: RequestQueue, request: RotationRequest) -> None:
    from shared.rotation.plan import ROTATION

    def in_flight(record: AccountRecord) -> None:
        record.rotation_in_flight = request.request_id
    clients.inventory.update(request.account_name, in_flight)
    enqueue(clients, queue, ROTATION, request)


#: A key renewed less than an overlap ago is renewed again only this close to its expiry.
RENEW_AGAIN_BEFORE = dt.timedelta(days=1)


def _renewed_lately(account: AccountRecord, now: dt.datetime) -> bool:
    """The key replaced last is still in its overlap (a key whose whole lifetime is under the
    threshold is due from the start): the current one waits for that overlap to end, unless it
    would expire first."""
    from shared.rotation.apikeys import ACTIVE

    overlap_ends = parse_iso(account.previous_api_key_revoke_after)
    expires = parse_iso(account.api_key_expires_on)
    return bool(account.previous_api_key_uid) and account.previous_api_key_state == ACTIVE \
        and overlap_ends is not None and overlap_ends > now \
        and (expires is None or expires > now + RENEW_AGAIN_BEFORE)


def _renew(account: AccountRecord, clients: Services, queue: RequestQueue) -> int:
    """Start the renewal of the account's API key (one per key: the id is made of it)."""
    from shared.rotation.apikeys import API_KEY_RENEWAL, ApiKeyRenewal, renewal_id

    _, created = enqueue(clients, queue, API_KEY_RENEWAL,
                         ApiKeyRenewal.of(renewal_id(account), account.account_name, account.api_key_uid))
    return 1 if created else 0


# ----------------------------------------------------------------------------- on demand, events

class RotateNow(StrEnum):
    ACCEPTED = "accepted"
    NOT_MANAGED = "not_managed"
    IN_FLIGHT = "in_flight"


def rotate_now(clients: Services, queue: RequestQueue, account_name: str) -> tuple[RotateNow, str]:
    """``POST /api/rotations/{accountName}``: (what happened, the rotation's id)."""
    account = clients.inventory.get(account_name)
    if account is None or account.status != MANAGED:
        return RotateNow.NOT_MANAGED, ""
    running = _running(clients, account)
    if running:
        return RotateNow.IN_FLIGHT, running
    request = RotationRequest.of(f"rot-{uuid.uuid4().hex[:24]}", account_name, RotationTrigger.ON_DEMAND)
    _start(clients, queue, request)
    return RotateNow.ACCEPTED, request.request_id


def near_expiry(data: Mapping[str, Any], clients: Services, queue: RequestQueue, config: RotationConfig, *,
                now: dt.datetime | None = None) -> str:
    """Key Vault's ``SecretNearExpiry``: start the account's due rotation, unless the event is
    about a version that is no longer current (stale) or a secret the product does not rotate.
    The data is read tolerantly (field names in any case, missing fields). Returns what was done."""
    fields = {str(k).lower(): v for k, v in data.items()}
    name = str(fields.get("objectname") or "")
    version = str(fields.get("version") or "")
    parsed = credentials.parse_secret_name(name)
    if parsed is None or parsed[1] is not SecretKind.CLIENT_SECRET:
        return f"ignored: {name or 'the secret'} is not a client secret this product keeps"
    account = clients.inventory.get(parsed[0])
    if account is None or account.status != MANAGED:
        return f"ignored: account {parsed[0]} is not managed"
    if version and version != account.secret_version:
        return f"ignored: version {version} is stale (the current one is {account.secret_version})"
    moment = now or utcnow()
    report = RotationSweepReport()
    _start_due(account, clients, queue, config, moment, report)
    if report.enqueued:
        return f"rotation started for account {account.account_name}"
    return f"nothing to do for account {account.account_name} ({'in flight' if report.in_flight else 'too young'})"


# ------------------------------------------------------------------------------- expiry warnings

def _warn(account: AccountRecord, clients: Services, config: RotationConfig, now: dt.datetime) -> int:
    """Announce an expiring secret the product does not rotate, once per version and milestone."""
    expires = parse_iso(account.expires_on)
    if expires is None:
        return 0
    left = expires - now
    milestones = sorted({config.threshold_days, *config.expiry_warning_days})
    reached = [days for days in milestones if left <= dt.timedelta(days=days)]
    if not reached:
        return 0
    milestone = min(reached)
    mark = f"{account.secret_version}:{milestone}"
    if mark in account.warned:
        return 0
    # The requestId of a warning is the ticket that onboarded the account: the one to tell.
    event = build_document(account.onboarded_by or account.account_name, account.account_name, "secret.expiring",
                           "sweep", "expiring",
                           discriminator=mark, accountName=account.account_name, keyVaultSecret=account.secret_name,
                           version=account.secret_version, expiresOn=account.expires_on, milestoneDays=milestone,
                           message=f"The client secret of account {account.account_name} (Key Vault secret "
                                   f"{account.secret_name}) expires {account.expires_on}; this product does not "
                                   "rotate secrets it did not make: renew it and update the Key Vault secret.")

    def record(row: AccountRecord) -> None:
        if mark not in row.warned:
            row.warned = [*row.warned, mark]
            row.record_event(event)
    updated = clients.inventory.update(account.account_name, record)
    if updated is not None:
        clients.inventory.flush(updated, clients.events)
    return 1
