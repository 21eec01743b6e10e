"""Palette's tenant as a pure-Python backend: projects, users, gateways, Azure cloud accounts, SSH
keys, Azure backup locations and API keys, with the rules the onboarding depends on and no HTTP.

Scope is Palette's: ``project_uid=None`` is the tenant, anything else a project. Cloud accounts and
SSH keys belong to one scope, and their names are unique per scope (the same name may exist once in
the tenant and once in each project). A project sees its own cloud accounts and the tenant's; the
tenant sees only its own (but in the cross-cloud summary, every scope's); SSH keys and backup
locations (both user assets) are seen only in their own scope, and backup location names are
unique per scope too. A resource can be changed only from its own scope. API keys, users,
projects and gateways are tenant-wide.

Tenant resource limits (Palette's defaults, changed by ``PATCH .../resourceLimits``) are enforced
on create: cloud accounts and SSH keys counted over the whole tenant (every scope), API keys per
user they belong to. The admin seeds (``seed_azure_accounts``) are never refused by them: they stand
for what exists already, which may be more than a limit an admin lowered later; once seeded, those
objects count like any other.

The seed (tenant, projects ``Default`` and ``Team-A``, three users, gateways ``pcg-east`` Running and
``pcg-west`` Pending) gets fresh 24-hex uids, like Palette's, when the backend is made, and
:meth:`PaletteBackend.reset` restores exactly that seed, so uids stay stable for a process's life.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from devstack.palette.errors import (
    AlreadyExists,
    Forbidden,
    InvalidRequest,
    PaletteError,
    ResourceNotFound,
    invalid_field,
)
from devstack.palette.spec import is_rfc3339

CredentialValidator = Callable[[str, str, str, str], "str | None"]
"""``(azure_environment, tenant_id, client_id, client_secret)`` -> ``None`` if valid, else why not."""

T = TypeVar("T")

DEFAULT_AZURE_ENVIRONMENT = "AzurePublicCloud"
RUNNING = "Running"
MAX_LIMIT = 50
SECRET_MASK = "********"


@dataclass(frozen=True)
class LimitKind:
    """One tenant resource limit Palette keeps (``v1TenantResourceLimit``): its label, default and
    the most an admin may set."""

    label: str
    default: int
    max_limit: int


#: The kinds ``v1TenantResourceLimitsEntity`` names as supported, with Palette's defaults from its
#: "Default Palette Resource Limits" page (cloud accounts 200, SSH keys 300, API keys 20 per user,
#: ...). ``maxLimit`` is not documented: 10,000 (50,000 for clusters and edge hosts) is the range
#: Palette's Terraform provider accepts; the labels are the page's names. Guessed, as said.
RESOURCE_LIMITS: dict[str, LimitKind] = {
    "user": LimitKind("Users", 300, 10_000),
    "project": LimitKind("Projects", 50, 10_000),
    "apiKey": LimitKind("API Keys", 20, 10_000),
    "team": LimitKind("Teams", 100, 10_000),
    "role": LimitKind("Roles", 100, 10_000),
    "cloudaccount": LimitKind("Cloud Accounts", 200, 10_000),
    "clusterprofile": LimitKind("Cluster Profiles", 200, 10_000),
    "workspace": LimitKind("Workspaces", 50, 10_000),
    "registry": LimitKind("Registries", 50, 10_000),
    "privategateway": LimitKind("Private Gateways", 50, 10_000),
    "location": LimitKind("Backup Locations", 100, 10_000),
    "certificate": LimitKind("Certificates", 20, 10_000),
    "macro": LimitKind("Macros", 200, 10_000),
    "sshkey": LimitKind("SSH Keys", 300, 10_000),
    "alert": LimitKind("Alerts", 100, 10_000),
    "spectrocluster": LimitKind("Clusters", 10_000, 50_000),
    "edgehost": LimitKind("Edge Hosts", 200, 50_000),
}
#: The refusal of a create past a limit. Palette documents only that "you will receive an error
#: message"; the status (400: the request cannot be carried out as the tenant stands, and not a
#: 403, which clients read as their own key failing) and the code are the stand-in's choice.
LIMIT_EXCEEDED = "ResourceLimitExceeded"


def default_resource_limits() -> dict[str, int]:
    return {kind: spec.default for kind, spec in RESOURCE_LIMITS.items()}


def new_uid() -> str:
    """A Palette-style uid: 24 lower-case hex digits."""
    return secrets.token_hex(12)


def format_time(timestamp: float) -> str:
    """RFC 3339 with milliseconds and ``Z``, the form Palette's Go SDK emits."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """An RFC 3339 date-time as a POSIX timestamp (the spec checker has already vetted the form)."""
    normalised = text.replace("z", "Z").replace("t", "T")
    if normalised.endswith("Z"):
        normalised = normalised[:-1] + "+00:00"
    seconds = re.search(r":(\d{2})(?:\.\d+)?(?:[+-]|$)", normalised)
    if seconds and seconds.group(1) == "60":  # a leap second: Python cannot represent it
        normalised = normalised.replace(":60", ":59", 1)
    return dt.datetime.fromisoformat(normalised).timestamp()


def key_digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------------------------------- records


@dataclass
class Project:
    uid: str
    name: str
    created: float


@dataclass
class User:
    uid: str
    email: str
    first_name: str
    last_name: str
    roles: list[str]
    created: float

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass
class Overlord:
    """A private cloud gateway (Palette calls them overlords)."""

    uid: str
    name: str
    state: str
    cloud_type: str
    created: float


@dataclass
class AzureAccount:
    uid: str
    name: str
    project_uid: str | None
    spec: dict[str, Any]  # as sent, with defaults filled in; holds the client secret
    annotations: dict[str, str]  # as sent, without the server-set scope/projectUid
    labels: dict[str, str]
    created: float
    modified: float


@dataclass
class SshKey:
    uid: str
    name: str
    project_uid: str | None
    public_key: str
    annotations: dict[str, str]
    labels: dict[str, str]
    created: float
    modified: float


@dataclass
class ApiKey:
    uid: str
    name: str
    user_uid: str
    expiry: float
    active: bool
    digest: str  # sha256 of the value; the value itself is never kept
    annotations: dict[str, str]
    labels: dict[str, str]
    created: float
    modified: float


@dataclass
class AzureLocation:
    """An Azure backup location (``v1UserAssetsLocationAzure``): a storage container Palette writes
    cluster backups to, with the service principal it signs in as (``config.credentials``)."""

    uid: str
    name: str
    project_uid: str | None
    config: dict[str, Any]  # spec.config as sent, defaults filled in; holds the client secret
    is_default: bool
    annotations: dict[str, str]  # as sent, without the server-set scope/projectUid
    labels: dict[str, str]
    created: float
    modified: float

    @property
    def credentials(self) -> dict[str, Any]:
        value = self.config.get("credentials")
        return value if isinstance(value, dict) else {}


@dataclass
class Cluster:
    """A cluster, only as far as it uses a cloud account (the offboarding must not pull one away)."""

    uid: str
    name: str
    project_uid: str
    cloud_account_uid: str
    cloud_type: str
    state: str
    created: float


@dataclass
class _Seed:
    tenant_uid: str
    projects: list[tuple[str, str]]
    users: list[tuple[str, str, str, str, list[str]]]
    overlords: list[tuple[str, str, str]]
    created: float


@dataclass
class _Store:
    projects: dict[str, Project] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    overlords: dict[str, Overlord] = field(default_factory=dict)
    accounts: dict[str, AzureAccount] = field(default_factory=dict)
    ssh_keys: dict[str, SshKey] = field(default_factory=dict)
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    locations: dict[str, AzureLocation] = field(default_factory=dict)
    resource_limits: dict[str, int] = field(default_factory=default_resource_limits)


def scope_name(project_uid: str | None) -> str:
    return "tenant" if project_uid is None else "project"


def scope_annotations(project_uid: str | None) -> dict[str, str]:
    """What Palette adds to ``metadata.annotations`` of a scoped resource."""
    if project_uid is None:
        return {"scope": "tenant"}
    return {"scope": "project", "projectUid": project_uid}


# ---------------------------------------------------------------------------------------------- backend


class PaletteBackend:
    """One Palette tenant; every public method is thread-safe."""

    def __init__(self, *, admin_api_key: str, credential_validator: CredentialValidator | None = None,
                 clock: Callable[[], float] = time.time, org_name: str = "Example Org") -> None:
        if not admin_api_key:
            raise ValueError("admin_api_key must be a non-empty string.")
        self._admin_digest = key_digest(admin_api_key)
        self.credential_validator = credential_validator
        self.clock = clock
        # Palette documents no error for a duplicate name (only Terraform's mock answers 409).
        # Off, the stand-in takes duplicates as any undocumented server might, so tests can show
        # the product never relies on a 409 to keep names unique.
        self.unique_names = True
        self.org_name = org_name
        self._lock = threading.RLock()
        now = clock()
        self._seed = _Seed(
            tenant_uid=new_uid(),
            projects=[(new_uid(), "Default"), (new_uid(), "Team-A")],
            users=[
                (new_uid(), "admin@example.com", "Tenant", "Admin", ["Tenant Admin"]),
                (new_uid(), "alice.ops@example.com", "Alice", "Operator", ["Project Admin"]),
                (new_uid(), "bob.dev@example.com", "Bob", "Developer", ["Project Viewer"]),
            ],
            overlords=[(new_uid(), "pcg-east", RUNNING), (new_uid(), "pcg-west", "Pending")],
            created=now,
        )
        self._store = _Store()
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Drop everything made through the API and restore the seed (same uids)."""
        seed = self._seed
        store = _Store()
        for uid, name in seed.projects:
            store.projects[uid] = Project(uid, name, seed.created)
        for uid, email, first, last, roles in seed.users:
            store.users[uid] = User(uid, email, first, last, list(roles), seed.created)
        for uid, name, state in seed.overlords:
            store.overlords[uid] = Overlord(uid, name, state, "azure", seed.created)
        with self._lock:
            self._store = store
            self.unique_names = True

    @property
    def tenant_uid(self) -> str:
        return self._seed.tenant_uid

    @property
    def admin_user(self) -> User:
        """The user who owns the configured admin API key (the first seeded user)."""
        with self._lock:
            return self._store.users[self._seed.users[0][0]]

    # ------------------------------------------------------------------ auth

    def authenticate(self, api_key: str) -> User | None:
        """The user an ``ApiKey`` header value acts as, or ``None`` if it does not authenticate."""
        digest = key_digest(api_key)
        if hmac.compare_digest(digest, self._admin_digest):
            return self.admin_user
        with self._lock:
            now = self.clock()
            for key in self._store.api_keys.values():
                if hmac.compare_digest(digest, key.digest):
                    if not key.active or key.expiry <= now:
                        return None
                    return self._store.users.get(key.user_uid)
        return None

    # ------------------------------------------------------------------ projects, users, gateways

    def project(self, uid: str) -> Project | None:
        with self._lock:
            return self._store.projects.get(uid)

    def projects(self, name: str | None = None) -> list[Project]:
        with self._lock:
            return [p for p in self._store.projects.values() if name is None or p.name == name]

    def user(self, uid: str) -> User | None:
        with self._lock:
            return self._store.users.get(uid)

    def users(self) -> list[User]:
        with self._lock:
            return list(self._store.users.values())

    def user_summaries(self, filter_spec: dict[str, Any] | None,
                       sort_spec: list[dict[str, Any]] | None) -> list[User]:
        """``POST /v1/users/summary``: match ``emailId``/``name`` string filters, then sort."""
        users = self.users()
        filter_spec = filter_spec or {}
        for field_name, value_of in (("emailId", lambda u: u.email), ("name", lambda u: u.name)):
            condition = filter_spec.get(field_name)
            if isinstance(condition, dict):
                users = [u for u in users if string_filter_matches(value_of(u), condition)]
        for sort in reversed(sort_spec or []):
            key = sort.get("field")
            descending = sort.get("order") == "desc"
            if key == "name":
                users.sort(key=lambda u: u.name.lower(), reverse=descending)
            elif key == "creationTimestamp":
                users.sort(key=lambda u: u.created, reverse=descending)
        return users

    def overlord(self, uid: str) -> Overlord | None:
        with self._lock:
            return self._store.overlords.get(uid)

    def overlords(self, name: str | None = None) -> list[Overlord]:
        with self._lock:
            return [o for o in self._store.overlords.values() if name is None or o.name == name]

    def set_overlord(self, name: str, state: str, cloud_type: str = "azure") -> Overlord:
        """Admin: add a gateway or change its state (e.g. to make ``pcg-west`` Running)."""
        with self._lock:
            for existing in self._store.overlords.values():
                if existing.name == name:
                    existing.state = state
                    existing.cloud_type = cloud_type
                    return existing
            made = Overlord(new_uid(), name, state, cloud_type, self.clock())
            self._store.overlords[made.uid] = made
            return made

    # ------------------------------------------------------------------ resource limits

    def resource_limits(self) -> dict[str, int]:
        """The tenant's limit per kind (``GET /v1/tenants/{tenantUid}/resourceLimits``)."""
        with self._lock:
            return dict(self._store.resource_limits)

    def set_resource_limits(self, resources: list[Any]) -> None:
        """``PATCH``: change the limits of the kinds listed and leave the others; every item is
        checked before anything changes. A limit below what exists is taken (guessed: Palette does
        not say): what exists stays, and nothing more of that kind is made until it is raised."""
        changes: dict[str, int] = {}
        for index, item in enumerate(resources):
            path = f"resources[{index}]"
            entry = item if isinstance(item, dict) else {}
            kind, limit = entry.get("kind"), entry.get("limit")
            spec = RESOURCE_LIMITS.get(kind) if isinstance(kind, str) else None
            if spec is None or not isinstance(kind, str):
                raise invalid_field(f"{path}.kind", "supported", f"{path}.kind must be one of the kinds Palette "
                                    f"supports ({', '.join(RESOURCE_LIMITS)}); got {kind!r}.")
            if (isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit)
                    or limit != int(limit)):
                raise invalid_field(f"{path}.limit", "required", f"{path}.limit is required: a whole number.")
            if not 1 <= limit <= spec.max_limit:
                raise invalid_field(f"{path}.limit", "range", f"{path}.limit of '{kind}' must be between 1 and "
                                    f"{spec.max_limit}; got {int(limit)}.")
            if changes.get(kind, int(limit)) != int(limit):
                raise invalid_field(f"{path}.kind", "unique", f"'{kind}' is listed twice with different limits.")
            changes[kind] = int(limit)
        with self._lock:
            self._store.resource_limits.update(changes)

    def override_resource_limits(self, limits: dict[str, int]) -> None:
        """Admin: set limits as given, past any ``maxLimit`` too (a benchmark's tenant of more
        objects than Palette lets an admin allow); the caller has checked the kinds and numbers."""
        with self._lock:
            self._store.resource_limits.update(limits)

    def _refuse_past_limit(self, kind: str, count: int, holder: str) -> None:
        """Under the lock, before an object of ``kind`` is stored: ``count`` exist already."""
        limit = self._store.resource_limits[kind]
        if count >= limit:
            label = RESOURCE_LIMITS[kind].label
            raise PaletteError(400, LIMIT_EXCEEDED,
                               f"Resource limit reached: {holder} holds {count} {label} and the limit for '{kind}' is "
                               f"{limit}. A tenant admin can raise it (Tenant Settings > Resource Limits, or PATCH "
                               f"/v1/tenants/{self.tenant_uid}/resourceLimits).",
                               details={"kind": kind, "limit": limit, "count": count})

    # ------------------------------------------------------------------ Azure credentials

    def validate_azure_credentials(self, spec: dict[str, Any], *, field_prefix: str = "") -> None:
        """What ``POST /v1/clouds/azure/account/validate`` does: ask Azure whether they work.

        Empty ids or secret are refused before anything is asked; the reason from the validator
        is passed on (it never holds the secret: the validator is trusted not to echo it, and it
        is scrubbed here again in case).
        """
        _require_credential_fields(spec, field_prefix)
        environment = str(spec.get("azureEnvironment") or DEFAULT_AZURE_ENVIRONMENT)
        secret = spec["clientSecret"]
        if self.credential_validator is None:
            return
        reason = self.credential_validator(environment, spec["tenantId"], spec["clientId"], secret)
        if reason is not None:
            reason = str(reason).replace(secret, SECRET_MASK) if secret else str(reason)
            raise PaletteError(400, "CloudAccountValidationFailed",
                               f"Azure rejected the credentials of client '{spec['clientId']}' in tenant "
                               f"'{spec['tenantId']}': {reason}")

    def _check_gateway(self, annotations: dict[str, str]) -> None:
        gateway_uid = annotations.get("overlordUid", "")
        if not gateway_uid:
            return
        gateway = self.overlord(gateway_uid)
        if gateway is None:
            raise PaletteError(400, "PrivateCloudGatewayNotFound",
                               f"Private cloud gateway '{gateway_uid}' (metadata.annotations.overlordUid) "
                               "was not found.")
        if gateway.state != RUNNING:
            raise PaletteError(400, "PrivateCloudGatewayNotRunning",
                               f"Private cloud gateway '{gateway.name}' ({gateway_uid}) is not running "
                               f"(state {gateway.state}); accounts can be linked only to a Running gateway.")

    # ------------------------------------------------------------------ Azure cloud accounts

    def create_azure_account(self, project_uid: str | None, *, name: Any, spec: dict[str, Any],
                             annotations: dict[str, str], labels: dict[str, str]) -> AzureAccount:
        name = _require_name(name)
        annotations = _own_annotations(project_uid, annotations)
        stored_spec = _azure_spec_with_defaults(spec)
        _require_credential_fields(stored_spec, "spec.")
        with self._lock:
            self._check_account_name_free(project_uid, name, None)
            self._refuse_past_limit("cloudaccount", len(self._store.accounts), "the tenant")
        self._check_gateway(annotations)
        self.validate_azure_credentials(stored_spec, field_prefix="spec.")  # unlocked: it may call Entra
        now = self.clock()
        with self._lock:
            self._check_account_name_free(project_uid, name, None)
            self._refuse_past_limit("cloudaccount", len(self._store.accounts), "the tenant")
            account = AzureAccount(new_uid(), name, project_uid, stored_spec, annotations, dict(labels),
                                   now, now)
            self._store.accounts[account.uid] = account
            return account

    def list_azure_accounts(self, project_uid: str | None) -> list[AzureAccount]:
        """A project sees its own accounts and the tenant's; the tenant only its own."""
        with self._lock:
            return [a for a in self._store.accounts.values()
                    if a.project_uid is None or a.project_uid == project_uid]

    def summary_accounts(self, project_uid: str | None) -> list[AzureAccount]:
        """``GET /v1/cloudaccounts/summary``: in a project as :meth:`list_azure_accounts`; in the
        tenant every account of every scope (guessed: the tenant admin's view of all of them, and the
        count Palette's tenant-wide limit on cloud accounts is checked against)."""
        with self._lock:
            return [a for a in self._store.accounts.values()
                    if project_uid is None or a.project_uid is None or a.project_uid == project_uid]

    def seed_azure_accounts(self, *, name_prefix: str, count: int, project_uid: str | None = None
                            ) -> list[AzureAccount]:
        """Admin: ``count`` accounts named ``<name_prefix>-00001``..., for a random tenant and app,
        as another team would have registered them (no product annotations, no validation). What
        a large tenant looks like to a lookup by name."""
        _require_name(name_prefix)
        now = self.clock()
        made = []
        with self._lock:
            taken = {a.name for a in self._store.accounts.values() if a.project_uid == project_uid}
            for i in range(1, count + 1):
                name = f"{name_prefix}-{i:05d}"
                if name in taken and self.unique_names:
                    raise AlreadyExists("CloudAccountAlreadyExists", "Cloud account", name, scope_name(project_uid))
                spec = _azure_spec_with_defaults({"tenantId": str(uuid.uuid4()), "clientId": str(uuid.uuid4()),
                                                  "clientSecret": secrets.token_urlsafe(16)})
                account = AzureAccount(new_uid(), name, project_uid, spec, {}, {}, now, now)
                self._store.accounts[account.uid] = account
                made.append(account)
        return made

    def add_azure_accounts(self, project_uid: str | None, accounts: list[dict[str, Any]]) -> list[AzureAccount]:
        """Admin: cloud accounts as given (name, credentials, annotations, a uid or a fresh one), all
        or none, without asking Azure: accounts an earlier onboarding made, for a benchmark of a
        large inventory. Names must be free in the scope and uids unused; limits do not apply (as
        for :meth:`seed_azure_accounts`). One pass over what exists, whatever the number given."""
        now = self.clock()
        made = []
        with self._lock:
            taken = {a.name for a in self._store.accounts.values() if a.project_uid == project_uid}
            uids = set(self._store.accounts)
            for item in accounts:
                name = _require_name(item.get("name"))
                if name in taken and self.unique_names:
                    raise AlreadyExists("CloudAccountAlreadyExists", "Cloud account", name, scope_name(project_uid))
                uid = item.get("uid") or new_uid()
                if not isinstance(uid, str) or not re.fullmatch(r"[0-9a-f]{24}", uid) or uid in uids:
                    raise InvalidRequest(f"uid {uid!r} of account {name!r} is not 24 hex digits or is taken.")
                spec = _azure_spec_with_defaults({key: item[key] for key in ("tenantId", "clientId", "clientSecret")
                                                  if key in item})
                _require_credential_fields(spec, "")
                annotations = _own_annotations(project_uid, dict(item.get("annotations") or {}))
                made.append(AzureAccount(uid, name, project_uid, spec, annotations, dict(item.get("labels") or {}),
                                         now, now))
                taken.add(name)
                uids.add(uid)
            self._store.accounts.update((account.uid, account) for account in made)
        return made

    def get_azure_account(self, project_uid: str | None, uid: str) -> AzureAccount:
        with self._lock:
            account = self._store.accounts.get(uid)
            if account is None or not (account.project_uid is None or account.project_uid == project_uid):
                raise ResourceNotFound("Azure cloud account", uid)
            return account

    def update_azure_account(self, project_uid: str | None, uid: str, *, name: Any, spec: dict[str, Any],
                             annotations: dict[str, str], labels: dict[str, str]) -> AzureAccount:
        """PUT: replace name, spec, annotations and labels; credentials are validated again."""
        name = _require_name(name)
        annotations = _own_annotations(project_uid, annotations)
        stored_spec = _azure_spec_with_defaults(spec)
        _require_credential_fields(stored_spec, "spec.")
        with self._lock:
            self._owned_account(project_uid, uid)
            self._check_account_name_free(project_uid, name, uid)
        self._check_gateway(annotations)
        self.validate_azure_credentials(stored_spec, field_prefix="spec.")
        with self._lock:
            account = self._owned_account(project_uid, uid)
            self._check_account_name_free(project_uid, name, uid)
            account.name, account.spec = name, stored_spec
            account.annotations, account.labels = annotations, dict(labels)
            account.modified = self.clock()
            return account

    def delete_azure_account(self, project_uid: str | None, uid: str) -> None:
        with self._lock:
            self._owned_account(project_uid, uid)
            users = [c.name for c in self._store.clusters.values() if c.cloud_account_uid == uid]
            if users:
                # Stricter than what Palette documents (nothing): an account in use is not deleted.
                raise PaletteError(409, "CloudAccountInUse",
                                   f"Cloud account '{uid}' is used by clusters: {', '.join(sorted(users))}.")
            del self._store.accounts[uid]

    # ------------------------------------------------------------------ clusters

    def add_cluster(self, *, name: str, cloud_account_uid: str, project_uid: str | None = None,
                    state: str = RUNNING, cloud_type: str = "azure") -> Cluster:
        """Admin: a cluster that uses a cloud account (in the account's project, or ``Default``)."""
        with self._lock:
            account = self._store.accounts.get(cloud_account_uid)
            if account is None:
                raise ResourceNotFound("Cloud account", cloud_account_uid)
            project = project_uid or account.project_uid or self._seed.projects[0][0]
            if project not in self._store.projects:
                raise ResourceNotFound("Project", project)
            cluster = Cluster(uid=new_uid(), name=name, project_uid=project, cloud_account_uid=cloud_account_uid,
                              cloud_type=cloud_type, state=state, created=self.clock())
            self._store.clusters[cluster.uid] = cluster
            return cluster

    def remove_cluster(self, uid: str) -> None:
        """Admin: the cluster is gone (deleted, or moved to another account)."""
        with self._lock:
            if self._store.clusters.pop(uid, None) is None:
                raise ResourceNotFound("Cluster", uid)

    def clusters(self, project_uid: str | None) -> list[Cluster]:
        """Clusters seen from a scope: a project sees its own; the tenant sees every project's."""
        with self._lock:
            return sorted((c for c in self._store.clusters.values()
                           if project_uid is None or c.project_uid == project_uid), key=lambda c: c.created)

    def _owned_account(self, project_uid: str | None, uid: str) -> AzureAccount:
        account = self.get_azure_account(project_uid, uid)
        if account.project_uid != project_uid:
            raise Forbidden(f"Azure cloud account '{uid}' belongs to the tenant scope; change it without "
                            "a ProjectUid header.")
        return account

    def _check_account_name_free(self, project_uid: str | None, name: str, except_uid: str | None) -> None:
        if not self.unique_names:
            return
        for other in self._store.accounts.values():
            if other.project_uid == project_uid and other.name == name and other.uid != except_uid:
                raise AlreadyExists("CloudAccountAlreadyExists", "Cloud account", name,
                                    scope_name(project_uid))

    # ------------------------------------------------------------------ SSH keys

    def create_ssh_key(self, project_uid: str | None, *, name: Any, public_key: Any,
                       annotations: dict[str, str], labels: dict[str, str]) -> SshKey:
        name = _require_name(name)
        public_key = _require_public_key(public_key)
        annotations = _own_annotations(project_uid, annotations)
        now = self.clock()
        with self._lock:
            self._check_ssh_name_free(project_uid, name, None)
            self._refuse_past_limit("sshkey", len(self._store.ssh_keys), "the tenant")
            key = SshKey(new_uid(), name, project_uid, public_key, annotations, dict(labels), now, now)
            self._store.ssh_keys[key.uid] = key
            return key

    def list_ssh_keys(self, project_uid: str | None) -> list[SshKey]:
        with self._lock:
            return [k for k in self._store.ssh_keys.values() if k.project_uid == project_uid]

    def get_ssh_key(self, project_uid: str | None, uid: str) -> SshKey:
        with self._lock:
            key = self._store.ssh_keys.get(uid)
            if key is None or key.project_uid != project_uid:
                raise ResourceNotFound("SSH key", uid)
            return key

    def update_ssh_key(self, project_uid: str | None, uid: str, *, name: Any, public_key: Any,
                       annotations: dict[str, str], labels: dict[str, str]) -> SshKey:
        name = _require_name(name)
        public_key = _require_public_key(public_key)
        annotations = _own_annotations(project_uid, annotations)
        with self._lock:
            key = self.get_ssh_key(project_uid, uid)
            self._check_ssh_name_free(project_uid, name, uid)
            key.name, key.public_key = name, public_key
            key.annotations, key.labels = annotations, dict(labels)
            key.modified = self.clock()
            return key

    def delete_ssh_key(self, project_uid: str | None, uid: str) -> None:
        with self._lock:
            self.get_ssh_key(project_uid, uid)
            del self._store.ssh_keys[uid]

    def _check_ssh_name_free(self, project_uid: str | None, name: str, except_uid: str | None) -> None:
        if not self.unique_names:
            return
        for other in self._store.ssh_keys.values():
            if other.project_uid == project_uid and other.name == name and other.uid != except_uid:
                raise AlreadyExists("SshKeyAlreadyExists", "SSH key", name, scope_name(project_uid))

    # ------------------------------------------------------------------ backup locations

    def create_azure_location(self, project_uid: str | None, *, name: Any, spec: dict[str, Any],
                              annotations: dict[str, str], labels: dict[str, str]) -> AzureLocation:
        """``POST /v1/users/assets/locations/azure``: stored as sent, credentials not validated.

        Palette's console and Terraform validate the credentials first with a separate call
        (``POST /v1/clouds/azure/account/validate``); nothing says the create does it again.
        """
        name = _require_name(name)
        annotations = _own_annotations(project_uid, annotations)
        config, is_default = _azure_location_spec(spec)
        now = self.clock()
        with self._lock:
            if project_uid is not None and project_uid not in self._store.projects:
                raise ResourceNotFound("Project", project_uid)
            self._check_location_name_free(project_uid, name, None)
            location = AzureLocation(new_uid(), name, project_uid, config, is_default, annotations, dict(labels),
                                     now, now)
            self._store.locations[location.uid] = location
            return location

    def list_locations(self, project_uid: str | None) -> list[AzureLocation]:
        """Backup locations of exactly this scope (user assets, like SSH keys), oldest first."""
        with self._lock:
            return [loc for loc in self._store.locations.values() if loc.project_uid == project_uid]

    def get_azure_location(self, project_uid: str | None, uid: str) -> AzureLocation:
        with self._lock:
            location = self._store.locations.get(uid)
            if location is None or location.project_uid != project_uid:
                raise ResourceNotFound("Azure backup location", uid)
            return location

    def update_azure_location(self, project_uid: str | None, uid: str, *, name: Any, spec: dict[str, Any],
                              annotations: dict[str, str], labels: dict[str, str]) -> AzureLocation:
        """PUT: replace name, spec, annotations and labels (credentials not validated, as on create)."""
        name = _require_name(name)
        annotations = _own_annotations(project_uid, annotations)
        config, is_default = _azure_location_spec(spec)
        with self._lock:
            location = self.get_azure_location(project_uid, uid)
            self._check_location_name_free(project_uid, name, uid)
            location.name, location.config, location.is_default = name, config, is_default
            location.annotations, location.labels = annotations, dict(labels)
            location.modified = self.clock()
            return location

    def delete_location(self, project_uid: str | None, uid: str) -> None:
        """``DELETE /v1/users/assets/locations/{uid}`` (any location type)."""
        with self._lock:
            self.get_azure_location(project_uid, uid)
            del self._store.locations[uid]

    def _check_location_name_free(self, project_uid: str | None, name: str, except_uid: str | None) -> None:
        if not self.unique_names:
            return
        for other in self._store.locations.values():
            if other.project_uid == project_uid and other.name == name and other.uid != except_uid:
                raise AlreadyExists("BackupLocationAlreadyExists", "Backup location", name, scope_name(project_uid))

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, caller: User, *, name: Any, user_uid: Any, expiry: Any,
                       annotations: dict[str, str], labels: dict[str, str]) -> tuple[ApiKey, str]:
        """Make a key; the value is returned once and only its digest is kept.

        ``spec.userUid`` defaults to the caller; ``spec.expiry`` is required (the console always
        sets one) and must be in the future.
        """
        name = _require_name(name)
        owner_uid = caller.uid if user_uid in (None, "") else str(user_uid)
        expires = self._require_expiry(expiry)
        with self._lock:
            if owner_uid not in self._store.users:
                raise PaletteError(400, "UserNotFound",
                                   f"spec.userUid '{owner_uid}' names no user of this tenant.")
            self._check_api_key_name_free(name, None)
            self._refuse_past_limit("apiKey", sum(1 for k in self._store.api_keys.values() if k.user_uid == owner_uid),
                                    f"user '{owner_uid}'")
            value = secrets.token_urlsafe(32)
            now = self.clock()
            key = ApiKey(new_uid(), name, owner_uid, expires, True, key_digest(value), dict(annotations),
                         dict(labels), now, now)
            self._store.api_keys[key.uid] = key
            return key, value

    def list_api_keys(self) -> list[ApiKey]:
        with self._lock:
            return list(self._store.api_keys.values())

    def get_api_key(self, uid: str) -> ApiKey:
        with self._lock:
            key = self._store.api_keys.get(uid)
            if key is None:
                raise ResourceNotFound("API key", uid)
            return key

    def update_api_key(self, uid: str, *, name: Any, expiry: Any, annotations: dict[str, str],
                       labels: dict[str, str]) -> ApiKey:
        name = _require_name(name)
        expires = self._require_expiry(expiry)
        with self._lock:
            key = self.get_api_key(uid)
            self._check_api_key_name_free(name, uid)
            key.name, key.expiry = name, expires
            key.annotations, key.labels = dict(annotations), dict(labels)
            key.modified = self.clock()
            return key

    def set_api_key_active(self, uid: str, active: Any) -> ApiKey:
        if not isinstance(active, bool):
            raise invalid_field("isActive", "required", "isActive is required (true or false).")
        with self._lock:
            key = self.get_api_key(uid)
            key.active = active
            key.modified = self.clock()
            return key

    def delete_api_key(self, uid: str) -> None:
        with self._lock:
            self.get_api_key(uid)
            del self._store.api_keys[uid]

    def _require_expiry(self, expiry: Any) -> float:
        if not isinstance(expiry, str) or not expiry:
            raise invalid_field("spec.expiry", "required", "spec.expiry is required (an RFC 3339 date-time).")
        if not is_rfc3339(expiry):
            raise invalid_field("spec.expiry", "format", "spec.expiry must be an RFC 3339 date-time.")
        expires = parse_time(expiry)
        if expires <= self.clock():
            raise invalid_field("spec.expiry", "future", "spec.expiry must be in the future.")
        return expires

    def _check_api_key_name_free(self, name: str, except_uid: str | None) -> None:
        if not self.unique_names:
            return
        for other in self._store.api_keys.values():
            if other.name == name and other.uid != except_uid:
                raise AlreadyExists("ApiKeyAlreadyExists", "API key", name, "tenant")

    # ------------------------------------------------------------------ admin view

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready, with the client secrets masked (a SHA-256 lets tests compare one
        with what Key Vault holds) and no API key values."""
        with self._lock:
            store = self._store
            return {
                "tenantUid": self.tenant_uid,
                "orgName": self.org_name,
                "resourceLimits": dict(store.resource_limits),
                "projects": [{"uid": p.uid, "name": p.name} for p in store.projects.values()],
                "users": [{"uid": u.uid, "name": u.name, "emailId": u.email, "roles": u.roles,
                           "ownsAdminApiKey": u.uid == self._seed.users[0][0]}
                          for u in store.users.values()],
                "overlords": [{"uid": o.uid, "name": o.name, "state": o.state, "cloudType": o.cloud_type}
                              for o in store.overlords.values()],
                "cloudAccounts": [{"uid": a.uid, "name": a.name, "scope": scope_name(a.project_uid),
                                   "projectUid": a.project_uid, "annotations": a.annotations,
                                   "spec": {**a.spec, "clientSecret": SECRET_MASK},
                                   "clientSecretSha256": key_digest(str(a.spec.get("clientSecret", "")))}
                                  for a in store.accounts.values()],
                "sshKeys": [{"uid": k.uid, "name": k.name, "scope": scope_name(k.project_uid),
                             "projectUid": k.project_uid, "publicKey": k.public_key}
                            for k in store.ssh_keys.values()],
                "apiKeys": [{"uid": k.uid, "name": k.name, "userUid": k.user_uid,
                             "expiry": format_time(k.expiry), "isActive": k.active,
                             "annotations": k.annotations}
                            for k in store.api_keys.values()],
                "backupLocations": [{"uid": loc.uid, "name": loc.name, "type": "azure",
                                     "scope": scope_name(loc.project_uid), "projectUid": loc.project_uid,
                                     "annotations": loc.annotations, "labels": loc.labels,
                                     "isDefault": loc.is_default,
                                     "config": {**loc.config, "credentials": masked_credentials(loc.credentials)},
                                     "clientSecretSha256": key_digest(str(loc.credentials.get("clientSecret", "")))}
                                    for loc in store.locations.values()],
                "clusters": [{"uid": c.uid, "name": c.name, "projectUid": c.project_uid,
                              "cloudAccountUid": c.cloud_account_uid, "state": c.state}
                             for c in store.clusters.values()],
            }


# ---------------------------------------------------------------------------------------------- rules


def _require_name(name: Any) -> str:
    # Not required by the schema, but by Palette in practice (console and Terraform require it).
    if not isinstance(name, str) or not name.strip():
        raise invalid_field("metadata.name", "required", "metadata.name is required and must not be blank.")
    return name


def _own_annotations(project_uid: str | None, annotations: dict[str, str]) -> dict[str, str]:
    """The client's annotations without ``scope``/``projectUid``, which the server derives.

    Terraform sends ``annotations.scope``; a value that contradicts the ``ProjectUid`` header is a
    client bug (the resource would land in the other scope), so it is refused rather than ignored.
    """
    expected = scope_annotations(project_uid)
    sent_scope = annotations.get("scope")
    if sent_scope is not None and sent_scope != expected["scope"]:
        header = "no ProjectUid header" if project_uid is None else f"ProjectUid {project_uid}"
        raise invalid_field("metadata.annotations.scope", "scope",
                            f"metadata.annotations.scope is '{sent_scope}' but the request has {header} "
                            f"({expected['scope']} scope); the scope comes from the ProjectUid header.")
    sent_project = annotations.get("projectUid")
    if sent_project is not None and sent_project != expected.get("projectUid"):
        raise invalid_field("metadata.annotations.projectUid", "scope",
                            "metadata.annotations.projectUid does not match the ProjectUid header.")
    return {k: v for k, v in annotations.items() if k not in ("scope", "projectUid")}


def _require_credential_fields(spec: dict[str, Any], field_prefix: str) -> None:
    # The schema only requires the keys; an empty value cannot be a credential.
    for name in ("tenantId", "clientId", "clientSecret"):
        value = spec.get(name)
        if not isinstance(value, str) or not value.strip():
            raise invalid_field(f"{field_prefix}{name}", "minLength", f"{field_prefix}{name} must not be empty.")


def _azure_spec_with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    stored = dict(spec)
    stored.setdefault("azureEnvironment", DEFAULT_AZURE_ENVIRONMENT)
    stored.setdefault("tenantName", "")
    settings = dict(stored.get("settings") or {})
    settings.setdefault("disablePropertiesRequest", False)
    stored["settings"] = settings
    return stored


AZURE_LOCATION_TYPE = "azure"
DEFAULT_CLIENT_CLOUD = "public"


def _azure_location_spec(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``spec.config`` with defaults filled in, and ``spec.isDefault``.

    The spec checker has already enforced ``config`` and its required keys. ``spec.type`` is
    described as "Azure location type [azure]"; another value on the Azure route is a client bug
    (the location would be read as another kind), so it is refused rather than stored.
    """
    kind = spec.get("type")
    if kind not in (None, "", AZURE_LOCATION_TYPE):
        raise invalid_field("spec.type", "enum", f"spec.type of an Azure location must be "
                                                 f"'{AZURE_LOCATION_TYPE}' (or left out); got {kind!r}.")
    config = dict(spec.get("config") or {})
    credentials = dict(config.get("credentials") or {})
    credentials.setdefault("clientCloud", DEFAULT_CLIENT_CLOUD)
    config["credentials"] = credentials
    return config, spec.get("isDefault") is True


def masked_credentials(credentials: dict[str, Any]) -> dict[str, Any]:
    """The credentials with a stored client secret replaced by the mask (as Palette answers)."""
    masked = dict(credentials)
    if masked.get("clientSecret"):
        masked["clientSecret"] = SECRET_MASK
    return masked


_SSH_KEY_TYPES = {
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}


def _require_public_key(public_key: Any) -> str:
    """An OpenSSH ``authorized_keys`` line whose blob decodes and names the same key type."""
    path = "spec.publicKey"
    if not isinstance(public_key, str) or not public_key.strip():
        raise invalid_field(path, "required", "spec.publicKey is required (an OpenSSH public key line).")
    parts = public_key.strip().split(None, 2)
    problem = None
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        problem = "must start with a key type such as ssh-rsa followed by the base64 key"
    else:
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            blob = b""
        length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
        if length <= 0 or blob[4:4 + length] != parts[0].encode():
            problem = "has a key blob that is not valid base64 for its key type"
    if problem is not None:
        raise invalid_field(path, "format", f"spec.publicKey is not an OpenSSH public key: it {problem}.")
    return public_key.strip()


def string_filter_matches(value: str, condition: dict[str, Any]) -> bool:
    """Palette's ``v1FilterString``: ``eq``/``ne``/``contains``/``beginsWith``, ``ignoreCase`` (default true)."""
    ignore_case = condition.get("ignoreCase", True) is not False

    def norm(text: str) -> str:
        return text.lower() if ignore_case else text

    subject = norm(value)
    checks = (
        ("eq", lambda wanted: subject == wanted),
        ("ne", lambda wanted: subject != wanted),
        ("contains", lambda wanted: wanted in subject),
        ("beginsWith", lambda wanted: subject.startswith(wanted)),
    )
    for key, test in checks:
        wanted = condition.get(key)
        if isinstance(wanted, str) and not test(norm(wanted)):
            return False
    return True


# ---------------------------------------------------------------------------------------------- listing


def _value_at(item: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(item, dict):
            return None
        item = item.get(part)
    return item


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


_FIELD_AHEAD = r"(?=[A-Za-z_][A-Za-z0-9_.]*=)"


def apply_filters(items: list[dict[str, Any]], filters: str | None) -> list[dict[str, Any]]:
    """Palette's ``filters`` query (``metadata.name=aANDspec.x=b``): equality terms joined by AND.

    OR is not supported by the stand-in (501) rather than answered wrongly.
    """
    if not filters:
        return items
    if re.search(r"OR" + _FIELD_AHEAD, filters):
        raise PaletteError(501, "NotImplemented", "The stand-in supports only AND in filters.")
    terms = []
    for term in re.split(r"AND" + _FIELD_AHEAD, filters):
        field_path, sep, wanted = term.partition("=")
        if not sep or not field_path:
            raise InvalidRequest(f"Query parameter filters has a term without field=value: {term[:60]!r}.",
                                 [{"in": "query", "path": "filters", "rule": "syntax",
                                   "message": "Each filter term must be field=value."}])
        terms.append((field_path, wanted))
    return [item for item in items
            if all(_as_text(_value_at(item, path)) == wanted for path, wanted in terms)]


def filtered_name(filters: str | None) -> str | None:
    """The value of a ``metadata.name=`` term of ``filters`` (AND-joined), if it has one: lets a
    list skip building the wire form of objects that cannot match. :func:`apply_filters` still
    decides, so the answer is the same either way."""
    if not filters or re.search(r"OR" + _FIELD_AHEAD, filters):
        return None
    for term in re.split(r"AND" + _FIELD_AHEAD, filters):
        field_path, sep, wanted = term.partition("=")
        if sep and field_path == "metadata.name":
            return wanted
    return None


def apply_order(items: list[dict[str, Any]], order_by: str | None) -> list[dict[str, Any]]:
    """Palette's ``orderBy`` query (``metadata.name=1,metadata.uid=-1``); stable."""
    if not order_by:
        return items
    keys = []
    for term in order_by.split(","):
        field_path, _, direction = term.partition("=")
        direction = direction or "1"
        if not field_path or direction not in ("1", "-1"):
            raise InvalidRequest(f"Query parameter orderBy has a bad term {term[:60]!r}; use field=1 or "
                                 "field=-1.",
                                 [{"in": "query", "path": "orderBy", "rule": "syntax",
                                   "message": "Each orderBy term must be field=1 or field=-1."}])
        keys.append((field_path, direction == "-1"))
    ordered = list(items)
    for field_path, descending in reversed(keys):

        def sort_key(item: dict[str, Any], path: str = field_path) -> str:
            return _as_text(_value_at(item, path))

        ordered.sort(key=sort_key, reverse=descending)
    return ordered


def _encode_token(listing: str, offset: int) -> str:
    raw = json.dumps({"l": listing, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, listing: str) -> int:
    bad = InvalidRequest("Query parameter continue is not a token this list returned.",
                         [{"in": "query", "path": "continue", "rule": "token",
                           "message": "Use listmeta.continue from the previous page of the same list."}])
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise bad from None
    if (not isinstance(data, dict) or data.get("l") != listing or not isinstance(data.get("o"), int)
            or isinstance(data.get("o"), bool) or data["o"] < 0):
        raise bad
    return int(data["o"])


def paginate(items: list[T], *, listing: str, limit: Any, offset: Any, token: Any
             ) -> tuple[list[T], dict[str, Any]]:
    """One page and its ``listmeta``; the ``continue`` token is ``""`` on the last page.

    ``limit`` defaults to 50 and may not exceed it (the spec: "Default and maximum value of the
    limit is 50"); ``limit=0``, which the Go SDK sends, means the default, not "everything".
    ``listmeta.offset`` is the start of the next page, as the spec describes it. ``continue``
    wins over ``offset``; a token from another list (or scope, or filter) is refused.
    """
    if limit is None or limit == 0:
        limit = MAX_LIMIT
    if not isinstance(limit, int) or limit < 0 or limit > MAX_LIMIT:
        raise InvalidRequest(f"Query parameter limit must be between 0 and {MAX_LIMIT}; got {limit}.",
                             [{"in": "query", "path": "limit", "rule": "maximum",
                               "message": f"limit must be at most {MAX_LIMIT} (the spec: default and "
                                          f"maximum value of the limit is {MAX_LIMIT})."}])
    if token:
        start = _decode_token(str(token), listing)
    else:
        start = offset or 0
        if not isinstance(start, int) or start < 0:
            raise InvalidRequest(f"Query parameter offset must not be negative; got {start}.",
                                 [{"in": "query", "path": "offset", "rule": "minimum",
                                   "message": "offset must be 0 or more."}])
    page = items[start:start + limit]
    following = start + len(page)
    more = following < len(items)
    listmeta = {"continue": _encode_token(listing, following) if more else "", "count": len(items),
                "limit": limit, "offset": following}
    return page, listmeta
