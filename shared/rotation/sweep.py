"""What starts a rotation: the daily sweep, Key Vault's near-expiry event, and a person asking.

All three put a rotation request on the queue (:mod:`shared.engine.enqueue`); the runner does the
rest. The sweep reads only what is due from the inventory (one query per kind), so its calls grow
with the accounts due, not with the accounts managed:

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
from shared.state.inventory import MANAGED, SOURCE_GENERATED, SOURCE_KEY_VAULT, AccountRecord
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.settings import RotationConfig

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


def sweep(clients: Services, queue: RequestQueue, config: RotationConfig, *,
          now: dt.datetime | None = None) -> RotationSweepReport:
    """Start the rotations that are due, warn of expiring secrets the product does not rotate."""
    moment = now or utcnow()
    horizon = iso(moment + dt.timedelta(days=config.threshold_days))
    report = RotationSweepReport()
    due_filter = "Status eq @managed and SecretSource eq @source and ExpiresOn ne '' and ExpiresOn le @horizon"
    for account in clients.inventory.query(due_filter, {"managed": MANAGED, "source": SOURCE_GENERATED,
                                                        "horizon": horizon}):
        report.due += 1
        with bind(requestId=account.request_id):
            try:
                _start_due(account, clients, queue, config, moment, report)
            except Exception:  # one account failing does not stop the sweep
                report.errors += 1
                logger.warning("rotation sweep: account %s could not be started", account.account_name, exc_info=True)
    for account in clients.inventory.query(due_filter, {"managed": MANAGED, "source": SOURCE_KEY_VAULT,
                                                        "horizon": horizon}):
        try:
            report.warned += _warn(account, clients, config, moment)
        except Exception:
            report.errors += 1
            logger.warning("rotation sweep: account %s could not be warned about", account.account_name,
                           exc_info=True)
    keys_due = "Status eq @managed and ApiKeyUid ne '' and ApiKeyExpiresOn ne '' and ApiKeyExpiresOn le @horizon"
    for account in clients.inventory.query(keys_due, {"managed": MANAGED, "horizon": horizon}):
        if _renewed_lately(account, moment):
            continue
        try:
            report.api_keys += _renew(account, clients, queue)
        except Exception:  # one account failing does not stop the sweep
            report.errors += 1
            logger.warning("rotation sweep: the API key of account %s could not be renewed", account.account_name,
                           exc_info=True)
    replaced = "Status eq @managed and PreviousApiKeyUid ne '' and PreviousApiKeyRevokeAfter le @now"
    for account in clients.inventory.query(replaced, {"managed": MANAGED, "now": iso(moment)}):
        try:
            outcome = advance_replaced_key(account, clients, config, moment)
            report.deactivated += outcome == "deactivated"
            report.deleted += outcome == "deleted"
        except Exception:
            report.errors += 1
            logger.warning("rotation sweep: the replaced API key of account %s could not be taken to its next stage",
                           account.account_name, exc_info=True)
    for account in clients.inventory.query("OutboxPending eq true"):
        flushed = clients.inventory.flush(account, clients.events)
        report.flushed += 0 if flushed.outbox else 1
    logger.info("rotation sweep: %s", report.as_dict())
    return report


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
