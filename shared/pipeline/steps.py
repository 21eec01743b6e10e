"""The steps of one onboarding, each idempotent and recorded.

Order and concurrency (the account branch and the key branch share nothing but the state row):

    check ─┬─ secret ── validate ── register ─┬─ verify
           └─ sshkey ── apikey ───────────────┘

Each step first looks at what the state row and the services already hold, so a redelivery after
a crash finishes the work instead of repeating it. Before every call that creates something whose
result cannot be read back later (a Graph password, a Palette API key), a marker is saved; a retry
that finds the marker but not the result removes the half-made object and makes it again, so there
is never an extra password or key.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from pydantic import SecretStr

from shared.clients import keyvault
from shared.errors import PermanentStepError
from shared.models import GeneratedSecret
from shared.state import StepOutcome
from shared.state.records import utcnow

if TYPE_CHECKING:
    from shared.clients.palette import AzureAccount, AzureCredentials
    from shared.models import OnboardingRequest
    from shared.pipeline.handle import RecordHandle
    from shared.pipeline.runner import OnboardingClients
    from shared.settings import PipelineConfig

logger = logging.getLogger(__name__)


# Result keys kept in the state row. Keys starting with "_" are internal markers, hidden from the API.
ACCOUNT_UID = "accountUid"
ACCOUNT_ACTION = "accountAction"
PROJECT_UID = "projectUid"
OVERLORD_UID = "privateCloudGatewayUid"
USER_UID = "apiKeyUserUid"
SSH_KEY_UID = "sshKeyUid"
API_KEY_UID = "apiKeyUid"
GRAPH_KEY_ID = "graphKeyId"
SECRET_ID = "keyVaultSecretId"
SSH_SECRET_ID = "sshPrivateKeySecretId"
API_KEY_SECRET_ID = "apiKeySecretId"
APP_OBJECT_ID = "_appObjectId"
ACCOUNT_CREATING = "_accountCreateSent"
API_KEY_CREATING = "_apiKeyCreateSent"


@dataclass
class StepContext:
    request: OnboardingRequest
    clients: OnboardingClients
    config: PipelineConfig
    handle: RecordHandle
    # Held in memory only for the length of one delivery; never written to state or logs.
    client_secret: SecretStr | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def scope_project_uid(self) -> str | None:
        """The ProjectUid header for the cloud account: only for a project-scoped account."""
        return self.handle.result(PROJECT_UID) if self.request.palette.scope == "project" else None

    def emit(self, short_type: str, step: str, outcome: str, discriminator: str = "",
             **data: Any) -> None:
        from shared.clients.events import build_event, event_id

        event_data = {"requestId": self.request_id, "step": step, "outcome": outcome, **data}
        identifier = event_id(self.request_id, short_type, discriminator)

        def publish() -> None:
            self.clients.events.publish(build_event(
                event_type=short_type, account_name=self.request.account_name,
                request_id=self.request_id, data=event_data, discriminator=discriminator,
            ))
        self.handle.emit_once(identifier, publish)

    def palette_uids(self) -> dict[str, str]:
        record = self.handle.record
        keys = (ACCOUNT_UID, PROJECT_UID, OVERLORD_UID, SSH_KEY_UID, API_KEY_UID)
        return {k: record.results[k] for k in keys if record.results.get(k)}


def _same_identity(account: AzureAccount, request: OnboardingRequest) -> bool:
    """Whether an existing Palette account is for the same Entra tenant and app as the request."""
    return ((account.tenant_id or "").lower(), (account.client_id or "").lower()) == (
        request.azure.tenant_id, request.azure.client_id)


def _account_not_clashing(step: str, account: AzureAccount | None,
                          request: OnboardingRequest) -> AzureAccount | None:
    """The existing account of that name when it is for the same app; a clash otherwise."""
    if account is not None and not _same_identity(account, request):
        raise PermanentStepError(
            step, "account_name_clash",
            f"Palette already has an Azure account named '{request.account_name}' for another tenant "
            "or client; nothing was changed. Choose another accountName or remove that account first.")
    return account


def _same_public_key(a: str, b: str) -> bool:
    """OpenSSH keys are equal when type and base64 body match; the comment does not count."""
    return a.split()[:2] == b.split()[:2]


def _secret_tags(ctx: StepContext, purpose: str, **extra: str) -> dict[str, str]:
    """The managed-by marker and account (so the rotation sweep finds what it owns), plus the ids
    a retry or an operator needs to tie the secret to its request and app."""
    request = ctx.request
    return keyvault.managed_tags(request.account_name, purpose, {
        keyvault.REQUEST_ID_TAG: request.request_id,
        keyvault.TENANT_ID_TAG: request.azure.tenant_id,
        keyvault.CLIENT_ID_TAG: request.azure.client_id,
        **extra,
    })


# ---------------------------------------------------------------------------------------- check

def check(ctx: StepContext) -> None:
    """Resolve names to uids and find clashes before anything is made anywhere."""
    request = ctx.request
    palette = ctx.clients.palette
    results: dict[str, str] = {}

    project = palette.get_project(request.palette.project)
    if project is None:
        raise PermanentStepError(
            "check", "project_not_found",
            f"Palette project '{request.palette.project}' was not found; create it or set "
            "palette.project to an existing project.")
    results[PROJECT_UID] = project.uid
    scope_uid = project.uid if request.palette.scope == "project" else None

    gateway_name = request.palette.private_cloud_gateway
    if gateway_name:
        gateway = palette.find_overlord(gateway_name)
        if gateway is None:
            raise PermanentStepError(
                "check", "pcg_not_found",
                f"Private Cloud Gateway '{gateway_name}' was not found in Palette; check "
                "palette.privateCloudGateway.")
        if gateway.state != "Running":
            raise PermanentStepError(
                "check", "pcg_not_running",
                f"Private Cloud Gateway '{gateway_name}' is {gateway.state or 'not running'}; it must be "
                "Running before an account can use it.")
        results[OVERLORD_UID] = gateway.uid

    if request.api_key is not None:
        user = palette.find_user_by_email(request.api_key.user)
        if user is None:
            raise PermanentStepError(
                "check", "user_not_found",
                f"No Palette user has the email '{request.api_key.user}'; check apiKey.user.")
        results[USER_UID] = user.uid
        existing_key = palette.find_api_key(request.api_key.name)
        if existing_key is not None and existing_key.uid != ctx.handle.result(API_KEY_UID) \
                and not ctx.handle.result(API_KEY_CREATING):
            raise PermanentStepError(
                "check", "api_key_name_clash",
                f"A Palette API key named '{request.api_key.name}' already exists and was not made by "
                f"request {request.request_id}; choose another apiKey.name.")

    _account_not_clashing("check", palette.find_azure_account(request.account_name, project_uid=scope_uid),
                          request)

    if request.ssh_key is not None:
        existing_ssh = palette.find_ssh_key(request.ssh_key.name, project_uid=project.uid)
        if existing_ssh is not None:
            wanted = request.ssh_key.public_key or _kept_public_key(ctx, project.uid)
            if wanted is None or not _same_public_key(existing_ssh.public_key, wanted):
                raise PermanentStepError(
                    "check", "ssh_key_name_clash",
                    f"Project '{request.palette.project}' already has a different SSH key named "
                    f"'{request.ssh_key.name}'; choose another sshKey.name.")

    secret = request.azure.secret
    if secret.source == "keyVault":
        try:
            ctx.clients.secrets.get_secret(secret.secret_name, getattr(secret, "version", None))
        except ResourceNotFoundError:
            raise PermanentStepError(
                "check", "secret_not_found",
                f"Key Vault secret '{secret.secret_name}' was not found; check azure.secret.secretName "
                "(and version).") from None
    elif secret.source == "generate":
        if ctx.clients.graph is None:
            raise PermanentStepError(
                "check", "graph_unavailable",
                "This deployment cannot reach Microsoft Graph for that tenant; use "
                "azure.secret.source = keyVault.")
        try:
            application = ctx.clients.graph.get_application(request.azure.client_id)
        except ResourceNotFoundError:
            raise PermanentStepError(
                "check", "app_not_found",
                f"No app registration with application id {request.azure.client_id} was found, or this "
                "app's identity is not one of its owners; check azure.clientId.") from None
        results[APP_OBJECT_ID] = application.object_id
    ctx.handle.step("check", StepOutcome.SUCCEEDED, "request valid; names resolved", **results)


# --------------------------------------------------------------------------------------- secret

def secret(ctx: StepContext) -> None:
    """Make (or read) the client secret and keep it in Key Vault."""
    request = ctx.request
    source = request.azure.secret
    store = ctx.clients.secrets
    if source.source == "keyVault":
        value, stored = store.get_secret(source.secret_name, getattr(source, "version", None))
        ctx.client_secret = value
        ctx.handle.step("secret", StepOutcome.SUCCEEDED, "existing Key Vault secret", **{SECRET_ID: stored.id})
        ctx.emit("secret.stored", "secret", "existing", source="keyVault", keyVaultSecretId=stored.id)
        return

    graph = ctx.clients.graph
    assert graph is not None  # checked in the check step
    assert isinstance(source, GeneratedSecret)  # inline secrets are stored by the intake
    name = keyvault.secret_name_for(request.account_name, keyvault.PURPOSE_CLIENT_SECRET)
    display_name = f"palette-onboarding {request.account_name} {request.request_id}"
    key_id = ctx.handle.result(GRAPH_KEY_ID)
    if key_id:
        kept = store.find_version(name, tag=keyvault.CREDENTIAL_ID_TAG, value=key_id)
        if kept is not None:
            ctx.client_secret, _ = store.get_secret(name, kept.version)
            _secret_done(ctx, kept.id, key_id)
            return
        # The password was made but its value never reached Key Vault: it is lost. Remove it.
        graph.remove_password(request.azure.client_id, key_id)
    else:
        # A password may have been added just before a crash, before its keyId was recorded.
        application = graph.get_application(request.azure.client_id)
        for credential in application.passwords:
            if credential.display_name == display_name:
                graph.remove_password(request.azure.client_id, credential.key_id)

    ctx.handle.step("secret", StepOutcome.STARTED)
    end = utcnow() + dt.timedelta(days=source.validity_days)
    try:
        password = graph.add_password(request.azure.client_id, display_name=display_name, end=end)
    except HttpResponseError as exc:
        if exc.status_code == 400:
            raise PermanentStepError(
                "secret", "graph_rejected",
                f"Microsoft Graph refused a new client secret for app {request.azure.client_id}: "
                f"{exc.message}") from None
        if exc.status_code == 403:
            raise PermanentStepError(
                "secret", "graph_forbidden",
                f"This app's identity may not add secrets to app {request.azure.client_id}; make it an "
                "owner of the app registration (Application.ReadWrite.OwnedBy).") from None
        raise
    ctx.handle.set_results(**{GRAPH_KEY_ID: password.key_id})
    stored = store.set_secret(
        name, password.secret_text, content_type=keyvault.CONTENT_TYPE_CLIENT_SECRET, expires_on=password.end,
        tags=_secret_tags(ctx, keyvault.PURPOSE_CLIENT_SECRET, **{
            keyvault.CREDENTIAL_ID_TAG: password.key_id,
            keyvault.PROVIDER_ADDRESS_TAG: ctx.handle.result(APP_OBJECT_ID) or "",
            keyvault.VALIDITY_PERIOD_DAYS_TAG: str(source.validity_days)}),
    )
    ctx.client_secret = password.secret_text
    _secret_done(ctx, stored.id, password.key_id)


def _secret_done(ctx: StepContext, secret_id: str, key_id: str) -> None:
    ctx.handle.step("secret", StepOutcome.SUCCEEDED, "new client secret stored in Key Vault",
                    **{SECRET_ID: secret_id, GRAPH_KEY_ID: key_id})
    ctx.emit("secret.stored", "secret", "created", source="generate", keyVaultSecretId=secret_id,
             graphKeyId=key_id)


def _load_client_secret(ctx: StepContext) -> SecretStr:
    """The client secret for this request: in memory, or read back from Key Vault on a resume."""
    if ctx.client_secret is not None:
        return ctx.client_secret
    secret_id = ctx.handle.result(SECRET_ID)
    if not secret_id:
        raise PermanentStepError("validate", "secret_missing",
                                 "The client secret of this request was not recorded; submit it again.")
    name, _, version = secret_id.rstrip("/").split("/secrets/", 1)[1].partition("/")
    ctx.client_secret, _ = ctx.clients.secrets.get_secret(name, version or None)
    return ctx.client_secret


def credentials(ctx: StepContext) -> AzureCredentials:
    from shared.clients.palette import AzureCredentials

    azure = ctx.request.azure
    return AzureCredentials(
        tenant_id=azure.tenant_id, client_id=azure.client_id, client_secret=_load_client_secret(ctx),
        environment=azure.cloud, tenant_name=azure.tenant_name or "",
        disable_properties=azure.disable_properties, tls_cert=azure.tls_cert,
    )


# ------------------------------------------------------------------------------------- validate

def validate(ctx: StepContext) -> None:
    """Ask Palette to validate the credentials, waiting while a new secret propagates in Entra ID."""
    creds = credentials(ctx)
    generated = ctx.request.azure.secret.source == "generate"
    budget = ctx.config.validation_budget_seconds if generated else 0.0
    deadline = time.monotonic() + budget
    delay = ctx.config.validation_initial_delay_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            ctx.clients.palette.validate_azure_credentials(creds, project_uid=ctx.scope_project_uid)
            break
        except HttpResponseError as exc:
            if exc.status_code is None or exc.status_code == 429 or exc.status_code >= 500 \
                    or exc.status_code == 401:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = f" after {attempt} attempts over {budget:.0f} s" if generated else ""
                raise PermanentStepError(
                    "validate", "credentials_invalid",
                    f"Palette could not validate the Azure credentials of client {creds.client_id} in "
                    f"tenant {creds.tenant_id}{waited}: {exc.message}") from None
            logger.info("request %s: credentials not valid yet (attempt %d); retrying in %.1f s",
                        ctx.request_id, attempt, min(delay, remaining))
            time.sleep(min(delay * (0.5 + random.random() / 2), remaining))
            delay = min(delay * 2, 8.0)
    ctx.handle.step("validate", StepOutcome.SUCCEEDED, f"credentials valid (attempt {attempt})")


# ------------------------------------------------------------------------------------- register

def register(ctx: StepContext) -> None:
    """Create the cloud account, or update ours in place; never touch someone else's."""
    request = ctx.request
    palette = ctx.clients.palette
    creds = credentials(ctx)
    scope_uid = ctx.scope_project_uid
    overlord = ctx.handle.result(OVERLORD_UID)
    existing = _account_not_clashing(
        "register", palette.find_azure_account(request.account_name, project_uid=scope_uid), request)
    if existing is not None and not ctx.handle.result(ACCOUNT_CREATING):
        palette.update_azure_account(existing.uid, request.account_name, creds, project_uid=scope_uid,
                                     overlord_uid=overlord)
        uid, action, event = existing.uid, "updated", "account.updated"
    elif existing is not None:
        # Our create went through before a crash: the account is ours, created by this request.
        uid, action, event = existing.uid, "created", "account.registered"
    else:
        ctx.handle.set_results(**{ACCOUNT_CREATING: "1"})
        try:
            uid = palette.create_azure_account(request.account_name, creds, project_uid=scope_uid,
                                               overlord_uid=overlord)
        except ResourceExistsError:
            found = palette.find_azure_account(request.account_name, project_uid=scope_uid)
            if found is None or not _same_identity(found, request):
                raise
            uid = found.uid
        action, event = "created", "account.registered"
    ctx.handle.step("register", StepOutcome.SUCCEEDED, f"cloud account {action}",
                    **{ACCOUNT_UID: uid, ACCOUNT_ACTION: action})
    ctx.emit(event, "register", action, palette={"accountUid": uid, "scope": request.palette.scope})


# --------------------------------------------------------------------------------------- sshkey

def sshkey(ctx: StepContext) -> None:
    """Upload the SSH public key to the project (generating the pair if asked), by name."""
    spec = ctx.request.ssh_key
    if spec is None:
        ctx.handle.step("sshkey", StepOutcome.SKIPPED, "no SSH key requested")
        return
    project_uid = ctx.handle.result(PROJECT_UID)
    assert project_uid is not None
    public_key = spec.public_key
    extra: dict[str, str] = {}
    if public_key is None:
        purpose = f"{keyvault.PURPOSE_SSH_KEY}:{spec.name}"
        public_key, secret_id = _generated_key_pair(
            ctx, keyvault.secret_name_for(ctx.request.account_name, purpose), purpose)
        extra[SSH_SECRET_ID] = secret_id
    palette = ctx.clients.palette
    existing = palette.find_ssh_key(spec.name, project_uid=project_uid)
    if existing is not None:
        if not _same_public_key(existing.public_key, public_key):
            raise PermanentStepError(
                "sshkey", "ssh_key_name_clash",
                f"Project '{ctx.request.palette.project}' already has a different SSH key named "
                f"'{spec.name}'; choose another sshKey.name.")
        ctx.handle.step("sshkey", StepOutcome.SUCCEEDED, "SSH key already present",
                        **{SSH_KEY_UID: existing.uid}, **extra)
        ctx.emit("sshkey.uploaded", "sshkey", "exists", palette={"sshKeyUid": existing.uid})
        return
    try:
        uid = palette.create_ssh_key(spec.name, public_key, project_uid=project_uid)
    except ResourceExistsError:
        found = palette.find_ssh_key(spec.name, project_uid=project_uid)
        if found is None or not _same_public_key(found.public_key, public_key):
            raise
        uid = found.uid
    ctx.handle.step("sshkey", StepOutcome.SUCCEEDED, "SSH key uploaded", **{SSH_KEY_UID: uid}, **extra)
    ctx.emit("sshkey.uploaded", "sshkey", "created", palette={"sshKeyUid": uid})


def _generated_key_pair(ctx: StepContext, secret_name: str, purpose: str) -> tuple[str, str]:
    """The public half of this request's generated key pair, making and storing it once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    store = ctx.clients.secrets
    comment = f"palette-onboarding-{ctx.request.account_name}"
    stored = store.find_version(secret_name, tag=keyvault.REQUEST_ID_TAG, value=ctx.request_id)
    if stored is not None:
        pem, _ = store.get_secret(secret_name, stored.version)
        return f"{_public_key_of(pem)} {comment}", stored.id
    kept = _kept_public_key(ctx, ctx.handle.result(PROJECT_UID))
    if kept is not None:
        # An earlier request generated the key under this name and Palette holds it: keep it.
        _, latest = store.get_secret(secret_name)
        return f"{kept} {comment}", latest.id
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    pem = SecretStr(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode())
    stored = store.set_secret(secret_name, pem, content_type=keyvault.CONTENT_TYPE_SSH_PRIVATE_KEY,
                              tags=_secret_tags(ctx, purpose))
    return f"{_public_key_of(pem)} {comment}", stored.id


def _public_key_of(pem: SecretStr) -> str:
    from cryptography.hazmat.primitives import serialization

    private_key = serialization.load_ssh_private_key(pem.get_secret_value().encode(), password=None)
    return private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _kept_public_key(ctx: StepContext, project_uid: str | None) -> str | None:
    """The public half of the generated SSH key this app keeps in Key Vault for the request's key
    name, when the same key is already in Palette (a re-run with a new requestId); else None."""
    spec = ctx.request.ssh_key
    if spec is None or not spec.generate:
        return None
    name = keyvault.secret_name_for(ctx.request.account_name, f"{keyvault.PURPOSE_SSH_KEY}:{spec.name}")
    try:
        pem, _ = ctx.clients.secrets.get_secret(name)
    except ResourceNotFoundError:
        return None
    public = _public_key_of(pem)
    existing = ctx.clients.palette.find_ssh_key(spec.name, project_uid=project_uid) if project_uid else None
    return public if existing is not None and _same_public_key(existing.public_key, public) else None


# --------------------------------------------------------------------------------------- apikey

def apikey(ctx: StepContext) -> None:
    """Create the Palette API key once and put its value in Key Vault at once (shown only once)."""
    spec = ctx.request.api_key
    if spec is None:
        ctx.handle.step("apikey", StepOutcome.SKIPPED, "no API key requested")
        return
    palette = ctx.clients.palette
    store = ctx.clients.secrets
    name = keyvault.secret_name_for(ctx.request.account_name, f"{keyvault.PURPOSE_API_KEY}:{spec.name}")
    if ctx.handle.result(API_KEY_CREATING):
        existing = palette.find_api_key(spec.name)
        if existing is not None:
            stored = store.find_version(name, tag=keyvault.PALETTE_UID_TAG, value=existing.uid)
            if stored is not None:
                _apikey_done(ctx, existing.uid, stored.id)
                return
            # Made before a crash, but its value never reached Key Vault: remove it and make another.
            palette.delete_api_key(existing.uid)
    elif palette.find_api_key(spec.name) is not None:
        raise PermanentStepError(
            "apikey", "api_key_name_clash",
            f"A Palette API key named '{spec.name}' already exists; choose another apiKey.name.")
    user_uid = ctx.handle.result(USER_UID)
    assert user_uid is not None
    ctx.handle.set_results(**{API_KEY_CREATING: "1"})
    expiry = spec.expiry(utcnow())
    created = palette.create_api_key(spec.name, user_uid=user_uid, expiry=expiry,
                                     description=spec.description)
    stored = store.set_secret(name, created.value, content_type=keyvault.CONTENT_TYPE_API_KEY, expires_on=expiry,
                              tags=_secret_tags(ctx, f"{keyvault.PURPOSE_API_KEY}:{spec.name}",
                                                **{keyvault.PALETTE_UID_TAG: created.uid}))
    _apikey_done(ctx, created.uid, stored.id)


def _apikey_done(ctx: StepContext, uid: str, secret_id: str) -> None:
    ctx.handle.step("apikey", StepOutcome.SUCCEEDED, "API key created; value in Key Vault",
                    **{API_KEY_UID: uid, API_KEY_SECRET_ID: secret_id})
    ctx.emit("apikey.created", "apikey", "created", palette={"apiKeyUid": uid},
             keyVaultSecretId=secret_id)


# --------------------------------------------------------------------------------------- verify

def verify(ctx: StepContext) -> list[dict[str, Any]]:
    """Read everything back, as the guide's last step does, and report each check."""
    request = ctx.request
    palette = ctx.clients.palette
    scope_uid = ctx.scope_project_uid
    checks: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    account_uid = ctx.handle.result(ACCOUNT_UID) or ""
    try:
        account = palette.get_azure_account(account_uid, project_uid=scope_uid)
        add("account.readable", account.name == request.account_name
            and _same_identity(account, request),
            f"account {account_uid} reads back as '{account.name}'")
        add("account.scope", account.scope == request.palette.scope,
            f"account scope is {account.scope}")
    except ResourceNotFoundError:
        add("account.readable", False, f"account {account_uid} was not found")
    listed = any(a.uid == account_uid for a in palette.list_azure_accounts(project_uid=scope_uid))
    add("account.listed", listed, f"account {'is' if listed else 'is not'} listed among Azure accounts")

    secret_id = ctx.handle.result(SECRET_ID) or ""
    add("secret.stored", bool(secret_id), "client secret kept in Key Vault" if secret_id else "no secret id")

    if request.ssh_key is not None:
        project_uid = ctx.handle.result(PROJECT_UID)
        key = palette.find_ssh_key(request.ssh_key.name, project_uid=project_uid or "")
        add("sshkey.listed", key is not None and key.uid == ctx.handle.result(SSH_KEY_UID),
            f"SSH key '{request.ssh_key.name}' {'is' if key else 'is not'} listed in the project")
    if request.api_key is not None:
        uid = ctx.handle.result(API_KEY_UID) or ""
        try:
            api_key = palette.get_api_key(uid)
            state = "active" if api_key.is_active else "inactive"
            add("apikey.active", bool(api_key.is_active), f"API key {uid} is {state}")
        except ResourceNotFoundError:
            add("apikey.active", False, f"API key {uid} was not found")
    return checks
