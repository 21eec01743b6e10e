"""Renewing the Palette API keys the product created, before they expire.

Consumers read an account's API key from Key Vault (``palette-<account>-api-key``), so a renewal
is: make the replacement, keep its value as the secret's new version (consumers pick it up), and
retire the old key only after an overlap (``API_KEY_OVERLAP_DAYS``, 7), so a consumer that cached
the old value has time to read again. Retiring can be undone: the old key is first deactivated
(Palette refuses it), and deleted only ``API_KEY_DELETE_AFTER_DAYS`` (14) later; until then
``POST /api/accounts/{name}/previous-api-key/reactivate`` makes it work again for another overlap.
Events: ``apikey.renewed``, then ``apikey.deactivated``, ``apikey.deleted`` (and
``apikey.reactivated``), each with the key's uid; the outcome ``left`` (the key lost the product's
annotations: it is left alone and forgotten) or ``gone`` (deleted by someone else) instead when so.

The replacement keeps the key's name (what users see in Palette); the old key is renamed
``<name>-replaced`` first, so nothing relies on Palette accepting two keys of one name.

    {"operation": "renewApiKey", "requestId": "akr-<24 hex>", "accountName": "...",
     "apiKeyUid": "<the key to replace>"}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from shared import credentials, made
from shared.credentials import SecretKind
from shared.engine.plan import Finish, Plan, StepDone, WorkContext, build_document
from shared.errors import PermanentStepError, StepInProgressError
from shared.logs import get_logger
from shared.made import create_once
from shared.models.fields import AccountName, RequestId  # noqa: TC001 - pydantic reads annotations at run time
from shared.models.request import WireModel
from shared.state import StepOutcome
from shared.state.inventory import MANAGED, AccountRecord
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from shared.clients.palette import PaletteClient
    from shared.engine.failures import Failure
    from shared.engine.record import RecordHandle
    from shared.services import Services
    from shared.settings import PipelineConfig, RotationConfig
    from shared.state import RequestRecord

logger = get_logger(__name__)

REPLACED_SUFFIX = "-replaced"
DEFAULT_LIFETIME_DAYS = 90

SKIPPED = "_skipped"
OLD_UID = "replacedApiKeyUid"
NAME = "apiKeyName"
USER_UID = "apiKeyUserUid"
LIFETIME_DAYS = "lifetimeDays"
NEW_UID = "apiKeyUid"
SECRET_ID = "apiKeySecretId"
EXPIRES_ON = "apiKeyExpiresOn"
RENAMED = "_oldKeyRenamed"
# What the renewal makes, by the keys its fences record it under (shared.made).
API_KEY = "apiKey"
API_KEY_VERSION = "secret:api-key"


class ApiKeyRenewal(WireModel):
    operation: Literal["renewApiKey"]
    request_id: RequestId
    account_name: AccountName
    api_key_uid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")

    @classmethod
    def of(cls, request_id: str, account_name: str, api_key_uid: str) -> ApiKeyRenewal:
        return cls.model_validate({"operation": "renewApiKey", "requestId": request_id, "accountName": account_name,
                                   "apiKeyUid": api_key_uid})


def renewal_id(account: AccountRecord) -> str:
    digest = hashlib.sha256(f"{account.account_name}|{account.api_key_uid}".encode())
    return f"akr-{digest.hexdigest()[:24]}"


@dataclass
class RenewalContext(WorkContext):
    request: ApiKeyRenewal


def _account(ctx: RenewalContext) -> AccountRecord:
    account = ctx.clients.inventory.get(ctx.account_name)
    if account is None or account.status != MANAGED:
        raise PermanentStepError("plan", "not_managed",
                                 f"Account '{ctx.account_name}' is not one this product manages.")
    return account


def plan(ctx: RenewalContext) -> StepDone:
    account = _account(ctx)
    if account.api_key_uid != ctx.request.api_key_uid:
        return StepDone("skipped: the key was already replaced", {SKIPPED: "replaced"}, outcome=StepOutcome.SKIPPED)
    from azure.core.exceptions import ResourceNotFoundError

    try:
        key = ctx.clients.palette.get_api_key(ctx.request.api_key_uid)
    except ResourceNotFoundError:
        raise PermanentStepError("plan", "api_key_missing",
                                 f"Palette API key {ctx.request.api_key_uid} of account '{ctx.account_name}' is gone; "
                                 "onboard the account again with an apiKey to get a new one.") from None
    if not credentials.made_by_product(key.annotations):
        raise PermanentStepError("plan", "api_key_not_ours",
                                 f"Palette API key {key.uid} does not carry this product's annotations; it is left "
                                 "alone.")
    lifetime = DEFAULT_LIFETIME_DAYS
    if key.expiry and key.created and key.expiry > key.created:
        lifetime = max(1, round((key.expiry - key.created).total_seconds() / 86400))
    return StepDone(f"renewing API key {key.name}", {OLD_UID: key.uid, NAME: key.name.removesuffix(REPLACED_SUFFIX),
                                                     USER_UID: key.user_uid or "", LIFETIME_DAYS: str(lifetime)})


def renew(ctx: RenewalContext) -> StepDone:
    if ctx.result(SKIPPED):
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    palette = ctx.clients.palette
    store = ctx.clients.secrets
    old_uid, name = ctx.result(OLD_UID) or "", ctx.result(NAME) or ""
    secret = credentials.secret_name(ctx.account_name, SecretKind.API_KEY)
    expiry = utcnow() + dt.timedelta(days=int(ctx.result(LIFETIME_DAYS) or DEFAULT_LIFETIME_DAYS))

    def ours() -> list[str]:
        return [k.uid for k in palette.list_api_keys()
                if k.name == name and credentials.made_by_request(k.annotations, ctx.request_id)]

    key_entry = made.api_key(name)
    earlier = ctx.handle.made(API_KEY)
    if earlier is not None:
        for uid in ours():
            stored = store.find_version(secret, tag=credentials.PALETTE_UID_TAG, value=uid)
            if stored is not None:
                return _renewed(ctx, uid, stored.id, stored.expires_on, stored.version)
        made.take_back(earlier, ctx.request_id, ctx.clients)  # made before a crash; its value is lost with it
    if not ctx.result(RENAMED):
        _retire_earlier_replaced_key(ctx, old_uid)
        old = palette.get_api_key(old_uid)
        ctx.handle.fence()
        palette.update_api_key(old_uid, name=f"{name}{REPLACED_SUFFIX}", expiry=old.expiry or expiry,
                               annotations={k: v for k, v in old.annotations.items() if k != "description"}
                               | ({"description": old.description} if old.description else {}))
        ctx.handle.write(lambda row: row.results.update({RENAMED: "1"}))
    ctx.handle.fence(**{API_KEY: key_entry, API_KEY_VERSION: made.key_vault_version(secret)})

    def lost_answer() -> None:
        made.take_back(key_entry, ctx.request_id, ctx.clients)  # its value is lost with the answer
        return None

    created = create_once(lambda: palette.create_api_key(
        name, user_uid=ctx.result(USER_UID) or "", expiry=expiry,
        annotations=credentials.ownership_annotations(ctx.request_id)), lost_answer)
    tags = credentials.secret_tags(ctx.account_name, SecretKind.API_KEY, request_id=ctx.request_id,
                                   tenant_id=_account(ctx).tenant_id, client_id=_account(ctx).client_id,
                                   **{credentials.KEY_NAME_TAG: name, credentials.PALETTE_UID_TAG: created.uid})
    stored = store.set_secret(secret, created.value, content_type=credentials.CONTENT_TYPES[SecretKind.API_KEY],
                              expires_on=expiry, tags=tags)
    return _renewed(ctx, created.uid, stored.id, stored.expires_on, stored.version)


def _retire_earlier_replaced_key(ctx: RenewalContext, old_uid: str) -> None:
    """A key renewed again while the key it replaced is still kept (in its overlap or its grace):
    that one has been replaced twice and is deleted first, through the same stage the sweep takes
    (it frees the ``-replaced`` name, and the account keeps track of one replaced key)."""
    account = _account(ctx)
    uid, state = account.previous_api_key_uid, account.previous_api_key_state
    if not uid or uid == old_uid:
        return
    ctx.handle.fence()  # a delete: only while this delivery provably holds the request
    now = utcnow()
    held = _HELD.get(state)
    if held is not None:
        due = parse_iso(account.previous_api_key_revoke_after)
        if due is not None and due > now:
            raise StepInProgressError(f"The replaced API key {uid} is being {held.name}d; the renewal goes on "
                                      "once that is done.")
        _carry(held, ctx.account_name, uid, ctx.clients, ctx.config.rotation, now, due_only=True)
        account = _account(ctx)
    if account.previous_api_key_uid == uid:
        stage = DELETE if account.previous_api_key_state == DEACTIVATED else _RETIRE
        _carry(stage, ctx.account_name, uid, ctx.clients, ctx.config.rotation, now, due_only=False)
    if _account(ctx).previous_api_key_uid == uid:
        raise StepInProgressError(f"The replaced API key {uid} could not be deleted yet; the renewal goes on once "
                                  "it is.")


def _renewed(ctx: RenewalContext, uid: str, secret_id: str, expires: dt.datetime | None, version: str) -> StepDone:
    results = {NEW_UID: uid, SECRET_ID: secret_id, EXPIRES_ON: iso(expires) if expires else ""}
    revoke_after = iso(utcnow() + dt.timedelta(days=ctx.config.rotation.api_key_overlap_days))
    return StepDone("replacement in Palette and Key Vault", results, [ctx.event(
        "apikey.renewed", "renew", "renewed", palette={"apiKeyUid": uid, "replacedApiKeyUid": ctx.result(OLD_UID)},
        keyVaultSecretId=secret_id, expiresOn=results[EXPIRES_ON], revokesReplacedAfter=revoke_after)],
        made={API_KEY: made.api_key(ctx.result(NAME) or "").made(uid=uid),
              API_KEY_VERSION: made.key_vault_version(
                  credentials.secret_name(ctx.account_name, SecretKind.API_KEY)).made(version=version)})


def _finish(ctx: RenewalContext) -> Finish:
    results = ctx.handle.record.results
    if results.get(SKIPPED):
        return Finish(step="inventory", detail="skipped: already replaced")
    revoke_after = iso(utcnow() + dt.timedelta(days=ctx.config.rotation.api_key_overlap_days))

    def apply(account: AccountRecord) -> None:
        account.previous_api_key_uid = results.get(OLD_UID, "")
        account.previous_api_key_state = ACTIVE
        account.previous_api_key_revoke_after = revoke_after
        account.api_key_uid = results.get(NEW_UID, "")
        account.api_key_expires_on = results.get(EXPIRES_ON, "")
    return Finish(step="inventory", detail=f"old key deactivated after {revoke_after}",
                  then=lambda: ctx.clients.inventory.update(ctx.account_name, apply))


# -- the replaced key: deactivated after the overlap, deleted after a grace, reactivated on demand --
#
# Each stage is taken in the inventory row before the Palette call that carries it out (an "-ing"
# state, held for STAGE_LEASE), so two actors (the sweep, the reactivation route) never call at
# once, and a stage a crash interrupted is finished by whoever finds its hold lapsed. What was
# announced is what Palette holds: the event is recorded with the write that ends the stage.

ACTIVE = ""  # in its overlap: still works; deactivated at previous_api_key_revoke_after
DEACTIVATED = "deactivated"  # refused by Palette; deleted at previous_api_key_revoke_after
STAGE_LEASE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class _Stage:
    name: str  # deactivate, delete, reactivate: announced as apikey.<name>d
    starts: str  # the settled state it starts from
    holding: str  # the state while it is carried out
    ends: str | None  # the settled state after it (None: the key is forgotten)
    palette_call: Callable[[PaletteClient, str], None]  # what carries it out
    next_stage: str = ""  # the event's field for when the next stage is due ...
    wait_days: Callable[[RotationConfig], float] | None = None  # ... and how long after this one

    @property
    def outcome(self) -> str:
        return f"{self.name}d"

    def next_due(self, config: RotationConfig, now: dt.datetime) -> str:
        return iso(now + dt.timedelta(days=self.wait_days(config))) if self.wait_days is not None else ""


DEACTIVATE = _Stage("deactivate", ACTIVE, "deactivating", DEACTIVATED, lambda p, uid: p.revoke_api_key(uid),
                    "deleteAfter", lambda config: config.api_key_delete_after_days)
DELETE = _Stage("delete", DEACTIVATED, "deleting", None, lambda p, uid: p.delete_api_key(uid))
REACTIVATE = _Stage("reactivate", DEACTIVATED, "reactivating", ACTIVE, lambda p, uid: p.reactivate_api_key(uid),
                    "deactivateAfter",
                    lambda config: config.api_key_overlap_days)
#: A replaced key still in its overlap when its successor is renewed too: deleted at once.
_RETIRE = _Stage("delete", ACTIVE, "deleting", None, lambda p, uid: p.delete_api_key(uid))
_HELD = {stage.holding: stage for stage in (DEACTIVATE, DELETE, REACTIVATE)}
_DUE = {ACTIVE: DEACTIVATE, DEACTIVATED: DELETE}


class StageHeld(Exception):
    """Another actor is carrying out a stage of this key; try again after ``retry_after``."""

    def __init__(self, stage: str, retry_after: dt.datetime) -> None:
        super().__init__(f"the replaced API key is being {stage}d")
        self.stage = stage
        self.retry_after = retry_after


def advance_replaced_key(account: AccountRecord, clients: Services, config: RotationConfig,
                         now: dt.datetime) -> str | None:
    """The sweep's part: carry an account's replaced API key through the stage that is due (or
    finish one whose holder stopped). Returns the outcome announced, or None when nothing was due."""
    uid, state = account.previous_api_key_uid, account.previous_api_key_state
    due = parse_iso(account.previous_api_key_revoke_after)
    stage = _HELD.get(state) or _DUE.get(state)
    if not uid or stage is None or due is None or due > now:
        return None
    return _carry(stage, account.account_name, uid, clients, config, now, due_only=True)


def reactivate_replaced_key(account_name: str, clients: Services, config: RotationConfig,
                            now: dt.datetime) -> AccountRecord | None:
    """Make the account's replaced API key work again (a consumer still needs it): it gets a new
    overlap, after which the sweep deactivates it again. Returns the account row afterwards, or
    None when the account has no replaced key (never replaced, or deleted).

    Raises
    ------
    StageHeld
        A stage of the key is being carried out right now.
    """
    account = clients.inventory.get(account_name)
    if account is None or account.status != MANAGED or not account.previous_api_key_uid:
        return None
    uid, state = account.previous_api_key_uid, account.previous_api_key_state
    held = _HELD.get(state)
    due = parse_iso(account.previous_api_key_revoke_after) or now
    if held is not None and due > now:
        raise StageHeld(held.name, due)
    if held is not None:  # its holder stopped: finish that stage first
        _carry(held, account_name, uid, clients, config, now, due_only=True)
    if state != ACTIVE:
        _carry(REACTIVATE, account_name, uid, clients, config, now, due_only=False)
    after = clients.inventory.get(account_name)
    return after if after is not None and after.previous_api_key_uid == uid else None


def _carry(stage: _Stage, account_name: str, uid: str, clients: Services, config: RotationConfig,
           now: dt.datetime, *, due_only: bool) -> str | None:
    """Hold ``stage`` in the row, make its Palette call (only on a key that carries the product's
    annotations), then end it with its event. Returns the outcome, or None when the stage could
    not be taken (another actor moved the key meanwhile)."""
    from shared.state.retry import Unchanged

    held_until = iso(now + STAGE_LEASE)
    taken: list[bool] = []

    def take(row: AccountRecord) -> None:
        taken.clear()
        due = parse_iso(row.previous_api_key_revoke_after)
        lapsed = due is not None and due <= now
        startable = row.previous_api_key_state == stage.starts and (lapsed or not due_only)
        if row.previous_api_key_uid != uid or not (startable or (row.previous_api_key_state == stage.holding
                                                                  and lapsed)):
            raise Unchanged
        row.previous_api_key_state, row.previous_api_key_revoke_after = stage.holding, held_until
        taken.append(True)
    clients.inventory.update(account_name, take)
    if not taken:
        return None
    outcome = _call(stage, uid, clients)
    ended = outcome == stage.outcome
    event = build_document(f"account:{account_name}", account_name, f"apikey.{stage.outcome}", stage.name, outcome,
                           discriminator=f"{stage.name}:{uid}:{held_until}", palette={"replacedApiKeyUid": uid},
                           **({stage.next_stage: stage.next_due(config, now)} if ended and stage.next_stage else {}))

    def end(row: AccountRecord) -> None:
        if row.previous_api_key_uid != uid or row.previous_api_key_state != stage.holding:
            raise Unchanged
        if stage.ends is None or not ended:
            row.previous_api_key_uid = row.previous_api_key_state = row.previous_api_key_revoke_after = ""
        else:
            row.previous_api_key_state, row.previous_api_key_revoke_after = stage.ends, stage.next_due(config, now)
        row.record_event(event)
    updated = clients.inventory.update(account_name, end)
    if updated is not None:
        clients.inventory.flush(updated, clients.events)
    return outcome


def _call(stage: _Stage, uid: str, clients: Services) -> str:
    """The stage's call on a key the product can prove it made: its outcome, ``gone`` when the key
    is no longer in Palette, ``left`` when it no longer carries the product's annotations."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        key = clients.palette.get_api_key(uid)
    except ResourceNotFoundError:
        logger.info("replaced API key %s is already gone", uid)
        return "gone"
    if not credentials.made_by_product(key.annotations):  # never changed without the product's proof on it
        logger.warning("replaced API key %s no longer carries this product's annotations; it is left alone", uid)
        return "left"
    stage.palette_call(clients.palette, uid)
    return stage.outcome


def _parse(body: bytes | str | Mapping[str, Any], config: PipelineConfig) -> ApiKeyRenewal:
    from shared.models.parsing import parse_model

    return parse_model(ApiKeyRenewal, body, what="API key renewal request")


def _fingerprint(request: ApiKeyRenewal) -> str:
    return hashlib.sha256(_queued(request).encode()).hexdigest()


def _queued(request: ApiKeyRenewal) -> str:
    return json.dumps(request.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))


def _context(request: ApiKeyRenewal, clients: Services, config: PipelineConfig,
             handle: RecordHandle) -> RenewalContext:
    return RenewalContext(request=request, clients=clients, config=config, handle=handle)


def _failed(clients: Services, record: RequestRecord, failure: Failure) -> None:
    logger.warning("API key renewal of account %s failed (%s)", record.account_name, failure.reason)


API_KEY_RENEWAL = Plan(
    operation="renewApiKey",
    parse=_parse,
    fingerprint=_fingerprint,
    queued=_queued,
    lease_names=lambda request: [f"account:{request.account_name}"],
    context=_context,
    stages=[[[("plan", plan), ("renew", renew)]]],
    finish=_finish,
    failed_event="rotation.failed",
    failed=_failed,
    background=lambda _request: True,
)
