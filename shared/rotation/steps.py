"""The steps of one rotation, each recorded so a crash resumes it, and none leaving Palette on a
secret that does not work.

    plan ── rotate ── prune ── (finish: the inventory)

* **plan**: the account is one the product manages, with a secret it made; a ``due`` rotation that
  is no longer due (rotated meanwhile, too young, a stale version) is skipped. Reads Key Vault's
  current version: a version somebody else added is taken as the current one.
* **rotate**: Graph ``addPassword`` (the keyId recorded before anything else can fail; a retry
  never adds a second), then wait until the new secret really works (a client-credentials token
  from Entra ID, with backoff and a budget, not a fixed sleep), Palette's validation, a full
  ``PUT`` of the account with the new secret, and only then the new Key Vault version, which
  announces ``secret.rotated``. A failure before the ``PUT`` takes the new password back; after
  it, Palette holds a working secret either way.
  Tenant limits: a credential lifetime policy that refuses the end date gets the longest lifetime
  it allows; an app that holds its cap of passwords, both of them ours, has the previous one freed
  first (the current one is proven to work), and the event says so.
  Then each other *holder* of the secret the product may change (an Azure backup location on the
  same principal: :mod:`shared.rotation.holders`, found by ``plan``) is read again and given the new
  secret, fenced as the account's ``PUT`` is; one Palette refuses is recorded, and blocks the prune.
* **prune**: remove only the product's own passwords of this account that are neither the new
  one nor the one it replaced (by keyId); passwords the product did not make are never touched,
  and are reported. Nothing is removed while a holder lacks the new secret (one the product may
  not change, or one whose update Palette refused): ``rotation.blocked`` names each.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from shared import credentials, made
from shared.clients.http import error_codes
from shared.credentials import SecretKind
from shared.engine.failures import FailureKind, classify
from shared.engine.plan import StepDone, WorkContext
from shared.errors import PermanentStepError
from shared.logs import get_logger
from shared.rotation import holders
from shared.rotation.models import RotationTrigger
from shared.state import StepOutcome
from shared.state.inventory import MANAGED, SOURCE_GENERATED, AccountRecord
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import SecretStr

    from shared.clients.graph import NewPassword
    from shared.clients.keyvault import StoredSecret
    from shared.clients.palette import AzureAccount, AzureCredentials
    from shared.engine.failures import Failure
    from shared.rotation.models import RotationRequest
    from shared.services import Services
    from shared.settings import RotationConfig
    from shared.state import RequestRecord

logger = get_logger(__name__)

# Results kept in the rotation's row; "_" keys are markers hidden from the API.
SKIPPED = "_skipped"
FROM_VERSION = "fromVersion"
REPLACED_KEY_ID = "replacedKeyId"
NEW_KEY_ID = "graphKeyId"
FREED_KEY_ID = "freedKeyId"
LIFETIME_DAYS = "lifetimeDays"
SECRET_ID = "keyVaultSecretId"
SECRET_EXPIRES_ON = "secretExpiresOn"
PRUNED = "removedKeyIds"
FOREIGN = "foreignKeyIds"
#: The new password, by the key the fences record it under (shared.made).
PASSWORD = "password"
ACCOUNT_UID = "accountUid"
#: Other holders of the secret (JSON, :func:`shared.rotation.holders.dump`): found by plan, what each
#: was given by rotate.
HOLDERS = "holders"
#: The holders that kept the prune from removing the older passwords (JSON list of uid, name, why).
BLOCKED = "blockedBy"

#: Lifetimes (days) tried, longest first, when a tenant policy refuses the requested one and its
#: message does not name the limit.
LIFETIME_STEPS = (365, 180, 90, 60, 30, 14, 7, 1)
#: Graph's codes for a password refused by an app management (lifetime) policy, and for an app that
#: holds all the passwords it may (the message is checked too: codes are not documented).
_LIFETIME_CODES = {"CredentialInvalidLifetimeAsPerAppPolicy", "InvalidKeyEndDate"}
_CAP_CODES = {"TooManyAppPasswords"}


@dataclass
class RotationContext(WorkContext):
    """What the rotation steps share for one delivery."""

    request: RotationRequest
    # The new secret, in memory for this delivery only; never written to state or logs.
    client_secret: SecretStr | None = None
    _account: AccountRecord | None = None

    @property
    def rotation(self) -> RotationConfig:
        return self.config.rotation

    @property
    def account(self) -> AccountRecord:
        if self._account is None:
            self._account = self.clients.inventory.get(self.account_name)
        if self._account is None:
            raise PermanentStepError("plan", "not_managed",
                                     f"Account '{self.account_name}' is not one this product manages.")
        return self._account

    @property
    def skipped(self) -> bool:
        return bool(self.result(SKIPPED))


def is_due(account: AccountRecord, now: dt.datetime, config: RotationConfig) -> bool:
    """Its current version expires within the threshold, and is at least the minimum age."""
    expires = parse_iso(account.expires_on)
    if expires is None or expires - now > dt.timedelta(days=config.threshold_days):
        return False
    born = parse_iso(account.secret_created_on)
    return born is None or now - born >= dt.timedelta(minutes=config.min_age_minutes)


# ----------------------------------------------------------------------------------------- plan

def plan(ctx: RotationContext) -> StepDone:
    """Decide whether to rotate and what the current secret is."""
    account = ctx.account
    if account.status != MANAGED:
        raise PermanentStepError("plan", "not_managed",
                                 f"Account '{ctx.account_name}' was offboarded; there is nothing to rotate.")
    if account.secret_source != SOURCE_GENERATED:
        raise PermanentStepError(
            "plan", "not_rotatable",
            f"The client secret of account '{ctx.account_name}' was not made by this product (it comes from Key "
            f"Vault secret '{account.secret_name}'); rotate it where it is made. The product warns before it "
            "expires.")
    request = ctx.request
    if request.trigger is RotationTrigger.DUE:
        if request.version and request.version != account.secret_version:
            return _skip(f"version {request.version} was already replaced by {account.secret_version}")
        if not is_due(account, utcnow(), ctx.rotation):
            return _skip(f"not due: the secret expires {account.expires_on or 'never'} and was made "
                         f"{account.secret_created_on or 'earlier'}")
    name = credentials.secret_name(ctx.account_name, SecretKind.CLIENT_SECRET)
    versions = ctx.clients.secrets.list_versions(name)
    if not versions:
        raise PermanentStepError("plan", "secret_missing",
                                 f"Key Vault has no secret '{name}' for account '{ctx.account_name}'; onboard the "
                                 "account again to give it one.")
    current = versions[0]
    if current.version != account.secret_version:
        logger.warning("request %s: Key Vault secret %s has a version the inventory does not know (%s); taking it "
                       "as current", ctx.request_id, name, current.version)
    replaced = (current.tags.get(credentials.CREDENTIAL_ID_TAG, "")
                if credentials.is_product_secret(current.tags) else "")
    found = [holders.of(location, account) for location in holders.find(ctx.clients.palette, account)]
    detail = f"rotating {name} version {current.version}" + (
        f"; {len(found)} backup location(s) hold the secret too" if found else "")
    return StepDone(detail, {FROM_VERSION: current.version, REPLACED_KEY_ID: replaced,
                             ACCOUNT_UID: account.palette_uid, **({HOLDERS: holders.dump(found)} if found else {})})


def _skip(reason: str) -> StepDone:
    return StepDone(f"skipped: {reason}", {SKIPPED: reason}, outcome=StepOutcome.SKIPPED)


# --------------------------------------------------------------------------------------- rotate

def rotate(ctx: RotationContext) -> StepDone:
    """Add the new password, prove it, give it to Palette, then keep it in Key Vault."""
    if ctx.skipped:
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    graph = ctx.clients.graph
    assert graph is not None
    account = ctx.account
    app_id = account.client_id
    store = ctx.clients.secrets
    name = credentials.secret_name(ctx.account_name, SecretKind.CLIENT_SECRET)
    entry = made.graph_password(app_id, credentials.password_display_name(ctx.account_name, ctx.request_id))

    earlier = ctx.handle.made(PASSWORD)
    if earlier is not None and ctx.client_secret is None:
        # Resumed after a crash: the new secret's value is gone unless Key Vault has it.
        new_key = earlier.ids.get("keyId", "")
        kept = store.find_version(name, tag=credentials.CREDENTIAL_ID_TAG, value=new_key) if new_key else None
        if kept is not None:
            _give_holders(ctx, new_key, lambda: store.get_secret(name, kept.version)[0])
            return _rotated(ctx, kept, new_key)
        if earlier.owned:
            made.take_back(earlier, ctx.request_id, ctx.clients)  # ours, unusable, and nobody holds it
        # else Palette may hold it: it stays until a newer one replaces it there (prune removes it)

    palette_account = ctx.clients.palette.get_azure_account(account.palette_uid,
                                                            project_uid=account.project_uid or None)
    if not credentials.made_by_product(palette_account.annotations):
        raise PermanentStepError(
            "rotate", "account_not_provably_ours",
            f"Palette account {palette_account.uid} no longer carries this product's annotations (someone replaced "
            "it), so the product cannot prove it made it and will not change it. Put the annotations back or "
            f"onboard '{ctx.account_name}' again; its secret was not rotated.")
    ctx.handle.fence(**{PASSWORD: entry})
    password, freed, lifetime = _add_password(ctx, app_id, account)
    added = entry.made(keyId=password.key_id)

    def record_added(row: Any) -> None:
        row.made[PASSWORD] = added.to_dict()
        row.results.update({NEW_KEY_ID: password.key_id, LIFETIME_DAYS: str(lifetime),
                            **({FREED_KEY_ID: freed} if freed else {})})
    ctx.handle.write(record_added)
    ctx.client_secret = password.secret_text
    ctx.checkpoint("rotate.added")
    creds = _credentials(palette_account, password.secret_text)
    _wait_until_it_works(ctx, account, password.secret_text)
    _palette_validates(ctx, creds, account)
    ctx.checkpoint("rotate.proven")
    # From the PUT on, Palette may hold the new secret: a failure must not take it back.
    ctx.handle.fence(**{PASSWORD: added.kept(f"the cloud account {palette_account.uid} may hold it")})
    annotations = {**{k: v for k, v in palette_account.annotations.items() if k not in ("scope", "projectUid")},
                   **credentials.ownership_annotations(ctx.request_id,
                                                       secret_ref=credentials.secret_ref(password.key_id, None))}
    try:
        ctx.clients.palette.update_azure_account(
            palette_account.uid, palette_account.name, creds, project_uid=account.project_uid or None,
            overlord_uid=palette_account.overlord_uid, annotations=annotations)
    except Exception as exc:
        if classify(exc).kind is FailureKind.PERMANENT:  # Palette refused: it kept the old secret
            ctx.handle.write(lambda row: row.made.update({PASSWORD: added.to_dict()}))
        raise
    ctx.checkpoint("rotate.updated")
    tags = credentials.secret_tags(ctx.account_name, SecretKind.CLIENT_SECRET, request_id=ctx.request_id,
                                   tenant_id=account.tenant_id, client_id=account.client_id, **{
                                       credentials.CREDENTIAL_ID_TAG: password.key_id,
                                       credentials.VALIDITY_PERIOD_DAYS_TAG: str(lifetime)})
    try:
        stored = store.set_secret(name, password.secret_text, content_type=credentials.CONTENT_TYPES[
            SecretKind.CLIENT_SECRET], tags=tags, expires_on=password.end)
    except Exception as exc:
        failure = classify(exc)
        if failure.kind is FailureKind.PERMANENT:
            raise PermanentStepError(
                "rotate", failure.reason,
                f"Palette now uses the new client secret (Graph keyId {password.key_id}), but Key Vault refused to "
                f"keep it: {failure.message} The previous secret stays valid until it expires; the next rotation "
                "tries again.") from None
        raise
    ctx.checkpoint("rotate.stored")
    _give_holders(ctx, password.key_id, lambda: password.secret_text)
    return _rotated(ctx, stored, password.key_id)


def _give_holders(ctx: RotationContext, key_id: str, secret: Callable[[], SecretStr]) -> None:
    """Give each holder the product may change, not given it yet, the new secret (``key_id``):
    read again just before (a full PUT overwrites what changed since the read), fenced, recorded
    one by one. A refusal is recorded on the holder (it blocks the prune); a transient failure
    raises, and the step's next try goes on from the first holder not given it."""
    todo = [h for h in holders.load(ctx.result(HOLDERS))
            if h.may_change and not h.blocks and not h.left and h.key_id != key_id]
    if not todo:
        return
    value = secret()
    account = ctx.account
    project_uid = account.project_uid or None
    palette = ctx.clients.palette
    for holder in todo:
        try:
            location = palette.get_azure_backup_location(holder.uid, project_uid=project_uid)
            if not holders.holds(location, account):
                outcome = replace(holder, left="it no longer signs in as this app registration")
            elif not holders.may_change(location, account):
                outcome = replace(holder, may_change=False, blocks=holders.NOT_OURS)
            else:
                ctx.handle.fence()
                palette.update_azure_backup_location(holder.uid, location,
                                                     holders.location_credentials(location, account, value),
                                                     project_uid=project_uid)
                outcome = replace(holder, name=location.name, key_id=key_id)
        except HttpResponseError as exc:
            if not holders.refused(exc):
                raise
            outcome = replace(holder, blocks=f"Palette refused its update ({exc.status_code}): {exc.message}")
            logger.warning("request %s: Palette refused to update backup location %s (%s)", ctx.request_id,
                           holder.uid, exc.status_code)
        ctx.handle.write(_holder_recorder(outcome))
        ctx.checkpoint("rotate.holder")


def _holder_recorder(holder: holders.Holder) -> Callable[[Any], None]:
    def apply(row: Any) -> None:
        row.results[HOLDERS] = holders.replace(row.results.get(HOLDERS), holder)
    return apply


def _rotated(ctx: RotationContext, stored: StoredSecret, key_id: str) -> StepDone:
    results = {SECRET_ID: stored.id, NEW_KEY_ID: key_id}
    if stored.expires_on:
        results[SECRET_EXPIRES_ON] = iso(stored.expires_on)
    data: dict[str, Any] = {"keyVaultSecretId": stored.id, "graphKeyId": key_id,
                            "replacedKeyId": ctx.result(REPLACED_KEY_ID) or None,
                            "expiresOn": results.get(SECRET_EXPIRES_ON), "trigger": ctx.request.trigger.value,
                            "palette": {"accountUid": ctx.result(ACCOUNT_UID)},
                            "holdersUpdated": [h.named() for h in holders.load(ctx.result(HOLDERS))
                                               if h.key_id == key_id]}
    if ctx.result(FREED_KEY_ID):
        data["freedKeyId"] = ctx.result(FREED_KEY_ID)
        data["note"] = ("The app could hold no more passwords: the previous one was removed first, since the "
                        "current one works.")
    if ctx.result(LIFETIME_DAYS):
        data["lifetimeDays"] = int(ctx.result(LIFETIME_DAYS) or 0)
    entry = made.graph_password(ctx.account.client_id,
                                credentials.password_display_name(ctx.account_name, ctx.request_id))
    return StepDone("new secret in Palette and Key Vault", results,
                    [ctx.event("secret.rotated", "rotate", "rotated", **data)],
                    made={PASSWORD: entry.made(keyId=key_id).kept("the cloud account holds it")})


def _credentials(account: AzureAccount, secret: SecretStr) -> AzureCredentials:
    from shared.clients.palette import AzureCredentials

    return AzureCredentials(tenant_id=account.tenant_id or "", client_id=account.client_id or "",
                            client_secret=secret, environment=account.environment or "AzurePublicCloud",
                            tenant_name=account.tenant_name or "", disable_properties=account.disable_properties)


def _add_password(ctx: RotationContext, app_id: str, account: AccountRecord) -> tuple[NewPassword, str, int]:
    """``addPassword`` within the tenant's limits: (the password, the keyId freed for it, its lifetime)."""
    graph = ctx.clients.graph
    assert graph is not None
    lifetime = int(account.validity_days or 180)
    display_name = credentials.password_display_name(ctx.account_name, ctx.request_id)
    freed = ""
    tried: set[int] = set()
    while True:
        tried.add(lifetime)
        end = utcnow() + dt.timedelta(days=lifetime)
        try:
            return graph.add_password(app_id, display_name=display_name, end=end), freed, lifetime
        except HttpResponseError as exc:
            codes = error_codes(exc)
            if exc.status_code == 400 and (codes & _LIFETIME_CODES or _mentions_lifetime(exc)):
                allowed = _allowed_lifetime(exc, lifetime, tried)
                if allowed is None:
                    raise PermanentStepError(
                        "rotate", "lifetime_policy",
                        f"A credential lifetime policy of the tenant refuses every lifetime down to one day for app "
                        f"{app_id}: {exc.message}") from None
                logger.warning("request %s: the tenant's lifetime policy refused %d days; trying %d",
                               ctx.request_id, lifetime, allowed)
                lifetime = allowed
                continue
            if exc.status_code == 400 and (codes & _CAP_CODES or "maximum" in str(exc.message).lower()) and not freed:
                freed = _free_previous(ctx, app_id, account, exc)
                continue
            raise


def _mentions_lifetime(exc: HttpResponseError) -> bool:
    return "lifetime" in str(exc.message).lower()


def _allowed_lifetime(exc: HttpResponseError, refused: int, tried: set[int]) -> int | None:
    """The longest lifetime the policy names (``... 90 days ...``), else the next shorter step."""
    named = [int(n) for n in re.findall(r"(\d+)\s*day", str(exc.message), flags=re.IGNORECASE)]
    for days in sorted({n for n in named if 0 < n < refused}, reverse=True):
        if days not in tried:
            return days
    return next((days for days in LIFETIME_STEPS if days < refused and days not in tried), None)


def _free_previous(ctx: RotationContext, app_id: str, account: AccountRecord, exc: HttpResponseError) -> str:
    """The app holds all the passwords it may: free the previous one, if it is ours, to make room.
    The current one stays (it is the one that works today)."""
    graph = ctx.clients.graph
    assert graph is not None
    current = ctx.result(REPLACED_KEY_ID) or account.current_key_id
    unchangeable = [h for h in holders.load(ctx.result(HOLDERS)) if h.blocks and not h.left]
    if unchangeable:
        names = ", ".join(f"{h.name} ({h.uid})" for h in unchangeable)
        raise PermanentStepError(
            "rotate", "too_many_passwords",
            f"App {app_id} holds as many passwords as its tenant allows, and backup location(s) {names}, which this "
            f"product may not change, may still use one of them: {exc.message} Remove a password that is no longer "
            "used, or name the location(s) in rotation.alsoUpdate, then rotate again.") from None
    held = set(account.holders.values())  # what the holders it updated were given: they may still use it
    ours = [p for p in graph.get_application(app_id).passwords
            if credentials.is_product_password(p.display_name, ctx.account_name) and p.key_id != current
            and p.key_id not in held]
    if not ours:
        raise PermanentStepError(
            "rotate", "too_many_passwords",
            f"App {app_id} holds as many passwords as its tenant allows, and none of them is one this product may "
            f"remove (only the current one is ours, or they were made by someone else): {exc.message} Remove a "
            "password that is no longer used, then rotate again.") from None
    oldest = min(ours, key=lambda p: p.start.timestamp() if p.start else 0.0)
    graph.remove_password(app_id, oldest.key_id)
    logger.warning("request %s: app %s was at its password cap; freed the previous password %s", ctx.request_id,
                   app_id, oldest.key_id)
    return oldest.key_id


def _wait_until_it_works(ctx: RotationContext, account: AccountRecord, secret: SecretStr) -> None:
    """A client-credentials token with the new secret, with backoff, within the validation budget."""
    probe = ctx.clients.entra
    if probe is None:
        return
    _retry_while(lambda: probe.check(account.tenant_id, account.client_id, secret),
                 lambda exc: isinstance(exc, ClientAuthenticationError), ctx, "secret_not_working",
                 f"Entra ID did not accept the new client secret of app {account.client_id}")


def _palette_validates(ctx: RotationContext, creds: AzureCredentials, account: AccountRecord) -> None:
    def refused(exc: BaseException) -> bool:
        return isinstance(exc, HttpResponseError) and classify(exc).kind is FailureKind.PERMANENT

    _retry_while(lambda: ctx.clients.palette.validate_azure_credentials(creds, project_uid=account.project_uid
                                                                        or None),
                 refused, ctx, "credentials_invalid", "Palette could not validate the new client secret")


def _retry_while(call: Any, retryable: Any, ctx: RotationContext, reason: str, what: str) -> None:
    deadline = time.monotonic() + ctx.config.validation_budget_seconds
    delay = ctx.config.validation_initial_delay_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            call()
            return
        except Exception as exc:
            if not retryable(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PermanentStepError("rotate", reason, f"{what} after {attempt} attempts over "
                                         f"{ctx.config.validation_budget_seconds:.0f} s.") from None
            time.sleep(min(delay * (0.5 + random.random() / 2), remaining))
            delay = min(delay * 2, 8.0)


# ---------------------------------------------------------------------------------------- prune

def prune(ctx: RotationContext) -> StepDone:
    """Remove the product's older passwords of this account; report the ones it did not make."""
    if ctx.skipped:
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    graph = ctx.clients.graph
    assert graph is not None
    app_id = ctx.account.client_id
    keep = {ctx.result(NEW_KEY_ID), ctx.result(REPLACED_KEY_ID)} - {None, ""}
    removed: list[str] = []
    foreign: list[str] = []
    passwords = graph.get_application(app_id).passwords
    older = [p.key_id for p in passwords
             if credentials.is_product_password(p.display_name, ctx.account_name) and p.key_id not in keep]
    foreign = [p.key_id for p in passwords if not credentials.is_product_password(p.display_name)]
    blocking = _blocking(ctx)
    if blocking and older:
        names = ", ".join(f"{h.name} ({h.uid})" for h in blocking)
        detail = (f"kept {len(older)} older password(s): backup location(s) {names} may still hold one; "
                  f"{len(foreign)} not made by this product left alone")
        event = ctx.event("rotation.blocked", "prune", "blocked", holders=[h.blocking() for h in blocking],
                          keptKeyIds=older, palette={"accountUid": ctx.result(ACCOUNT_UID)},
                          detail="The older passwords stay on the app registration (the previous secret keeps "
                                 "working) until every holder of the secret has the new one: give it to each "
                                 "holder named, or name it in rotation.alsoUpdate, then rotate again.")
        return StepDone(detail, {PRUNED: "", FOREIGN: ",".join(foreign),
                                 BLOCKED: json.dumps([h.blocking() for h in blocking], separators=(",", ":"))},
                        [event])
    if older:
        ctx.handle.fence()
    for key_id in older:
        graph.remove_password(app_id, key_id)
        removed.append(key_id)
    detail = f"removed {len(removed)} older password(s); {len(foreign)} not made by this product left alone"
    return StepDone(detail, {PRUNED: ",".join(removed), FOREIGN: ",".join(foreign)})


def _blocking(ctx: RotationContext) -> list[holders.Holder]:
    """The holders that may still use an older password: those the product may not change, those
    Palette refused to update, and (as a safety net) any changeable one not given the new secret."""
    new_key = ctx.result(NEW_KEY_ID) or ""
    found = []
    for holder in holders.load(ctx.result(HOLDERS)):
        if holder.left:
            continue
        if holder.blocks:
            found.append(holder)
        elif holder.key_id != new_key:
            found.append(replace(holder, blocks="not given the new secret by this rotation"))
    return found


# --------------------------------------------------------------------------------------- finish

def record_rotation(ctx: RotationContext) -> None:
    """The inventory after a rotation (or a skipped one): the new current and previous secrets."""
    results = ctx.handle.record.results
    now = iso(utcnow())
    found, blocking = holders.load(results.get(HOLDERS)), _blocking(ctx)

    def apply(account: AccountRecord) -> None:
        if account.rotation_in_flight == ctx.request_id:
            account.rotation_in_flight = ""
        if results.get(SKIPPED):
            return
        version = results.get(SECRET_ID, "").rstrip("/").rpartition("/")[2]
        account.previous_key_id = results.get(REPLACED_KEY_ID, "") or account.current_key_id
        account.current_key_id = results.get(NEW_KEY_ID, "")
        account.secret_version = version
        account.expires_on = results.get(SECRET_EXPIRES_ON, "")
        account.secret_created_on = now
        if results.get(LIFETIME_DAYS):
            account.validity_days = int(results[LIFETIME_DAYS])
        account.last_rotation_id, account.last_rotation_at = ctx.request_id, now
        account.last_rotation_outcome, account.last_rotation_reason = "succeeded", ""
        account.foreign_key_ids = [k for k in results.get(FOREIGN, "").split(",") if k]
        given = {h.uid: h.key_id or account.holders.get(h.uid, "") for h in found if not h.left}
        account.holders = {uid: key_id for uid, key_id in given.items() if key_id}
        account.blocked_holders = [h.blocking() for h in blocking]
        account.drift = [kind for kind in account.drift if kind not in ("secret_changed", "secret_invalid")]
        account.warned = []

    ctx.clients.inventory.update(ctx.account_name, apply)


def record_failure(clients: Services, record: RequestRecord, failure: Failure) -> None:
    """The inventory after a rotation failed: the current secret stays, the failure is noted."""
    now = iso(utcnow())

    def apply(account: AccountRecord) -> None:
        if account.rotation_in_flight == record.request_id:
            account.rotation_in_flight = ""
        account.last_rotation_id, account.last_rotation_at = record.request_id, now
        account.last_rotation_outcome, account.last_rotation_reason = "failed", failure.reason

    clients.inventory.update(record.account_name, apply)
