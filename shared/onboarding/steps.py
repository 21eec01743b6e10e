"""The steps of one onboarding, each idempotent, each returning what the engine records.

Order and concurrency (the branches share nothing but the state row):

    check ─┬─ secret ── validate ── register ─┬─ verify
           ├─ sshkey ─────────────────────────┤
           └─ apikey ─────────────────────────┘

The protocol every step follows (the engine owns the recording):

* **look before making**: a step first reads what the state row and the services already hold,
  so a redelivery after a crash finishes the work instead of repeating it; what an earlier step
  of the same delivery looked up is reused (``ctx.lookups``), a new delivery looks again;
* **fence, then make**: right before the calls that create something (a Graph password, a Key
  Vault version, a Palette account, SSH key or API key), ``ctx.handle.fence`` records what they may
  make (:mod:`shared.made`) and proves the delivery still holds the request. A step that finds an
  entry an earlier delivery left looks for what it made, by the proof the product leaves on
  everything it makes (:mod:`shared.credentials`), before making it again, and a create whose
  outcome is unknown is looked for at once (:func:`shared.made.create_once`);
* **never touch what is not provably ours**: an object without the product's annotation is never
  updated, adopted or deleted;
* **return, do not record**: a step returns :class:`StepDone` (detail, results, events, what it
  made); the engine writes them in one write, then publishes. A request that fails takes back
  what it made (:func:`shared.engine.fail.fail_request`): steps undo nothing themselves.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from pydantic import SecretStr

from shared import credentials, made
from shared.credentials import SecretKind
from shared.engine.failures import FailureKind, classify
from shared.engine.plan import StepDone, WorkContext
from shared.errors import PermanentStepError
from shared.logs import get_logger
from shared.made import create_once
from shared.models import GeneratedSecret, KeyVaultSecret, StagedSecret
from shared.onboarding.checks import account_we_may_change, public_key_of, same_identity, same_public_key
from shared.onboarding.keys import (
    ACCOUNT,
    ACCOUNT_ACTION,
    ACCOUNT_UID,
    API_KEY,
    API_KEY_EXPIRES_ON,
    API_KEY_SECRET_ID,
    API_KEY_UID,
    API_KEY_VERSION,
    APP_OBJECT_ID,
    CLIENT_SECRET_VERSION,
    GRAPH_KEY_ID,
    OVERLORD_UID,
    PASSWORD,
    PROJECT_UID,
    SECRET_EXPIRES_ON,
    SECRET_ID,
    SSH_KEY,
    SSH_KEY_OWNED,
    SSH_KEY_UID,
    SSH_KEY_VERSION,
    SSH_SECRET_ID,
    USER_UID,
)
from shared.state import StepOutcome
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from shared.clients.keyvault import StoredSecret
    from shared.clients.palette import AzureCredentials, SshKey
    from shared.models import OnboardingRequest

logger = get_logger(__name__)

#: The lookup started when the delivery starts: an RSA key for a generated SSH key (its CPU time
#: then overlaps the check's round trips; only used when the step has to make a key).
KEY_PAIR = "sshKey.keyPair"
#: Palette's first validation of a new client secret, started as soon as Graph returned it
#: (beside the Key Vault write); the validate step takes it as its first attempt.
EARLY_VALIDATION = "palette.validation"


@dataclass
class StepContext(WorkContext):
    """What the onboarding steps share for one delivery."""

    request: OnboardingRequest
    # Held in memory only for the length of one delivery; never written to state or logs.
    client_secret: SecretStr | None = None

    @property
    def scope_project_uid(self) -> str | None:
        """The ProjectUid header for the cloud account: only for a project-scoped account."""
        return self.handle.result(PROJECT_UID) if self.request.palette.scope == "project" else None

    def palette_uids(self) -> dict[str, str]:
        record = self.handle.record
        keys = (ACCOUNT_UID, PROJECT_UID, OVERLORD_UID, SSH_KEY_UID, API_KEY_UID)
        return {k: record.results[k] for k in keys if record.results.get(k)}

    def secret_tags(self, kind: SecretKind, **extra: str) -> dict[str, str]:
        request = self.request
        return credentials.secret_tags(request.account_name, kind, request_id=request.request_id,
                                       tenant_id=request.azure.tenant_id, client_id=request.azure.client_id,
                                       **extra)


# ---------------------------------------------------------------------------------------- check

def check(ctx: StepContext) -> StepDone:
    """Resolve names to uids and find every clash before anything is made anywhere. The lookups are
    :mod:`shared.onboarding.checks`, which the dry run shares; the first that fails is raised. What
    they found is kept for the steps of this delivery."""
    from shared.onboarding.checks import RECOVER_PREFIX, run_checks

    results: dict[str, str] = {}
    for found in run_checks(ctx.request, ctx.clients, lookups=ctx.lookups):
        if found.failure is not None:
            raise found.failure
        results.update(found.results)
        if found.found is not None:
            ctx.lookups.put(found.name, found.found.value)
    recovered = [results.pop(key) for key in sorted(results) if key.startswith(RECOVER_PREFIX)]
    if recovered:  # the request asked (recoverDeletedSecrets); a redelivery finds them live
        ctx.handle.fence()
        for name in recovered:
            ctx.clients.secrets.recover_deleted_secret(name)
        for kind in SecretKind:
            ctx.lookups.forget(f"keyVault.{kind.value}")
    detail = f"; recovered {', '.join(recovered)}" if recovered else ""
    return StepDone(f"request valid; names resolved{detail}", results)


# --------------------------------------------------------------------------------------- secret

def secret(ctx: StepContext) -> StepDone:
    """Make (or read) the client secret and keep it in Key Vault."""
    request = ctx.request
    source = request.azure.secret
    store = ctx.clients.secrets
    if isinstance(source, KeyVaultSecret):
        value, stored = store.get_secret(source.secret_name, source.version)
        ctx.client_secret = value
        return StepDone("existing Key Vault secret", {SECRET_ID: stored.id, **_expiry(stored)}, [
            ctx.event("secret.stored", "secret", "existing", source="keyVault", keyVaultSecretId=stored.id)])
    if isinstance(source, StagedSecret):
        from shared.onboarding.staging import promote

        ctx.client_secret, stored = promote(ctx.handle, ctx.clients, request, source)
        return StepDone("inline secret stored in Key Vault", {SECRET_ID: stored.id, **_expiry(stored)}, [
            ctx.event("secret.stored", "secret", "stored", source="inline", keyVaultSecretId=stored.id)],
            made={CLIENT_SECRET_VERSION: made.key_vault_version(stored.name).made(version=stored.version)})

    graph = ctx.clients.graph
    assert graph is not None  # checked in the check step
    assert isinstance(source, GeneratedSecret)  # inline secrets are staged by the intake
    app_id = request.azure.client_id
    name = request.derived_names.client_secret
    display_name = request.derived_names.password_display_name
    if ctx.handle.made(PASSWORD) is not None:
        # An earlier delivery may have added a password: keep it if its value reached Key Vault.
        kept = _kept_client_secret(ctx, name)
        if kept is not None:
            return _secret_done(ctx, kept, kept.tags[credentials.CREDENTIAL_ID_TAG])

    password_entry = made.graph_password(app_id, display_name)
    version_entry = made.key_vault_version(name)
    end = utcnow() + dt.timedelta(days=source.validity_days)
    tags = ctx.secret_tags(SecretKind.CLIENT_SECRET, **{
        credentials.PROVIDER_ADDRESS_TAG: ctx.result(APP_OBJECT_ID) or "",
        credentials.VALIDITY_PERIOD_DAYS_TAG: str(source.validity_days)})

    def add() -> Any:
        return graph.add_password(app_id, display_name=display_name, end=end)

    def lost_answer() -> None:
        # An addPassword whose answer was lost made a password whose value nobody has: remove it.
        made.take_back(password_entry, ctx.request_id, ctx.clients)
        return None

    if ctx.handle.made(PASSWORD) is not None:
        lost_answer()  # what an earlier delivery added and could not keep
    ctx.handle.fence(**{PASSWORD: password_entry, CLIENT_SECRET_VERSION: version_entry})
    try:
        password = create_once(add, lost_answer)
    except HttpResponseError as exc:
        if getattr(exc, "service", "") == "Graph" and exc.status_code == 400:
            raise PermanentStepError(
                "secret", "graph_rejected",
                f"Microsoft Graph refused a new client secret for app {app_id}: {exc.message}",
                field="azure.secret.validityDays") from None
        raise
    creds = credentials_of(ctx, password.secret_text)
    ctx.lookups.start(EARLY_VALIDATION, lambda: ctx.clients.palette.validate_azure_credentials(
        creds, project_uid=ctx.scope_project_uid))
    stored = store.set_secret(name, password.secret_text, content_type=credentials.CONTENT_TYPES[
        SecretKind.CLIENT_SECRET], expires_on=password.end or end, tags={
        **tags, credentials.CREDENTIAL_ID_TAG: password.key_id})
    ctx.client_secret = password.secret_text
    return _secret_done(ctx, stored, password.key_id)


def _kept_client_secret(ctx: StepContext, name: str) -> StoredSecret | None:
    """The version of the client secret this request wrote (with its password's keyId), if any;
    its value becomes this delivery's."""
    store = ctx.clients.secrets
    kept = store.find_version(name, tag=credentials.REQUEST_ID_TAG, value=ctx.request_id)
    if kept is None or not kept.enabled or not kept.tags.get(credentials.CREDENTIAL_ID_TAG):
        return None
    ctx.client_secret, _ = store.get_secret(name, kept.version)
    return kept


def _expiry(stored: StoredSecret) -> dict[str, str]:
    return {SECRET_EXPIRES_ON: iso(stored.expires_on)} if stored.expires_on else {}


def _secret_done(ctx: StepContext, stored: StoredSecret, key_id: str) -> StepDone:
    request = ctx.request
    return StepDone(
        "new client secret stored in Key Vault", {SECRET_ID: stored.id, GRAPH_KEY_ID: key_id, **_expiry(stored)}, [
            ctx.event("secret.stored", "secret", "created", source="generate", keyVaultSecretId=stored.id,
                      graphKeyId=key_id)],
        made={PASSWORD: made.graph_password(request.azure.client_id, request.derived_names.password_display_name)
              .made(keyId=key_id),
              CLIENT_SECRET_VERSION: made.key_vault_version(stored.name).made(version=stored.version)})


def secret_id_parts(secret_id: str) -> tuple[str, str | None]:
    """(name, version) of a Key Vault secret id URL; ("", None) for an empty id."""
    if "/secrets/" not in secret_id:
        return "", None
    name, _, version = secret_id.rstrip("/").split("/secrets/", 1)[1].partition("/")
    return name, version or None


def _load_client_secret(ctx: StepContext) -> SecretStr:
    """The client secret for this request: in memory, or read back from Key Vault on a resume."""
    if ctx.client_secret is not None:
        return ctx.client_secret
    secret_id = ctx.result(SECRET_ID)
    if not secret_id:
        raise PermanentStepError("validate", "secret_missing",
                                 "The client secret of this request was not recorded; submit it again.")
    name, version = secret_id_parts(secret_id)
    ctx.client_secret, _ = ctx.clients.secrets.get_secret(name, version)
    return ctx.client_secret


def credentials_of(ctx: StepContext, secret: SecretStr | None = None) -> AzureCredentials:
    """The request's Azure credentials with its client secret (``secret``, or this request's)."""
    from shared.clients.palette import AzureCredentials

    azure = ctx.request.azure
    return AzureCredentials(
        tenant_id=azure.tenant_id, client_id=azure.client_id,
        client_secret=secret if secret is not None else _load_client_secret(ctx),
        environment=azure.cloud, tenant_name=azure.tenant_name or "",
        disable_properties=azure.disable_properties, tls_cert=azure.tls_cert,
    )


# ------------------------------------------------------------------------------------- validate

def validate(ctx: StepContext) -> StepDone:
    """Ask Palette to validate the credentials, waiting while a new secret propagates in Entra ID."""
    creds = credentials_of(ctx)
    generated = isinstance(ctx.request.azure.secret, GeneratedSecret)
    budget = ctx.config.validation_budget_seconds if generated else 0.0
    deadline = time.monotonic() + budget
    delay = ctx.config.validation_initial_delay_seconds
    attempt = 0
    early = ctx.lookups.pop(EARLY_VALIDATION)

    def ask() -> None:
        ctx.clients.palette.validate_azure_credentials(creds, project_uid=ctx.scope_project_uid)

    while True:
        attempt += 1
        try:
            if early is not None:
                first, early = early, None
                try:
                    first.result()  # the first attempt, made while the secret was being stored
                except Exception as exc:  # a permanent refusal is decided below; anything else is asked again
                    if classify(exc).kind is FailureKind.PERMANENT:
                        raise
                    ask()
            else:
                ask()
            break
        except HttpResponseError as exc:
            if classify(exc).kind is not FailureKind.PERMANENT:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" after {attempt} attempts over {budget:.0f} s" if generated else ""
                raise PermanentStepError(
                    "validate", "credentials_invalid",
                    f"Palette could not validate the Azure credentials of client {creds.client_id} in "
                    f"tenant {creds.tenant_id}{waited}: {exc.message}", field="azure.secret") from None
            logger.info("request %s: credentials not valid yet (attempt %d); retrying in %.1f s",
                        ctx.request_id, attempt, min(delay, remaining))
            time.sleep(min(delay * (0.5 + random.random() / 2), remaining))
            delay = min(delay * 2, 8.0)
    return StepDone(f"credentials valid (attempt {attempt})")


# ------------------------------------------------------------------------------------- register

def register(ctx: StepContext) -> StepDone:
    """Create the cloud account, or update the one the product made for this app; never another's."""
    request = ctx.request
    palette = ctx.clients.palette
    creds = credentials_of(ctx)
    scope_uid = ctx.scope_project_uid
    overlord = ctx.result(OVERLORD_UID)
    _, version = secret_id_parts(ctx.result(SECRET_ID) or "")
    annotations = credentials.ownership_annotations(
        ctx.request_id, secret_ref=credentials.secret_ref(ctx.result(GRAPH_KEY_ID), version))
    named = ctx.lookups.get("palette.account",
                            lambda: palette.find_azure_account(request.account_name, project_uid=scope_uid))
    existing = account_we_may_change("register", named, request)
    kept: dict[str, made.Made] = {}
    if existing is not None and credentials.made_by_request(existing.annotations, ctx.request_id):
        uid, action, event = existing.uid, "created", "account.registered"  # made by an earlier delivery
        kept[ACCOUNT] = made.palette_account(request.account_name, scope_uid).made(uid=uid)
    elif existing is not None:
        _key_vault_holds_our_secret(ctx, creds.client_secret)
        ctx.handle.fence()
        palette.update_azure_account(existing.uid, request.account_name, creds, project_uid=scope_uid,
                                     overlord_uid=overlord, annotations=annotations)
        uid, action, event = existing.uid, "updated", "account.updated"
        # The account was not made by this request, and now holds its secret: a failure of the
        # request must leave that secret alone.
        why = f"the cloud account {existing.uid}, which this request updated, uses it"
        for key in (PASSWORD, CLIENT_SECRET_VERSION):
            entry = ctx.handle.made(key)
            if entry is not None:
                kept[key] = entry.kept(why)
    else:
        entry = made.palette_account(request.account_name, scope_uid)
        ctx.handle.fence(**{ACCOUNT: entry})

        def ours() -> str | None:
            found = palette.find_azure_account(request.account_name, project_uid=scope_uid)
            return found.uid if found is not None and credentials.made_by_request(found.annotations, ctx.request_id) \
                and same_identity(found, request) else None

        uid = create_once(lambda: palette.create_azure_account(
            request.account_name, creds, project_uid=scope_uid, overlord_uid=overlord, annotations=annotations), ours)
        action, event = "created", "account.registered"
        kept[ACCOUNT] = entry.made(uid=uid)
    return StepDone(f"cloud account {action}", {ACCOUNT_UID: uid, ACCOUNT_ACTION: action}, [
        ctx.event(event, "register", action, palette={"accountUid": uid, "scope": request.palette.scope})], made=kept)


def _key_vault_holds_our_secret(ctx: StepContext, value: SecretStr) -> None:
    """Before Palette gets this request's secret, make sure it is the current Key Vault version of
    the account's client secret. Only a resumed request can find it otherwise: a request for the
    same account may have run while this one's leases had lapsed (its host was killed and stayed
    down). Palette and Key Vault must agree afterwards, so the value is written again as current."""
    secret_id = ctx.result(SECRET_ID) or ""
    name, version = secret_id_parts(secret_id) if secret_id else ("", None)
    if name.lower() != ctx.request.derived_names.client_secret or version is None:
        return  # an operator's secret, named by the request: not ours to rewrite
    current = ctx.clients.secrets.list_versions(name)
    if not current or current[0].version == version:
        return
    logger.warning("request %s: Key Vault secret %s moved on while this request waited; writing its value "
                   "as the current version again", ctx.request_id, name)
    _, mine = ctx.clients.secrets.get_secret(name, version)
    ctx.handle.fence()
    stored = ctx.clients.secrets.set_secret(
        name, value, content_type=mine.content_type or credentials.CONTENT_TYPES[SecretKind.CLIENT_SECRET],
        tags=dict(mine.tags), expires_on=mine.expires_on)

    def moved(row: Any) -> None:
        row.results[SECRET_ID] = stored.id
    ctx.handle.write(moved)


# --------------------------------------------------------------------------------------- sshkey

def sshkey(ctx: StepContext) -> StepDone:
    """Upload the SSH public key to the project (generating the pair if asked), by name."""
    spec = ctx.request.ssh_key
    if spec is None:
        return StepDone("no SSH key requested", outcome=StepOutcome.SKIPPED)
    project_uid = ctx.result(PROJECT_UID)
    assert project_uid is not None
    palette = ctx.clients.palette
    name = ctx.request.derived_names.ssh_private_key
    kept_pair = _kept_key_pair(ctx, project_uid) if spec.public_key is None else None
    existing: SshKey | None = ctx.lookups.get("palette.sshKey",
                                              lambda: palette.find_ssh_key(spec.name, project_uid=project_uid))
    results: dict[str, str] = {}
    if kept_pair is not None:
        results[SSH_SECRET_ID] = kept_pair[1]
    if existing is not None:
        wanted = spec.public_key or (kept_pair[0] if kept_pair else None)
        if wanted is None or not same_public_key(existing.public_key, wanted):
            raise PermanentStepError(
                "sshkey", "ssh_key_name_clash",
                f"Project '{ctx.request.palette.project}' already has a different SSH key named "
                f"'{spec.name}'; choose another sshKey.name.", field="sshKey.name")
        owned = credentials.made_by_product(existing.annotations)
        results.update({SSH_KEY_UID: existing.uid, SSH_KEY_OWNED: "true" if owned else "false"})
        this_requests = ({SSH_KEY: made.ssh_key(spec.name, project_uid).made(uid=existing.uid)}
                if credentials.made_by_request(existing.annotations, ctx.request_id) else {})
        return StepDone("SSH key already present", results, [
            ctx.event("sshkey.uploaded", "sshkey", "exists", palette={"sshKeyUid": existing.uid})], made=this_requests)

    key_entry = made.ssh_key(spec.name, project_uid)
    entries: dict[str, made.Made] = {SSH_KEY: key_entry}
    if spec.public_key is None and kept_pair is None:
        entries[SSH_KEY_VERSION] = made.key_vault_version(name)
    ctx.handle.fence(**entries)
    if spec.public_key is not None:
        public_key = spec.public_key
    elif kept_pair is not None:
        public_key = kept_pair[0]
    else:
        public_key, stored = _store_new_key_pair(ctx)
        results[SSH_SECRET_ID] = stored.id
        entries[SSH_KEY_VERSION] = entries[SSH_KEY_VERSION].made(version=stored.version)

    def ours() -> str | None:
        found = palette.find_ssh_key(spec.name, project_uid=project_uid)
        if found is not None and credentials.made_by_request(found.annotations, ctx.request_id) \
                and same_public_key(found.public_key, public_key):
            return found.uid
        return None

    uid = create_once(lambda: palette.create_ssh_key(
        spec.name, public_key, project_uid=project_uid, annotations=credentials.ownership_annotations(ctx.request_id)),
        ours)
    results.update({SSH_KEY_UID: uid, SSH_KEY_OWNED: "true"})
    entries[SSH_KEY] = key_entry.made(uid=uid)
    return StepDone("SSH key uploaded", results, [
        ctx.event("sshkey.uploaded", "sshkey", "created", palette={"sshKeyUid": uid})], made=entries)


def _kept_key_pair(ctx: StepContext, project_uid: str) -> tuple[str, str] | None:
    """(public key, Key Vault id) of a generated pair to use again: the one this request stored
    before a crash, or an earlier request's that Palette holds under the key's name."""
    spec = ctx.request.ssh_key
    assert spec is not None
    store = ctx.clients.secrets
    name = ctx.request.derived_names.ssh_private_key
    comment = f"palette-onboarding-{ctx.account_name}"
    versions = ctx.lookups.get(f"keyVault.{SecretKind.SSH_KEY.value}", lambda: store.list_versions(name))
    for version in versions:
        if version.tags.get(credentials.KEY_NAME_TAG) != spec.name or not version.enabled:
            continue
        pem, _ = store.get_secret(name, version.version)
        public = public_key_of(pem)
        if version.tags.get(credentials.REQUEST_ID_TAG) == ctx.request_id:
            return f"{public} {comment}", version.id  # made by this request before a crash
        held = ctx.lookups.get("palette.sshKey", lambda: ctx.clients.palette.find_ssh_key(
            spec.name, project_uid=project_uid))
        if held is not None and same_public_key(held.public_key, public):
            return f"{public} {comment}", version.id  # an earlier request's key, which Palette holds
        break
    return None


def _store_new_key_pair(ctx: StepContext) -> tuple[str, StoredSecret]:
    """Keep a new pair's private half in Key Vault (it never leaves Key Vault and this delivery's
    memory); returns its public half."""
    from cryptography.hazmat.primitives import serialization

    spec = ctx.request.ssh_key
    assert spec is not None
    private_key: RSAPrivateKey = ctx.lookups.get(KEY_PAIR, lambda: ctx.clients.key_pairs.take().result())
    pem = SecretStr(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode())
    public = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    stored = ctx.clients.secrets.set_secret(
        ctx.request.derived_names.ssh_private_key, pem, content_type=credentials.CONTENT_TYPES[SecretKind.SSH_KEY],
        tags=ctx.secret_tags(SecretKind.SSH_KEY, **{credentials.KEY_NAME_TAG: spec.name,
                                                    credentials.PUBLIC_KEY_TAG: credentials.public_key_fingerprint(
                                                        public)}))
    return f"{public} palette-onboarding-{ctx.account_name}", stored


# --------------------------------------------------------------------------------------- apikey

def apikey(ctx: StepContext) -> StepDone:
    """Create the Palette API key once and put its value in Key Vault at once (shown only once)."""
    spec = ctx.request.api_key
    if spec is None:
        return StepDone("no API key requested", outcome=StepOutcome.SKIPPED)
    palette = ctx.clients.palette
    store = ctx.clients.secrets
    name = ctx.request.derived_names.api_key_value
    key_entry = made.api_key(spec.name)
    version_entry = made.key_vault_version(name)

    def ours() -> list[str]:
        return [key.uid for key in palette.list_api_keys()
                if key.name == spec.name and credentials.made_by_request(key.annotations, ctx.request_id)]

    if ctx.handle.made(API_KEY) is not None:
        for uid in ours():
            stored = store.find_version(name, tag=credentials.PALETTE_UID_TAG, value=uid)
            if stored is not None:
                return _apikey_done(ctx, uid, stored)
        made.take_back(key_entry, ctx.request_id, ctx.clients)  # made before a crash; its value is lost
    # Whatever bears the name is somebody else's (it may have appeared since the check).
    from shared.onboarding.checks import api_key_name_clash

    keys = ctx.lookups.get("palette.apiKey", palette.list_api_keys)
    clash = api_key_name_clash(ctx.request, ctx.clients, "apikey", keys)
    if clash is not None:
        raise clash
    user_uid = ctx.result(USER_UID)
    assert user_uid is not None
    expiry = spec.expiry(utcnow())
    ctx.handle.fence(**{API_KEY: key_entry, API_KEY_VERSION: version_entry})

    def lost_answer() -> None:
        made.take_back(key_entry, ctx.request_id, ctx.clients)  # its value is lost with the answer
        return None

    created = create_once(lambda: palette.create_api_key(
        spec.name, user_uid=user_uid, expiry=expiry, description=spec.description,
        annotations=credentials.ownership_annotations(ctx.request_id)), lost_answer)
    stored = store.set_secret(
        name, created.value, content_type=credentials.CONTENT_TYPES[SecretKind.API_KEY], expires_on=expiry,
        tags=ctx.secret_tags(SecretKind.API_KEY, **{credentials.KEY_NAME_TAG: spec.name,
                                                    credentials.PALETTE_UID_TAG: created.uid}))
    return _apikey_done(ctx, created.uid, stored)


def _apikey_done(ctx: StepContext, uid: str, stored: StoredSecret) -> StepDone:
    spec = ctx.request.api_key
    assert spec is not None
    results = {API_KEY_UID: uid, API_KEY_SECRET_ID: stored.id}
    if stored.expires_on:
        results[API_KEY_EXPIRES_ON] = iso(stored.expires_on)
    return StepDone("API key created; value in Key Vault", results, [
        ctx.event("apikey.created", "apikey", "created", palette={"apiKeyUid": uid}, keyVaultSecretId=stored.id)],
        made={API_KEY: made.api_key(spec.name).made(uid=uid),
              API_KEY_VERSION: made.key_vault_version(stored.name).made(version=stored.version)})


# --------------------------------------------------------------------------------------- verify

def verify(ctx: StepContext) -> list[dict[str, Any]]:
    """Read everything back, as the guide's last step does, and report each check. The reads do
    not depend on each other, so they go out together: one round trip."""
    from shared.concurrency import in_thread

    request = ctx.request
    palette = ctx.clients.palette
    scope_uid = ctx.scope_project_uid
    checks: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    account_uid = ctx.result(ACCOUNT_UID) or ""
    # The guide's check: the account is listed (by its name: one call however many there are);
    # the listed item is the whole account, which is what it reads back as.
    listing = in_thread(lambda: list(palette.list_azure_accounts(project_uid=scope_uid, name=request.account_name)))
    ssh_spec, api_spec = request.ssh_key, request.api_key
    ssh_key = in_thread(lambda: palette.find_ssh_key(ssh_spec.name, project_uid=ctx.result(PROJECT_UID) or "")) \
        if ssh_spec is not None else None
    api_key_uid = ctx.result(API_KEY_UID) or ""
    api_key = in_thread(lambda: palette.get_api_key(api_key_uid)) if api_spec is not None else None

    account = next((a for a in listing.result() if a.uid == account_uid), None)
    if account is None:
        add("account.readable", False, f"account {account_uid} was not found")
    else:
        add("account.readable", account.name == request.account_name and same_identity(account, request),
            f"account {account_uid} reads back as '{account.name}'")
        add("account.scope", account.scope == request.palette.scope, f"account scope is {account.scope}")
    listed = account is not None
    add("account.listed", listed, f"account {'is' if listed else 'is not'} listed among Azure accounts")

    secret_id = ctx.result(SECRET_ID) or ""
    add("secret.stored", bool(secret_id), "client secret kept in Key Vault" if secret_id else "no secret id")

    if ssh_spec is not None and ssh_key is not None:
        key = ssh_key.result()
        add("sshkey.listed", key is not None and key.uid == ctx.result(SSH_KEY_UID),
            f"SSH key '{ssh_spec.name}' {'is' if key else 'is not'} listed in the project")
    if api_key is not None:
        try:
            found = api_key.result()
            state = "active" if found.is_active else "inactive"
            add("apikey.active", bool(found.is_active), f"API key {api_key_uid} is {state}")
        except ResourceNotFoundError:
            add("apikey.active", False, f"API key {api_key_uid} was not found")
    return checks


# ------------------------------------------------------------------------------------ inventory

def record_in_inventory(ctx: StepContext) -> None:
    """Put the onboarded account in the inventory the rotation sweep and drift pass work from."""
    from shared.state.inventory import MANAGED, OFFBOARDED, SOURCE_GENERATED, SOURCE_KEY_VAULT, AccountRecord

    request = ctx.request
    results = ctx.handle.record.results
    name, version = secret_id_parts(results.get(SECRET_ID, ""))
    generated = isinstance(request.azure.secret, GeneratedSecret)
    key_id = results.get(GRAPH_KEY_ID, "") if generated else ""
    now = iso(utcnow())

    def apply(account: AccountRecord) -> None:
        if account.status == OFFBOARDED:  # onboarded again after an offboarding: a clean start
            account.start_over()
        if account.current_key_id and key_id and account.current_key_id != key_id:
            account.previous_key_id = account.current_key_id
        account.scope = request.palette.scope.value
        account.project_uid = results.get(PROJECT_UID, "") if request.palette.scope == "project" else ""
        account.palette_uid = results.get(ACCOUNT_UID, "")
        account.tenant_id, account.client_id = request.azure.tenant_id, request.azure.client_id
        account.secret_source = SOURCE_GENERATED if generated else SOURCE_KEY_VAULT
        account.secret_name, account.secret_version = name, version or ""
        account.current_key_id = key_id
        account.expires_on = results.get(SECRET_EXPIRES_ON, "")
        account.secret_created_on = now
        if isinstance(request.azure.secret, GeneratedSecret):
            account.validity_days = request.azure.secret.validity_days
        account.onboarded_by = ctx.request_id
        account.status = MANAGED
        account.warned = []
        if request.ssh_key is not None and results.get(SSH_KEY_UID):
            account.ssh_key_uid, account.ssh_key_name = results[SSH_KEY_UID], request.ssh_key.name
            account.ssh_key_project_uid = results.get(PROJECT_UID, "")
            account.ssh_key_project = request.palette.project
            account.ssh_key_owned = results.get(SSH_KEY_OWNED) == "true"
        if request.api_key is not None and results.get(API_KEY_UID):
            account.api_key_uid, account.api_key_name = results[API_KEY_UID], request.api_key.name
            account.api_key_expires_on = results.get(API_KEY_EXPIRES_ON, "")
        account.also_update = list(request.rotation.also_update) if request.rotation is not None else []
        account.permissions = (request.azure.permissions.model_dump(mode="json", by_alias=True)
                               if request.azure.permissions is not None else {})

    ctx.clients.inventory.update(request.account_name, apply,
                                 create=lambda: AccountRecord(account_name=request.account_name))


def start_ahead(ctx: StepContext) -> None:
    """What a delivery starts before its names are leased, for the steps not done yet: the
    project's lookup (no lease covers a project), and the RSA key a generated SSH key may need."""
    from shared.onboarding.checks import PROJECT

    record = ctx.handle.record
    if not record.step_done("check"):
        palette, name = ctx.clients.palette, ctx.request.palette.project
        ctx.lookups.start(PROJECT, lambda: palette.get_project(name))
    spec = ctx.request.ssh_key
    if spec is not None and spec.generate and not record.step_done("sshkey"):
        pairs = ctx.clients.key_pairs
        ctx.lookups.start(KEY_PAIR, lambda: pairs.take().result())

