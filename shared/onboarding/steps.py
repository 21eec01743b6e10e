"""The steps of one onboarding, each idempotent, each returning what the runner records.

Order and concurrency (the branches share nothing but the state row):

    check ─┬─ secret ── validate ── register ─┬─ verify
           ├─ sshkey ─────────────────────────┤
           └─ apikey ─────────────────────────┘

The protocol every step follows (the runner owns the recording):

* **look before making**: a step first reads what the state row and the services already hold,
  so a redelivery after a crash finishes the work instead of repeating it;
* **mark, then make**: before a call that creates something (a Graph password, a Palette account,
  SSH key or API key) a marker is written (the claim writes one for every create the request may
  make, :func:`markers`; a step writes its own only where the claim did not); a retry that finds
  a marker an earlier delivery wrote (``ctx.earlier_attempt``) looks for what the first call
  made, by the proof the product leaves on everything it makes (:mod:`shared.credentials`),
  before calling again, and a create that failed in a way that leaves it unknown whether it
  happened (:func:`~shared.engine.failures.maybe_done`) is looked for in the same way at once;
* **never touch what is not provably ours**: an object without the product's annotation is never
  updated, adopted or deleted;
* **undo what cannot be handed over**: a password or API key whose value could not be put in Key
  Vault is removed at once (the value is shown only once), and the failure says so;
* **return, do not record**: a step returns :class:`StepDone` (detail, results, events); the
  runner writes them in one save, events into the row's outbox, and only then publishes.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from pydantic import SecretStr

from shared import credentials
from shared.credentials import SecretKind
from shared.engine.failures import FailureKind, classify, maybe_done
from shared.engine.plan import StepDone, WorkContext
from shared.errors import PermanentStepError
from shared.logs import get_logger
from shared.models import GeneratedSecret, KeyVaultSecret
from shared.state import StepOutcome
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from shared.clients.keyvault import StoredSecret
    from shared.clients.palette import AzureAccount, AzureCredentials, SshKey
    from shared.models import OnboardingRequest
    from shared.onboarding.checks import EarlyChecks

logger = get_logger(__name__)

T = TypeVar("T")

# Result keys kept in the state row. Keys starting with "_" are internal markers, hidden from the API.
ACCOUNT_UID = "accountUid"
ACCOUNT_ACTION = "accountAction"
PROJECT_UID = "projectUid"
OVERLORD_UID = "privateCloudGatewayUid"
USER_UID = "apiKeyUserUid"
SSH_KEY_UID = "sshKeyUid"
SSH_KEY_OWNED = "sshKeyOwned"
API_KEY_UID = "apiKeyUid"
GRAPH_KEY_ID = "graphKeyId"
SECRET_ID = "keyVaultSecretId"
SECRET_EXPIRES_ON = "secretExpiresOn"
SSH_SECRET_ID = "sshPrivateKeySecretId"
API_KEY_SECRET_ID = "apiKeySecretId"
API_KEY_EXPIRES_ON = "apiKeyExpiresOn"
APP_OBJECT_ID = "_appObjectId"
PASSWORD_ADDING = "_passwordAddSent"
ACCOUNT_CREATING = "_accountCreateSent"
SSH_KEY_CREATING = "_sshKeyCreateSent"
API_KEY_CREATING = "_apiKeyCreateSent"

#: A create whose outcome is unknown is looked for and, if absent, tried again this many times.
CREATE_ATTEMPTS = 3
#: ``StepContext.found`` for a lookup this delivery did not make.
NOT_LOOKED_UP: Any = object()


@dataclass
class StepContext(WorkContext):
    """What the onboarding steps share for one delivery."""

    request: OnboardingRequest
    # Held in memory only for the length of one delivery; never written to state or logs.
    client_secret: SecretStr | None = None
    #: What this delivery's check step found, by check name (``shared.onboarding.checks.Found``):
    #: a step of the same delivery acts on it instead of looking it up again. Empty when the check
    #: ran in an earlier delivery, whose findings may be stale by now.
    looked_up: dict[str, Any] = field(default_factory=dict)
    #: The RSA key a generated SSH key would use, started with the delivery (its CPU time then
    #: overlaps the check's round trips); only used when the step has to make a key.
    key_pair: Future[RSAPrivateKey] | None = field(default=None, repr=False)
    #: Palette's first validation of a new client secret, started as soon as Graph returned it
    #: (beside the Key Vault write); the validate step waits for it instead of asking again.
    early_validation: Future[None] | None = field(default=None, repr=False)
    #: The check's lookup that no name lease covers, started while the names were being leased.
    early_checks: EarlyChecks | None = field(default=None, repr=False)

    def found(self, check: str) -> Any:
        """What the check named ``check`` found in this delivery; :data:`NOT_LOOKED_UP` otherwise."""
        looked = self.looked_up.get(check)
        return NOT_LOOKED_UP if looked is None else looked.value

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


def create_once(create: Callable[[], T], recover: Callable[[], T | None], *,
                sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``create``; when it fails in a way that leaves unknown whether it happened, ask
    ``recover`` for what it made (by proof of authorship) before trying again. ``recover`` returns
    the object to keep, or None once nothing of this request's is left."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return create()
        except Exception as exc:
            if not maybe_done(exc):
                raise
            found = recover()
            if found is not None:
                return found
            if attempt == CREATE_ATTEMPTS:
                raise
            sleep(0.5 * attempt * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")  # pragma: no cover


def _same_identity(account: AzureAccount, request: OnboardingRequest) -> bool:
    """Whether an existing Palette account is for the same Entra tenant and app as the request."""
    return ((account.tenant_id or "").lower(), (account.client_id or "").lower()) == (
        request.azure.tenant_id, request.azure.client_id)


def _account_we_may_change(step: str, account: AzureAccount | None,
                           request: OnboardingRequest) -> AzureAccount | None:
    """The existing account of that name when the product made it for the same app; else a clash."""
    if account is None:
        return None
    if not credentials.made_by_product(account.annotations):
        raise PermanentStepError(
            step, "account_name_clash",
            f"Palette already has an Azure account named '{request.account_name}' that this product did not "
            "create; nothing was changed. Choose another accountName, or remove that account first.",
            field="accountName")
    if not _same_identity(account, request):
        raise PermanentStepError(
            step, "account_name_clash",
            f"Palette already has an Azure account named '{request.account_name}' for another tenant or "
            "client; nothing was changed. Choose another accountName or remove that account first.",
            field="accountName")
    return account


def _same_public_key(a: str, b: str) -> bool:
    """OpenSSH keys are equal when type and base64 body match; the comment does not count."""
    return a.split()[:2] == b.split()[:2]


def _permanent(step: str, exc: BaseException, *, removed: list[str] | None = None,
               cleanup: list[dict[str, str]] | None = None, what: str = "") -> PermanentStepError | None:
    """``exc`` as a permanent step failure (with what was undone), or None when it is not one."""
    failure = classify(exc)
    if failure.kind is not FailureKind.PERMANENT:
        return None
    message = failure.message + (f" {what}" if what else "")
    return PermanentStepError(step, failure.reason, message, removed=removed, cleanup=cleanup)


# ---------------------------------------------------------------------------------------- check

def check(ctx: StepContext) -> StepDone:
    """Resolve names to uids and find every clash before anything is made anywhere. The lookups are
    :mod:`shared.onboarding.checks`, which the dry run shares; the first that fails is raised."""
    from shared.onboarding.checks import RECOVER_PREFIX, run_checks

    results: dict[str, str] = {}
    early, ctx.early_checks = ctx.early_checks, None
    for found in run_checks(ctx.request, ctx.clients, early=early):
        if found.failure is not None:
            raise found.failure
        results.update(found.results)
        if found.found is not None:
            ctx.looked_up[found.name] = found.found
    for key in [key for key in results if key.startswith(RECOVER_PREFIX)]:
        ctx.looked_up.pop(f"keyVault.{key.removeprefix(RECOVER_PREFIX)}", None)  # it is about to change
    recovered = [results.pop(key) for key in sorted(results) if key.startswith(RECOVER_PREFIX)]
    for name in recovered:  # the request asked (recoverDeletedSecrets); a redelivery finds them live
        ctx.clients.secrets.recover_deleted_secret(name)
    detail = f"; recovered {', '.join(recovered)}" if recovered else ""
    return StepDone(f"request valid; names resolved{detail}", results, deferred=True)


def _api_key_name_free(ctx: StepContext, step: str) -> None:
    """A Palette API key of the requested name may exist only if this request made it (as this
    delivery's check listed the keys, when it did)."""
    from shared.onboarding.checks import api_key_name_clash

    keys = ctx.found("palette.apiKey")
    clash = api_key_name_clash(ctx.request, ctx.clients, step, None if keys is NOT_LOOKED_UP else keys)
    if clash is not None:
        raise clash


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

    graph = ctx.clients.graph
    assert graph is not None  # checked in the check step
    assert isinstance(source, GeneratedSecret)  # inline secrets are stored by the intake
    app_id = request.azure.client_id
    key_id = ctx.result(GRAPH_KEY_ID)
    if key_id:
        kept = credentials.kept_version(store, ctx.account_name, SecretKind.CLIENT_SECRET,
                                        tag=credentials.CREDENTIAL_ID_TAG, value=key_id)
        if kept is not None:
            ctx.client_secret, _ = store.get_secret(kept.name, kept.version)
            return _secret_done(ctx, kept, key_id)
        # The password was made (its keyId recorded) but its value never reached Key Vault.
        graph.remove_password(app_id, key_id)
        ctx.handle.forget(GRAPH_KEY_ID)
    if ctx.earlier_attempt(PASSWORD_ADDING):
        # A password may have been added just before a crash, before its keyId could be recorded.
        credentials.remove_passwords_of_request(graph, app_id, ctx.account_name, ctx.request_id)

    ctx.handle.mark(**{PASSWORD_ADDING: "1"})
    end = utcnow() + dt.timedelta(days=source.validity_days)
    tags = ctx.secret_tags(SecretKind.CLIENT_SECRET, **{
        credentials.PROVIDER_ADDRESS_TAG: ctx.result(APP_OBJECT_ID) or "",
        credentials.VALIDITY_PERIOD_DAYS_TAG: str(source.validity_days)})

    def validate_early(value: SecretStr) -> None:
        from shared.concurrency import in_thread

        creds = credentials_of(ctx, value)
        ctx.early_validation = in_thread(lambda: ctx.clients.palette.validate_azure_credentials(
            creds, project_uid=ctx.scope_project_uid), name="onboarding-validate")

    def issue() -> credentials.IssuedSecret:
        return credentials.issue_client_secret(
            graph, store, app_id=app_id, account_name=ctx.account_name, request_id=ctx.request_id, end=end,
            tags=tags, record_key_id=lambda new_key_id: ctx.handle.mark(**{GRAPH_KEY_ID: new_key_id}),
            alongside=validate_early)

    def recover() -> None:
        # An addPassword whose answer was lost made a password whose value nobody has: remove it.
        credentials.remove_passwords_of_request(graph, app_id, ctx.account_name, ctx.request_id)
        return None

    try:
        issued = create_once(issue, recover)
    except credentials.CredentialNotStoredError as exc:
        cause = exc.__cause__ or exc
        if exc.removed:
            _forget_quietly(ctx, GRAPH_KEY_ID)
        removed = [f"Graph password {exc.key_id}"] if exc.removed else []
        cleanup = [] if exc.removed else [{"kind": "graphPassword", "appId": app_id, "keyId": exc.key_id}]
        what = (f"The new client secret (Graph keyId {exc.key_id}) was removed from app {app_id} again."
                if exc.removed else
                f"The new client secret (Graph keyId {exc.key_id}) could not be removed yet; it will be.")
        permanent = _permanent("secret", cause, removed=removed, cleanup=cleanup, what=what)
        if permanent is not None:
            raise permanent from None
        raise cause from None
    except HttpResponseError as exc:
        if getattr(exc, "service", "") == "Graph" and exc.status_code == 400:
            raise PermanentStepError(
                "secret", "graph_rejected",
                f"Microsoft Graph refused a new client secret for app {app_id}: {exc.message}",
                field="azure.secret.validityDays") from None
        raise
    ctx.client_secret = issued.value
    return _secret_done(ctx, issued.stored, issued.key_id)


def _forget_quietly(ctx: StepContext, key: str) -> None:
    try:
        ctx.handle.forget(key)
    except Exception:
        logger.info("request %s: could not clear %s", ctx.request_id, key, exc_info=True)


def _expiry(stored: StoredSecret) -> dict[str, str]:
    return {SECRET_EXPIRES_ON: iso(stored.expires_on)} if stored.expires_on else {}


def _secret_done(ctx: StepContext, stored: StoredSecret, key_id: str) -> StepDone:
    return StepDone("new client secret stored in Key Vault",
                    {SECRET_ID: stored.id, GRAPH_KEY_ID: key_id, **_expiry(stored)}, [
        ctx.event("secret.stored", "secret", "created", source="generate", keyVaultSecretId=stored.id,
                  graphKeyId=key_id)])


def _secret_id_parts(secret_id: str) -> tuple[str, str | None]:
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
    name, version = _secret_id_parts(secret_id)
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
    early, ctx.early_validation = ctx.early_validation, None
    while True:
        attempt += 1
        try:
            if early is not None:
                first = early
                early = None
                try:
                    first.result()  # the first attempt, made while the secret was being stored
                except Exception as exc:  # a permanent refusal is decided below; anything else is asked again
                    if classify(exc).kind is FailureKind.PERMANENT:
                        raise
                    ctx.clients.palette.validate_azure_credentials(creds, project_uid=ctx.scope_project_uid)
            else:
                ctx.clients.palette.validate_azure_credentials(creds, project_uid=ctx.scope_project_uid)
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
    return StepDone(f"credentials valid (attempt {attempt})", deferred=True)


# ------------------------------------------------------------------------------------- register

def register(ctx: StepContext) -> StepDone:
    """Create the cloud account, or update the one the product made for this app; never another's."""
    request = ctx.request
    palette = ctx.clients.palette
    resumed = ctx.client_secret is None  # the secret step ran in an earlier delivery
    creds = credentials_of(ctx)
    if resumed:
        _key_vault_holds_our_secret(ctx, creds.client_secret)
    scope_uid = ctx.scope_project_uid
    overlord = ctx.result(OVERLORD_UID)
    _, version = _secret_id_parts(ctx.result(SECRET_ID) or "")
    annotations = credentials.ownership_annotations(
        ctx.request_id, secret_ref=credentials.secret_ref(ctx.result(GRAPH_KEY_ID), version))

    def ours() -> AzureAccount | None:
        found = palette.find_azure_account(request.account_name, project_uid=scope_uid)
        return found if found is not None and credentials.made_by_request(found.annotations, ctx.request_id) \
            and _same_identity(found, request) else None

    looked_up = ctx.found("palette.account")
    named = (palette.find_azure_account(request.account_name, project_uid=scope_uid) if looked_up is NOT_LOOKED_UP
             else looked_up)
    existing = _account_we_may_change("register", named, request)
    if existing is not None and ctx.result(ACCOUNT_CREATING) \
            and credentials.made_by_request(existing.annotations, ctx.request_id):
        uid, action, event = existing.uid, "created", "account.registered"  # our create, before a crash
    elif existing is not None:
        palette.update_azure_account(existing.uid, request.account_name, creds, project_uid=scope_uid,
                                     overlord_uid=overlord, annotations=annotations)
        uid, action, event = existing.uid, "updated", "account.updated"
    else:
        ctx.handle.mark(**{ACCOUNT_CREATING: "1"})

        def recover() -> str | None:
            found = ours()
            return found.uid if found is not None else None

        uid = create_once(lambda: palette.create_azure_account(
            request.account_name, creds, project_uid=scope_uid, overlord_uid=overlord, annotations=annotations),
            recover)
        action, event = "created", "account.registered"
    return StepDone(f"cloud account {action}", {ACCOUNT_UID: uid, ACCOUNT_ACTION: action}, [
        ctx.event(event, "register", action, palette={"accountUid": uid, "scope": request.palette.scope})])


def _key_vault_holds_our_secret(ctx: StepContext, value: SecretStr) -> None:
    """Before Palette gets this request's secret, make sure it is the current Key Vault version of
    the account's client secret. Only a resumed request can find it otherwise: a request for the
    same account may have run while this one's leases had lapsed (its host was killed and stayed
    down). Palette and Key Vault must agree afterwards, so the value is written again as current."""
    secret_id = ctx.result(SECRET_ID) or ""
    name, version = _secret_id_parts(secret_id) if secret_id else ("", None)
    if name.lower() != ctx.request.derived_names.client_secret or version is None:
        return  # an operator's secret, named by the request: not ours to rewrite
    current = ctx.clients.secrets.list_versions(name)
    if not current or current[0].version == version:
        return
    logger.warning("request %s: Key Vault secret %s moved on while this request waited; writing its value "
                   "as the current version again", ctx.request_id, name)
    _, mine = ctx.clients.secrets.get_secret(name, version)
    stored = ctx.clients.secrets.set_secret(
        name, value, content_type=mine.content_type or credentials.CONTENT_TYPES[SecretKind.CLIENT_SECRET],
        tags=dict(mine.tags), expires_on=mine.expires_on)
    ctx.handle.mark(**{SECRET_ID: stored.id})


# --------------------------------------------------------------------------------------- sshkey

def sshkey(ctx: StepContext) -> StepDone:
    """Upload the SSH public key to the project (generating the pair if asked), by name."""
    spec = ctx.request.ssh_key
    if spec is None:
        return StepDone("no SSH key requested", outcome=StepOutcome.SKIPPED)
    project_uid = ctx.result(PROJECT_UID)
    assert project_uid is not None
    public_key = spec.public_key
    results: dict[str, str] = {}
    if public_key is None:
        public_key, secret_id = _generated_key_pair(ctx, project_uid)
        results[SSH_SECRET_ID] = secret_id
    palette = ctx.clients.palette
    looked_up = ctx.found("palette.sshKey")
    existing: SshKey | None = (palette.find_ssh_key(spec.name, project_uid=project_uid)
                               if looked_up is NOT_LOOKED_UP else looked_up)
    if existing is not None:
        if not _same_public_key(existing.public_key, public_key):
            raise PermanentStepError(
                "sshkey", "ssh_key_name_clash",
                f"Project '{ctx.request.palette.project}' already has a different SSH key named "
                f"'{spec.name}'; choose another sshKey.name.", field="sshKey.name")
        owned = credentials.made_by_product(existing.annotations)
        results.update({SSH_KEY_UID: existing.uid, SSH_KEY_OWNED: "true" if owned else "false"})
        return StepDone("SSH key already present", results, [
            ctx.event("sshkey.uploaded", "sshkey", "exists", palette={"sshKeyUid": existing.uid})])
    ctx.handle.mark(**{SSH_KEY_CREATING: "1"})
    key = public_key

    def recover() -> str | None:
        found = palette.find_ssh_key(spec.name, project_uid=project_uid)
        if found is not None and credentials.made_by_request(found.annotations, ctx.request_id) \
                and _same_public_key(found.public_key, key):
            return found.uid
        return None

    uid = create_once(lambda: palette.create_ssh_key(
        spec.name, key, project_uid=project_uid, annotations=credentials.ownership_annotations(ctx.request_id)),
        recover)
    results.update({SSH_KEY_UID: uid, SSH_KEY_OWNED: "true"})
    return StepDone("SSH key uploaded", results, [
        ctx.event("sshkey.uploaded", "sshkey", "created", palette={"sshKeyUid": uid})])


def _generated_key_pair(ctx: StepContext, project_uid: str) -> tuple[str, str]:
    """The public half of this request's generated key pair and its Key Vault id, making and
    storing the pair once (the private key never leaves Key Vault and this delivery's memory)."""
    from cryptography.hazmat.primitives import serialization

    spec = ctx.request.ssh_key
    assert spec is not None
    store = ctx.clients.secrets
    name = credentials.secret_name(ctx.account_name, SecretKind.SSH_KEY)
    comment = f"palette-onboarding-{ctx.account_name}"
    looked_up = ctx.found(f"keyVault.{SecretKind.SSH_KEY.value}")
    for version in store.list_versions(name) if looked_up is NOT_LOOKED_UP else looked_up:
        if version.tags.get(credentials.KEY_NAME_TAG) != spec.name:
            continue
        pem, _ = store.get_secret(name, version.version)
        public = _public_key_of(pem)
        if version.tags.get(credentials.REQUEST_ID_TAG) == ctx.request_id:
            return f"{public} {comment}", version.id  # made by this request before a crash
        held = ctx.clients.palette.find_ssh_key(spec.name, project_uid=project_uid)
        if held is not None and _same_public_key(held.public_key, public):
            return f"{public} {comment}", version.id  # an earlier request's key, which Palette holds
        break
    if ctx.key_pair is None:
        ctx.key_pair = ctx.clients.key_pairs.take()
    private_key = ctx.key_pair.result()
    pem = SecretStr(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode())
    public = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    stored = store.set_secret(name, pem, content_type=credentials.CONTENT_TYPES[SecretKind.SSH_KEY],
                              tags=ctx.secret_tags(SecretKind.SSH_KEY, **{
                                  credentials.KEY_NAME_TAG: spec.name,
                                  credentials.PUBLIC_KEY_TAG: credentials.public_key_fingerprint(public)}))
    return f"{public} {comment}", stored.id


def _public_key_of(pem: SecretStr) -> str:
    """The public half of a private key this product generated and kept in Key Vault. OpenSSL's
    check of an RSA key (0.2 s for 4096 bits, holding the GIL) is skipped: only the public numbers
    are read, and the key is one the product made."""
    from cryptography.hazmat.primitives import serialization

    private_key = serialization.load_ssh_private_key(pem.get_secret_value().encode(), password=None,
                                                     unsafe_skip_rsa_key_validation=True)
    return private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


# --------------------------------------------------------------------------------------- apikey

def apikey(ctx: StepContext) -> StepDone:
    """Create the Palette API key once and put its value in Key Vault at once (shown only once)."""
    spec = ctx.request.api_key
    if spec is None:
        return StepDone("no API key requested", outcome=StepOutcome.SKIPPED)
    palette = ctx.clients.palette
    store = ctx.clients.secrets
    name = credentials.secret_name(ctx.account_name, SecretKind.API_KEY)

    def ours() -> list[str]:
        return [key.uid for key in palette.list_api_keys()
                if key.name == spec.name and credentials.made_by_request(key.annotations, ctx.request_id)]

    if ctx.earlier_attempt(API_KEY_CREATING):
        for uid in ours():
            stored = store.find_version(name, tag=credentials.PALETTE_UID_TAG, value=uid)
            if stored is not None:
                return _apikey_done(ctx, uid, stored)
            # Made before a crash, but its value never reached Key Vault: remove it, make another.
            palette.delete_api_key(uid)
    # Whatever still bears the name now is somebody else's (it may have appeared since check).
    _api_key_name_free(ctx, "apikey")
    user_uid = ctx.result(USER_UID)
    assert user_uid is not None
    ctx.handle.mark(**{API_KEY_CREATING: "1"})
    expiry = spec.expiry(utcnow())

    def recover() -> None:
        for uid in ours():  # a create whose answer was lost: its value is lost with it
            palette.delete_api_key(uid)
        return None

    created = create_once(lambda: palette.create_api_key(
        spec.name, user_uid=user_uid, expiry=expiry, description=spec.description,
        annotations=credentials.ownership_annotations(ctx.request_id)), recover)
    try:
        stored = store.set_secret(
            name, created.value, content_type=credentials.CONTENT_TYPES[SecretKind.API_KEY], expires_on=expiry,
            tags=ctx.secret_tags(SecretKind.API_KEY, **{credentials.KEY_NAME_TAG: spec.name,
                                                        credentials.PALETTE_UID_TAG: created.uid}))
    except Exception as exc:
        removed = _delete_api_key_quietly(ctx, created.uid)
        what = (f"The new API key {created.uid} was deleted from Palette again." if removed else
                f"The new API key {created.uid} could not be deleted yet; it will be.")
        permanent = _permanent("apikey", exc, removed=[f"Palette API key {created.uid}"] if removed else [],
                               cleanup=[] if removed else [{"kind": "paletteApiKey", "uid": created.uid}], what=what)
        if permanent is not None:
            raise permanent from None
        raise
    return _apikey_done(ctx, created.uid, stored)


def _delete_api_key_quietly(ctx: StepContext, uid: str) -> bool:
    try:
        ctx.clients.palette.delete_api_key(uid)
    except Exception:
        logger.warning("request %s: could not delete API key %s", ctx.request_id, uid, exc_info=True)
        return False
    return True


def _apikey_done(ctx: StepContext, uid: str, stored: StoredSecret) -> StepDone:
    results = {API_KEY_UID: uid, API_KEY_SECRET_ID: stored.id}
    if stored.expires_on:
        results[API_KEY_EXPIRES_ON] = iso(stored.expires_on)
    return StepDone("API key created; value in Key Vault", results, [
        ctx.event("apikey.created", "apikey", "created", palette={"apiKeyUid": uid}, keyVaultSecretId=stored.id)])


# --------------------------------------------------------------------------------------- verify

def verify(ctx: StepContext, *, alongside: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Read everything back, as the guide's last step does, and report each check. The reads do
    not depend on each other, so they go out together: one round trip; ``alongside`` runs beside
    them (once they are on their way) and has finished when this returns."""
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
    beside = in_thread(alongside, name="onboarding-beside") if alongside is not None else None

    account = next((a for a in listing.result() if a.uid == account_uid), None)
    if account is None:
        add("account.readable", False, f"account {account_uid} was not found")
    else:
        add("account.readable", account.name == request.account_name and _same_identity(account, request),
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
    if beside is not None:
        beside.result()
    return checks


# ------------------------------------------------------------------------------------ inventory

def markers(request: OnboardingRequest) -> dict[str, str]:
    """The marker of every create this request may make, written with its claim (``Plan.markers``)."""
    found = {ACCOUNT_CREATING: "1"}
    if isinstance(request.azure.secret, GeneratedSecret):
        found[PASSWORD_ADDING] = "1"
    if request.ssh_key is not None:
        found[SSH_KEY_CREATING] = "1"
    if request.api_key is not None:
        found[API_KEY_CREATING] = "1"
    return found


def record_in_inventory(ctx: StepContext) -> None:
    """Put the onboarded account in the inventory the rotation sweep and drift pass work from."""
    from shared.state.inventory import MANAGED, OFFBOARDED, SOURCE_GENERATED, SOURCE_KEY_VAULT, AccountRecord

    request = ctx.request
    results = ctx.handle.record.results
    name, version = _secret_id_parts(results.get(SECRET_ID, ""))
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

    ctx.clients.inventory.update(request.account_name, apply,
                                 create=lambda: AccountRecord(account_name=request.account_name))
