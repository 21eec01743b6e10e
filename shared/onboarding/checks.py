"""The check step's lookups, one check at a time: shared by the pipeline and the dry run.

Each check reads (never writes) one thing the onboarding depends on and reports a
:class:`CheckResult`: its ``name``, an ``outcome``, a ``detail`` a person can act on and, where it
applies, the ``action`` the onboarding would take (``create``, ``update``, ``reuse``, ``clash``).
A failing check carries the :class:`~shared.errors.PermanentStepError` the check step raises, so
both callers tell the same story:

* the pipeline's ``check`` step (:func:`shared.onboarding.steps.check`) runs them in order and raises
  the first failure; errors of the services themselves propagate, to be sorted by the failure table;
* the dry run (``POST /api/onboardings/validate``) runs every check it can, reports a service
  error as an ``error`` outcome and carries on, and skips what depends on a check that failed.

Order (the pipeline's): project, Private Cloud Gateway, API key user and name, cloud account, SSH
key, Palette's resource limits, the Key Vault names the request writes, then the client secret's
source (a Key Vault secret, or the app registration a password is added to). The order is how
results are reported and which failure counts as the first; the lookups themselves all start at
once, those that need the project's uid (an SSH key, a project-scoped account) as soon as the
project is known. They only read, so one onboarding's checks cost two round trips instead of a
dozen. A lookup two checks need (the account of the request's name, the project's SSH keys, the
tenant's API keys, the key's user) is made once, by whichever asks first. A check hands on what it
found (``CheckResult.found``), so the steps of the same delivery need not look it up again.

The limits check counts only what this request would make: a cloud account unless one of its name
is there already (the product's own is updated, anybody else's is a clash), an SSH key when the
request asks for one the project does not hold, an API key when it asks for one and none of that
name is this request's. So a request whose account already exists is never refused for it, and a
redelivery never meets the check again anyway: the engine skips a step it recorded as done, and
the check is recorded before anything is made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import ResourceNotFoundError

from shared import credentials
from shared.concurrency import in_thread
from shared.credentials import SecretKind
from shared.dryrun import Action, CheckOutcome, CheckResult, Found
from shared.engine.failures import classify
from shared.errors import PermanentStepError
from shared.models import GeneratedSecret, InlineSecret, KeyVaultSecret, StagedSecret
from shared.onboarding.keys import APP_OBJECT_ID, OVERLORD_UID, PERMISSIONS, PROJECT_UID, USER_UID

if TYPE_CHECKING:
    from pydantic import SecretStr

    from shared.clients.keyvault import SecretStore
    from shared.clients.palette import ApiKey, AzureAccount, Project, ResourceLimit, SshKey, User
    from shared.engine.plan import Lookups
    from shared.models import OnboardingRequest
    from shared.services import Services


def same_identity(account: AzureAccount, request: OnboardingRequest) -> bool:
    """Whether an existing Palette account is for the same Entra tenant and app as the request."""
    return ((account.tenant_id or "").lower(), (account.client_id or "").lower()) == (
        request.azure.tenant_id, request.azure.client_id)


def account_we_may_change(step: str, account: AzureAccount | None, request: OnboardingRequest) -> AzureAccount | None:
    """The existing account of that name when the product made it for the same app; else a clash."""
    if account is None:
        return None
    if not credentials.made_by_product(account.annotations):
        raise PermanentStepError(
            step, "account_name_clash",
            f"Palette already has an Azure account named '{request.account_name}' that this product did not "
            "create; nothing was changed. Choose another accountName, or remove that account first.",
            field="accountName")
    if not same_identity(account, request):
        raise PermanentStepError(
            step, "account_name_clash",
            f"Palette already has an Azure account named '{request.account_name}' for another tenant or "
            "client; nothing was changed. Choose another accountName or remove that account first.",
            field="accountName")
    return account


def same_public_key(a: str, b: str) -> bool:
    """OpenSSH keys are equal when type and base64 body match; the comment does not count."""
    return a.split()[:2] == b.split()[:2]


def public_key_of(pem: SecretStr) -> str:
    """The public half of a private key this product generated and kept in Key Vault. OpenSSL's
    check of an RSA key (0.2 s for 4096 bits, holding the GIL) is skipped: only the public numbers
    are read, and the key is one the product made."""
    from cryptography.hazmat.primitives import serialization

    private_key = serialization.load_ssh_private_key(pem.get_secret_value().encode(), password=None,
                                                     unsafe_skip_rsa_key_validation=True)
    return private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


#: The lookup of the request's project, which a delivery starts before its names are leased (no
#: lease covers a project: the product never makes one); the checks that need its uid wait for it.
PROJECT = "palette.project"


def run_checks(request: OnboardingRequest, clients: Services, *, errors_as_results: bool = False,
               lookups: Lookups | None = None) -> Iterator[CheckResult]:
    """Each check's result in the pipeline's order; every lookup starts at once (see above), so
    all of them run even when an early one fails (they only read). With ``errors_as_results`` (the
    dry run) a service error becomes an ``error`` result and the checks go on; otherwise it
    propagates in its place in the order, as the check step's did. ``lookups``: what the delivery
    found (or started finding) already, the project among it."""
    checks = _Checks(request, clients, lookups)

    def start(name: str, check: Check) -> Future[CheckResult]:
        if name in checks.needing_project():
            return checks.after_project(check)
        return in_thread(check, name="onboarding-check")

    started = [(name, start(name, check)) for name, check in checks.plan()]
    for name, future in started:
        error = future.exception()
        if error is None:
            yield future.result()
            continue
        if not errors_as_results or not isinstance(error, Exception):
            raise error
        failure = classify(error)
        yield CheckResult(name, CheckOutcome.ERROR, f"The lookup failed; nothing was decided: "
                          f"{failure.message}", reason=failure.reason)


def api_key_name_clash(request: OnboardingRequest, clients: Services, step: str,
                       keys: list[ApiKey] | None = None) -> PermanentStepError | None:
    """A Palette API key of the requested name may exist only if this request made it. ``keys``:
    the tenant's API keys as this delivery listed them (listed here otherwise)."""
    spec = request.api_key
    assert spec is not None
    for key in keys if keys is not None else clients.palette.list_api_keys():
        if key.name == spec.name and not credentials.made_by_request(key.annotations, request.request_id):
            return PermanentStepError(
                step, "api_key_name_clash",
                f"A Palette API key named '{spec.name}' already exists and was not made by request "
                f"{request.request_id}; choose another apiKey.name.", field="apiKey.name")
    return None


_KIND_FIELDS = {SecretKind.CLIENT_SECRET: "accountName", SecretKind.SSH_KEY: "sshKey.generate",
                SecretKind.API_KEY: "apiKey"}
RECOVER_PREFIX = "_recover:"
"""Results key of a soft-deleted secret the check step recovers (``recoverDeletedSecrets``)."""


def deleted_secret_block(request: OnboardingRequest, kind: SecretKind, store: SecretStore, *,
                         step: str) -> PermanentStepError | None:
    """Why a soft-deleted secret of a name the request writes blocks it, or None when nothing is
    deleted under that name or the request asks to recover what is (and it is this product's for
    the account: a recovered secret of somebody else's is never put back by the product)."""
    account = request.account_name
    name = credentials.secret_name(account, kind)
    deleted = store.get_deleted_secret(name)
    if deleted is None:
        return None
    ours = credentials.is_secret_of(deleted.tags, account, kind)
    if request.recover_deleted_secrets and ours:
        return None
    until = f" (until {deleted.scheduled_purge_date:%Y-%m-%d})" if deleted.scheduled_purge_date else ""
    vault = store.vault_url
    # Refused at the intake, nothing was recorded: the request is simply submitted again. Refused by
    # the check step, the request is recorded as failed: a corrected body runs again under its
    # requestId (shared.engine.admission), the same body only answers this failure.
    unchanged = ("submit the request again" if step == "intake" else
                 "submit the request under a new requestId (the same body under the same requestId only answers "
                 "this failure)")
    if ours:
        recover = ("Set recoverDeletedSecrets to true to have the onboarding recover it (its old versions come back "
                   "as history; a new version is written on top)")
        how = (f"{recover} or, if you are sure, purge it (az keyvault secret purge --id {vault}/deletedsecrets/"
               f"{name}), then submit the request again." if step == "intake" else
               f"{recover} and submit the request again: it was refused here before anything was made, so the "
               "corrected body runs under the same requestId. Or, if you are sure, purge it (az keyvault secret "
               f"purge --id {vault}/deletedsecrets/{name}) and {unchanged}.")
    else:
        how = ("It was not written by this product for the account, so the product will not recover it: recover "
               f"it yourself (az keyvault secret recover --id {vault}/deletedsecrets/{name}) and rename it, or purge "
               f"it, then {unchanged}.")
    return PermanentStepError(
        step, "secret_name_deleted",
        f"Key Vault secret '{name}' (the {kind.value} of account '{account}') was deleted but is still "
        f"recoverable{until}, which blocks a new one of that name. {how}",
        field="recoverDeletedSecrets" if ours else _KIND_FIELDS[kind])

Check = Callable[[], CheckResult]
T = TypeVar("T")

#: The failure reason of a request that would take Palette past one of its resource limits.
LIMIT_REACHED = "palette_limit_reached"


@dataclass(frozen=True)
class Room:
    """One object the request would make, as a Palette resource limit counts it."""

    kind: str  # the limit's kind (v1ResourceLimitType)
    what: str  # what it counts, for people ("cloud accounts")
    held: int  # how many of those count against the limit now
    where: str  # whose they are ("the tenant (every cloud, every scope)")
    new: str  # the one the request would add
    field: str | None  # the request field that asks for it, if any


def limit_problem(rooms: list[tuple[Room, int]], tenant_uid: str) -> str:
    """Why the request is refused: each limit it would exceed, with the count and the limit, and
    how an admin raises one."""
    over = "; ".join(f"{room.where} holds {room.held} {room.what} and the tenant's '{room.kind}' limit is {limit}, "
                     f"so {room.new} would be one too many" for room, limit in rooms)
    raised = ", ".join(f'{{"kind": "{room.kind}", "limit": {room.held + 1}}}' for room, _ in rooms)
    return (f"Palette's resource limit would be exceeded: {over}; nothing was made. A Palette tenant admin can raise "
            f"it in Palette (Tenant Settings > Resource Limits) or with PATCH /v1/tenants/{tenant_uid}/resourceLimits "
            f'{{"resources": [{raised}]}} (or higher), or make room by deleting what is not used; then submit the '
            "request again under a new requestId (the same body under this requestId only answers this failure).")


class _Checks:
    """The checks of one request; later ones use what earlier ones found (the project's uid)."""

    def __init__(self, request: OnboardingRequest, clients: Services, lookups: Lookups | None = None) -> None:
        self.request = request
        self.clients = clients
        self.lookups = lookups
        self._project: Project | None = None
        self._project_known = threading.Event()
        self._guard = threading.Lock()
        self._followers: list[tuple[Check, Future[CheckResult]]] = []
        self._shared: dict[str, Future[Any]] = {}

    def _once(self, name: str, fetch: Callable[[], T]) -> T:
        """``fetch()`` once for these checks, made by whichever check asks first; the others wait
        for its answer (or its error)."""
        with self._guard:
            future = self._shared.get(name)
            first = future is None
            if future is None:
                future = self._shared[name] = Future()
        if first:
            _run_into(fetch, future)
        result: T = future.result()
        return result

    def _named_account(self) -> AzureAccount | None:
        """The Azure account of the request's name in its scope (a project-scoped one needs the project)."""
        def fetch() -> AzureAccount | None:
            project = self.project if self.request.palette.scope == "project" else None
            return self.clients.palette.find_azure_account(self.request.account_name,
                                                           project_uid=project.uid if project else None)
        return self._once("account", fetch)

    def _project_ssh_keys(self, project: Project) -> list[SshKey]:
        """Every SSH key of the project: one call, unfiltered, which both finds the request's key by
        name and counts the keys (the endpoint is not paged)."""
        return self._once("sshKeys", lambda: self.clients.palette.list_ssh_keys(project_uid=project.uid))

    def _api_keys(self) -> list[ApiKey]:
        return self._once("apiKeys", self.clients.palette.list_api_keys)

    def _api_key_user(self) -> User | None:
        spec = self.request.api_key
        assert spec is not None
        return self._once("user", lambda: self.clients.palette.find_user_by_email(spec.user))

    @property
    def project(self) -> Project | None:
        """The request's project, once its check has answered (the checks that need it wait)."""
        self._project_known.wait()
        return self._project

    def plan(self) -> Iterator[tuple[str, Check]]:
        request = self.request
        yield "palette.project", self.project_exists
        if request.palette.private_cloud_gateway:
            yield "palette.privateCloudGateway", self.gateway_running
        if request.api_key is not None:
            yield "palette.user", self.user_exists
            yield "palette.apiKey", self.api_key_name_free
        yield "palette.account", self.account_free_or_ours
        if request.ssh_key is not None:
            yield "palette.sshKey", self.ssh_key_free_or_same
        yield "palette.limits", self.within_limits
        for kind in request.secrets_written:
            yield f"keyVault.{kind.value}", partial(self.key_vault_name_usable, kind)
        secret = request.azure.secret
        if isinstance(secret, KeyVaultSecret):
            yield "keyVault.source", partial(self.key_vault_source_allowed, secret)
        elif isinstance(secret, GeneratedSecret):
            yield "graph.application", self.application_visible
        elif isinstance(secret, StagedSecret):
            yield "azure.secret", partial(self.staged_secret_ours, secret)
        elif isinstance(secret, InlineSecret):
            yield "azure.secret", self.inline_secret
        if request.azure.permissions is not None:
            yield "azure.permissions", self.permissions_held

    # -- Palette ----------------------------------------------------------------------------------

    def needing_project(self) -> set[str]:
        """The checks that wait for the project's uid."""
        return {"palette.sshKey", *(["palette.account"] if self.request.palette.scope == "project" else [])}

    def after_project(self, check: Check) -> Future[CheckResult]:
        """``check`` (it needs the project) started once the project is known: now if it is, else
        by the project's own lookup as soon as it answers. The first such check then runs on that
        lookup's thread, which holds the interpreter already: no hand-over to a waiting thread,
        which takes a switch interval or more while other lookups are busy."""
        with self._guard:
            if not self._project_known.is_set():
                future: Future[CheckResult] = Future()
                self._followers.append((check, future))
                return future
        return in_thread(check, name="onboarding-check")

    def project_exists(self) -> CheckResult:
        try:
            return self._project_exists()
        finally:
            with self._guard:
                self._project_known.set()
                followers, self._followers = self._followers, []
            for check, future in followers[1:]:
                in_thread(partial(_run_into, check, future), name="onboarding-check")
            if followers:
                _run_into(*followers[0])

    def _project_exists(self) -> CheckResult:
        name = self.request.palette.project

        def fetch() -> Project | None:
            return self.clients.palette.get_project(name)
        project: Project | None = self.lookups.get(PROJECT, fetch) if self.lookups is not None else fetch()
        if project is None:
            return CheckResult.failed("palette.project", CheckOutcome.MISSING, PermanentStepError(
                "check", "project_not_found",
                f"Palette project '{name}' was not found; create it or set palette.project to an existing "
                "project.", field="palette.project"))
        self._project = project
        return CheckResult("palette.project", CheckOutcome.OK, f"project '{name}' is {project.uid}",
                           results={PROJECT_UID: project.uid})

    def gateway_running(self) -> CheckResult:
        name = self.request.palette.private_cloud_gateway or ""
        gateway = self.clients.palette.find_overlord(name)
        if gateway is None:
            return CheckResult.failed("palette.privateCloudGateway", CheckOutcome.MISSING, PermanentStepError(
                "check", "pcg_not_found",
                f"Private Cloud Gateway '{name}' was not found in Palette; check palette.privateCloudGateway.",
                field="palette.privateCloudGateway"))
        if gateway.state != "Running":
            return CheckResult.failed("palette.privateCloudGateway", CheckOutcome.NOT_READY, PermanentStepError(
                "check", "pcg_not_running",
                f"Private Cloud Gateway '{name}' is {gateway.state or 'not running'}; it must be Running before "
                "an account can use it.", field="palette.privateCloudGateway"))
        return CheckResult("palette.privateCloudGateway", CheckOutcome.OK,
                           f"gateway '{name}' is {gateway.uid} and Running", results={OVERLORD_UID: gateway.uid})

    def user_exists(self) -> CheckResult:
        spec = self.request.api_key
        assert spec is not None
        user = self._api_key_user()
        if user is None:
            return CheckResult.failed("palette.user", CheckOutcome.MISSING, PermanentStepError(
                "check", "user_not_found", f"No Palette user has the email '{spec.user}'; check apiKey.user.",
                field="apiKey.user"))
        return CheckResult("palette.user", CheckOutcome.OK, f"user {spec.user} is {user.uid}",
                           results={USER_UID: user.uid})

    def api_key_name_free(self) -> CheckResult:
        spec = self.request.api_key
        assert spec is not None
        keys = self._api_keys()
        clash = api_key_name_clash(self.request, self.clients, "check", keys)
        if clash is not None:
            return CheckResult.failed("palette.apiKey", CheckOutcome.CLASH, clash, Action.CLASH)
        return CheckResult("palette.apiKey", CheckOutcome.OK, f"API key name '{spec.name}' is free; a key would be "
                           "created and its value kept in Key Vault", Action.CREATE, found=Found(keys))

    def account_free_or_ours(self) -> CheckResult:
        request = self.request
        if request.palette.scope == "project" and self.project is None:
            return _skipped("palette.account", "a project-scoped account needs the project")
        found = self._named_account()
        try:
            existing = account_we_may_change("check", found, request)
        except PermanentStepError as clash:
            return CheckResult.failed("palette.account", CheckOutcome.CLASH, clash, Action.CLASH)
        if existing is None:
            return CheckResult("palette.account", CheckOutcome.OK,
                               f"no Azure account is named '{request.account_name}'; it would be created",
                               Action.CREATE, found=Found(None))
        return CheckResult("palette.account", CheckOutcome.OK,
                           f"account '{request.account_name}' ({existing.uid}) was made by this product for the "
                           "same app; it would be updated", Action.UPDATE, found=Found(existing))

    def ssh_key_free_or_same(self) -> CheckResult:
        spec = self.request.ssh_key
        assert spec is not None
        if self.project is None:
            return _skipped("palette.sshKey", "SSH keys live in the project")
        existing = _project_key(self._project_ssh_keys(self.project), spec.name)
        if existing is None:
            what = "generated and uploaded" if spec.generate else "uploaded"
            return CheckResult("palette.sshKey", CheckOutcome.OK,
                               f"no SSH key is named '{spec.name}' in the project; it would be {what}", Action.CREATE,
                               found=Found(None))
        same = (same_public_key(existing.public_key, spec.public_key) if spec.public_key is not None
                else self._kept_key_is(existing.public_key))
        if not same:
            return CheckResult.failed("palette.sshKey", CheckOutcome.CLASH, PermanentStepError(
                "check", "ssh_key_name_clash",
                f"Project '{self.request.palette.project}' already has a different SSH key named "
                f"'{spec.name}'; choose another sshKey.name.", field="sshKey.name"), Action.CLASH)
        return CheckResult("palette.sshKey", CheckOutcome.OK,
                           f"the project already holds this SSH key as '{spec.name}' ({existing.uid})", Action.REUSE,
                           found=Found(existing))

    def _kept_key_is(self, held: str) -> bool:
        """True when the newest generated SSH key this product keeps for the account under the
        request's key name is ``held`` (a re-run with a new requestId, or an onboarding again after
        an offboarding kept the Palette key and soft-deleted its private half)."""
        spec = self.request.ssh_key
        if spec is None or not spec.generate:
            return False
        store = self.clients.secrets
        name = credentials.secret_name(self.request.account_name, SecretKind.SSH_KEY)
        fingerprint = credentials.public_key_fingerprint(held)
        for version in store.list_versions(name):
            if version.tags.get(credentials.KEY_NAME_TAG) == spec.name:
                if credentials.PUBLIC_KEY_TAG in version.tags:
                    return version.tags[credentials.PUBLIC_KEY_TAG] == fingerprint
                pem, _ = store.get_secret(name, version.version)  # written before the tag existed
                return same_public_key(held, public_key_of(pem))
        deleted = store.get_deleted_secret(name)
        return (deleted is not None and deleted.tags.get(credentials.KEY_NAME_TAG) == spec.name
                and deleted.tags.get(credentials.PUBLIC_KEY_TAG) == fingerprint)

    def within_limits(self) -> CheckResult:
        """Palette's resource limits leave room for what this request would make (see the module
        notes: only what it would make counts). The limits are read afresh, as an admin may have
        changed them; the counts come from the lookups the other checks make, but for the cloud
        accounts of every cloud in the tenant (one call, made only when an account is to be made)."""
        from shared.concurrency import in_thread

        palette = self.clients.palette
        limits = in_thread(palette.get_resource_limits, name="onboarding-check")  # beside the lookups below
        rooms = [room for room in (self._account_room(), self._ssh_key_room(), self._api_key_room()) if room]
        if not rooms:
            limits.cancel()
            return CheckResult("palette.limits", CheckOutcome.OK, "the request makes nothing in Palette that a "
                               "resource limit counts (its account, and any key it names, exist already)")
        read = limits.result()
        unlisted = [room.kind for room in rooms if room.kind not in read]
        over: list[tuple[Room, int]] = []
        for room in rooms:
            limit: ResourceLimit | None = read.get(room.kind)
            if limit is not None and room.held + 1 > limit.limit:
                over.append((room, limit.limit))
        if over:
            first = over[0][0]
            return CheckResult.failed("palette.limits", CheckOutcome.NOT_READY, PermanentStepError(
                "check", LIMIT_REACHED, limit_problem(over, palette.tenant_uid()), field=first.field))
        within = "; ".join(f"{room.what}: {room.held} of {read[room.kind].limit} in {room.where}, {room.new} "
                           "would be one more" for room in rooms if room.kind in read)
        missing = f"; Palette lists no limit for {', '.join(unlisted)}" if unlisted else ""
        return CheckResult("palette.limits", CheckOutcome.OK, f"within Palette's resource limits: {within}{missing}"
                           if within else f"Palette lists no limit for {', '.join(unlisted)}")

    def _account_room(self) -> Room | None:
        """The account the request would make, unless one of its name exists (ours: updated;
        anybody else's: a clash, which fails the request on its own)."""
        request = self.request
        if request.palette.scope == "project" and self.project is None:
            return None
        if self._named_account() is not None:
            return None
        return Room("cloudaccount", "cloud accounts", self.clients.palette.count_cloud_accounts(),
                    "the tenant (every cloud, every scope)", f"account '{request.account_name}'", None)

    def _ssh_key_room(self) -> Room | None:
        """The SSH key the request would upload, unless the project holds one of that name. The
        project's keys are what one call can count; the limit is the tenant's, so keys of other
        scopes can still make Palette refuse the upload (the request then fails with this reason)."""
        spec = self.request.ssh_key
        project = self.project if spec is not None else None
        if spec is None or project is None:
            return None
        keys = self._project_ssh_keys(project)
        if _project_key(keys, spec.name) is not None:
            return None
        return Room("sshkey", "SSH keys", len(keys), f"project '{self.request.palette.project}'",
                    f"SSH key '{spec.name}'", "sshKey")

    def _api_key_room(self) -> Room | None:
        """The API key the request would create, unless this request made it already; Palette's
        limit on API keys is per user, so the user's keys are counted."""
        spec = self.request.api_key
        if spec is None:
            return None
        user = self._api_key_user()
        if user is None:
            return None
        keys = self._api_keys()
        if any(k.name == spec.name and credentials.made_by_request(k.annotations, self.request.request_id)
               for k in keys):
            return None
        held = sum(1 for k in keys if k.user_uid == user.uid)
        return Room("apiKey", "API keys", held, f"user {spec.user}", f"API key '{spec.name}'", "apiKey")

    # -- Key Vault --------------------------------------------------------------------------------

    def key_vault_name_usable(self, kind: SecretKind) -> CheckResult:
        """The secret this request writes can be written: not blocked by a deleted secret of that
        name (Key Vault refuses it with 409 until it is recovered or purged), and not somebody else's."""
        account = self.request.account_name
        check = f"keyVault.{kind.value}"
        store = self.clients.secrets
        name = credentials.secret_name(account, kind)
        listing = in_thread(lambda: store.list_versions(name), name="onboarding-check")  # beside the next
        blocked = deleted_secret_block(self.request, kind, store, step="check")
        if blocked is not None:
            return CheckResult.failed(check, CheckOutcome.CLASH, blocked, Action.CLASH)
        if self.request.recover_deleted_secrets and store.get_deleted_secret(name) is not None:
            return CheckResult(check, CheckOutcome.OK, f"Key Vault secret '{name}' was deleted by this product for "
                               f"account '{account}' (an offboarding); as recoverDeletedSecrets asks, it would be "
                               "recovered, its old versions kept as history, and a new version added", Action.RECOVER,
                               results={f"{RECOVER_PREFIX}{kind.value}": name})
        versions = listing.result()
        if versions and not credentials.is_secret_of(versions[0].tags, account, kind):
            return CheckResult.failed(check, CheckOutcome.CLASH, PermanentStepError(
                "check", "secret_name_clash",
                f"Key Vault secret '{name}' exists and was not written by this product for account "
                f"'{account}'; nothing was changed. Rename or remove that secret, or choose another "
                "accountName.", field=_KIND_FIELDS[kind]), Action.CLASH)
        if versions:
            return CheckResult(check, CheckOutcome.OK, f"Key Vault secret '{name}' is this product's for account "
                               f"'{account}'; a new version would be added", Action.UPDATE,
                               found=Found(versions))
        return CheckResult(check, CheckOutcome.OK, f"Key Vault secret '{name}' does not exist; it would be created",
                           Action.CREATE, found=Found([]))

    def key_vault_source_allowed(self, secret: KeyVaultSecret) -> CheckResult:
        """A Key Vault-sourced client secret exists, and is not one of the product's own secrets
        other than this account's client secret (another account's secret, an SSH key, an API key)."""
        account = self.request.account_name
        try:
            _, stored = self.clients.secrets.get_secret(secret.secret_name, secret.version)
        except ResourceNotFoundError:
            return CheckResult.failed("keyVault.source", CheckOutcome.MISSING, PermanentStepError(
                "check", "secret_not_found",
                f"Key Vault secret '{secret.secret_name}' was not found; check azure.secret.secretName "
                "(and version).", field="azure.secret.secretName"))
        tags = stored.tags
        if credentials.is_product_secret(tags) and not credentials.is_secret_of(
                tags, account, SecretKind.CLIENT_SECRET):
            return CheckResult.failed("keyVault.source", CheckOutcome.CLASH, PermanentStepError(
                "check", "secret_not_allowed",
                f"Key Vault secret '{secret.secret_name}' is one this product keeps for another purpose "
                f"({tags.get(credentials.KIND_TAG, 'unknown')} of account "
                f"'{tags.get(credentials.ACCOUNT_TAG, 'unknown')}'); it cannot be used as the client secret "
                f"of account '{account}'. Name a secret that holds this app's client secret.",
                field="azure.secret.secretName"))
        return CheckResult("keyVault.source", CheckOutcome.OK,
                           f"Key Vault secret '{secret.secret_name}' exists (version {stored.version}); Palette "
                           "validates its value in the validate step", Action.REUSE)

    def inline_secret(self) -> CheckResult:
        name = self.request.derived_names.client_secret
        return CheckResult("azure.secret", CheckOutcome.OK, "a submitted inline secret is kept in a Key Vault secret "
                           "of its own ('palette-staged-' and a digest of the requestId and the run) until the "
                           f"request passed its checks, then written to '{name}'; nothing was stored now",
                           Action.CREATE)

    def staged_secret_ours(self, secret: StagedSecret) -> CheckResult:
        """The staged inline secret is this request's own (the intake kept it for it)."""
        from shared.onboarding.staging import is_staged_for

        try:
            _, stored = self.clients.secrets.get_secret(secret.secret_name, secret.version)
        except ResourceNotFoundError:
            stored = None
        if stored is None or not is_staged_for(stored, self.request):
            return CheckResult.failed("azure.secret", CheckOutcome.MISSING, PermanentStepError(
                "check", "staged_secret_missing",
                f"The inline secret this request was submitted with is no longer kept in Key Vault secret "
                f"'{secret.secret_name}' (version {secret.version}), or was not kept for this request; submit "
                "the request again with its secret under a new requestId (the same body under this requestId only "
                "answers this failure).", field="azure.secret"))
        return CheckResult("azure.secret", CheckOutcome.OK, f"the submitted inline secret is kept for this request; "
                           f"it is written to '{self.request.derived_names.client_secret}' once the checks passed",
                           Action.CREATE)

    # -- Microsoft Graph ----------------------------------------------------------------------------

    def application_visible(self) -> CheckResult:
        """Graph has no dry run of ``addPassword``: reading the application is the evidence. Under
        ``Application.ReadWrite.OwnedBy`` an identity sees only the apps it owns, which are the
        apps it may add a password to."""
        client_id = self.request.azure.client_id
        graph = self.clients.graph
        if graph is None:
            return CheckResult.failed("graph.application", CheckOutcome.MISSING, PermanentStepError(
                "check", "graph_unavailable",
                "This deployment cannot reach Microsoft Graph for that tenant; use "
                "azure.secret.source = keyVault.", field="azure.secret.source"))
        try:
            application = graph.get_application(client_id)
        except ResourceNotFoundError:
            return CheckResult.failed("graph.application", CheckOutcome.MISSING, PermanentStepError(
                "check", "app_not_found",
                f"No app registration with application id {client_id} was found, or this "
                "app's identity is not one of its owners; check azure.clientId.", field="azure.clientId"))
        return CheckResult(
            "graph.application", CheckOutcome.OK,
            f"app registration {client_id} (object id {application.object_id}) is visible to this app's identity, "
            "which with Application.ReadWrite.OwnedBy sees only the apps it owns and may add passwords to; a "
            f"password '{self.request.derived_names.password_display_name}' would be added. Graph has no dry run: "
            "it was read, nothing was written.", Action.UPDATE, results={APP_OBJECT_ID: application.object_id})


    # -- Azure Resource Manager ---------------------------------------------------------------------

    def permissions_held(self) -> CheckResult:
        """The principal holds, at each scope, every action of the roles Palette publishes for the
        request's profile and placement (:mod:`shared.permissions.check`); with ``enforce`` false a
        shortfall is reported, not refused."""
        import json

        from shared.permissions.check import check_permissions

        spec = self.request.azure.permissions
        assert spec is not None
        client_id = self.request.azure.client_id
        reader, graph = self.clients.authorization, self.clients.graph
        if reader is None or graph is None:
            return CheckResult.failed("azure.permissions", CheckOutcome.MISSING, PermanentStepError(
                "check", "permissions_unreadable", "This deployment cannot read Azure role assignments; remove "
                "azure.permissions.", field="azure.permissions"))
        try:
            principal = graph.service_principal_id(client_id)
        except ResourceNotFoundError:
            return CheckResult.failed("azure.permissions", CheckOutcome.MISSING, PermanentStepError(
                "check", "service_principal_not_found",
                f"App {client_id} has no service principal this product's identity can read, so its role "
                "assignments cannot be checked: create it (az ad sp create --id <clientId>) and make the product's "
                "identity one of its owners, or remove azure.permissions.", field="azure.clientId"))
        report = check_permissions(spec.model_dump(mode="json", by_alias=True), principal, reader)
        results = {PERMISSIONS: json.dumps(report.as_data(), separators=(",", ":"))}
        scopes = len(report.findings)
        if report.ok:
            return CheckResult("azure.permissions", CheckOutcome.OK,
                               f"service principal {principal} holds every action Palette needs for "
                               f"{spec.profile.value} clusters ({spec.placement.value} placement) at {scopes} "
                               "scope(s)", results=results)
        if not spec.enforce:
            return CheckResult("azure.permissions", CheckOutcome.OK,
                               f"reported, not enforced (azure.permissions.enforce is false): {report.describe()}",
                               results=results)
        if len(report.unreadable) == scopes:  # nothing could be checked: say why, as the failure table words it
            return CheckResult.failed("azure.permissions", CheckOutcome.MISSING, PermanentStepError(
                "check", report.unreadable[0].unreadable_reason,
                f"The Azure permissions of service principal {principal} (app {client_id}) could not be checked; "
                f"nothing was made: {report.describe()}", field="azure.permissions.scopes"))
        return CheckResult.failed("azure.permissions", CheckOutcome.MISSING, PermanentStepError(
            "check", "permissions_missing",
            f"Service principal {principal} of app {client_id} lacks what Palette needs for "
            f"{spec.profile.value} clusters ({spec.placement.value} placement): {report.describe()}. Assign "
            "Palette's published roles there (or set azure.permissions.enforce to false); nothing was made.",
            field="azure.permissions"))


def _run_into(work: Callable[[], T], future: Future[T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(work())
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the check
        future.set_exception(exc)


def _project_key(keys: list[SshKey], name: str) -> SshKey | None:
    """The project's own key of that name (Palette annotates each key with its scope)."""
    return next((k for k in keys if k.name == name and k.scope == "project"), None)


def _skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, CheckOutcome.SKIPPED, f"not checked: {why}, which was not found")
