"""A small client for the Palette REST calls the onboarding needs (see palette-api.md).

Scope: Palette picks tenant or project scope from the ``ProjectUid`` header (absent: tenant).
Every method that can work in either scope takes ``project_uid``; API keys and users are always
tenant-scoped, so those methods never send the header, and so are the tenant's resource limits
(read by the tenant's uid, which the client asks for once: it never changes for a key).

Rate limits: Palette allows about 10 requests/s per source IP and resource prefix (``/v1/users``,
``/v1/cloudaccounts``...), burst 5, then answers 429. The client keeps a pace per prefix: its own
token bucket by default (8/s, burst 5), or the pace it is given; the app gives it the schedule all
its instances share (:class:`~shared.state.pace.SharedPace`), so a burst of onboardings is paced
instead of bouncing off 429s however many instances run; 429s that still happen (other tools)
are retried by :class:`~shared.clients.http.JsonHttpClient`.

Names are looked up with the list endpoints' server-side ``filters`` (``metadata.name=<name>``), so
a lookup costs one call however many accounts or keys the tenant holds; what comes back is matched
again here (exact name, scope), so a server that filters loosely, or not at all, still gives the
right answer. "Create or update by name" is the caller's job, and a create whose response was lost
is never repeated here (see ``http.py``).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from azure.core.exceptions import DecodeError, ResourceNotFoundError
from azure.core.paging import ItemPaged
from pydantic import SecretStr

from shared.clients.http import (
    JsonHttpClient,
    Pace,
    RateLimiter,
    RetryPolicy,
    format_timestamp,
    parse_timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from datetime import datetime

    import requests

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``v1AzureCloudAccount.azureEnvironment`` values accepted by the published spec.
AZURE_ENVIRONMENTS = frozenset({
    "AzureChinaCloud", "AzurePublicCloud", "AzureUSGovernment", "AzureUSGovernmentCloud",
    "AzureUSSecretCloud",
})
#: Palette's page size: both the default and the maximum of ``limit``.
PAGE_SIZE = 50

SCOPE_TENANT = "tenant"
SCOPE_PROJECT = "project"


@dataclass(frozen=True)
class Project:
    uid: str
    name: str


@dataclass(frozen=True)
class Overlord:
    """A Private Cloud Gateway (PCG); Palette only accepts one in state ``Running``."""

    uid: str
    name: str
    state: str | None

    @property
    def is_running(self) -> bool:
        return self.state == "Running"


@dataclass(frozen=True)
class User:
    uid: str
    name: str
    email: str
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class AzureCredentials:
    """The ``spec`` of an Azure cloud account: what Palette validates and stores.

    Keyword-only so a tenant id and a client id (both GUIDs) cannot be swapped by position. The
    secret is a :class:`SecretStr`, so ``repr`` and logs of this object show ``**********``.
    """

    tenant_id: str
    client_id: str
    client_secret: SecretStr
    environment: str = "AzurePublicCloud"
    tenant_name: str | None = None
    disable_properties: bool = False
    tls_cert: str | None = None

    def __post_init__(self) -> None:
        if self.environment not in AZURE_ENVIRONMENTS:
            raise ValueError(f"environment must be one of {', '.join(sorted(AZURE_ENVIRONMENTS))}; "
                             f"got {self.environment!r}.")
        if not isinstance(self.client_secret, SecretStr):
            raise TypeError("client_secret must be a pydantic SecretStr, never a plain string.")

    def to_spec(self) -> dict[str, Any]:
        """The ``v1AzureCloudAccount`` body; the only place the secret value is unwrapped."""
        spec: dict[str, Any] = {
            "tenantId": self.tenant_id,
            "clientId": self.client_id,
            "clientSecret": self.client_secret.get_secret_value(),
            "azureEnvironment": self.environment,
            "settings": {"disablePropertiesRequest": self.disable_properties},
        }
        if self.tenant_name is not None:
            spec["tenantName"] = self.tenant_name
        if self.tls_cert is not None:
            spec["tls"] = {"cert": self.tls_cert}
        return spec


@dataclass(frozen=True)
class AzureAccount:
    """An Azure cloud account as Palette lists it. The client secret is never read back."""

    uid: str
    name: str
    scope: str
    tenant_id: str | None
    client_id: str | None
    environment: str | None
    tenant_name: str | None
    disable_properties: bool
    overlord_uid: str | None
    state: str | None
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)
    created: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AzureBackupLocation:
    """An Azure backup location (``/v1/users/assets/locations/azure``) as Palette returns it: the
    storage container Palette writes cluster backups to and the service principal it signs in as.

    Every field of the location but the client secret, which Palette answers masked and this class
    never holds; :meth:`PaletteClient.update_azure_backup_location` writes these fields back as
    they are, with new credentials. ``uid`` comes from the list (the location's own body has none).
    """

    uid: str
    name: str
    scope: str
    tenant_id: str | None
    client_id: str | None
    subscription_id: str | None
    client_cloud: str | None
    resource_group: str | None
    storage_name: str | None
    container_name: str | None
    sku: str | None
    is_default: bool
    location_type: str | None
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SshKey:
    uid: str
    name: str
    public_key: str
    scope: str
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)
    created: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ApiKey:
    """An API key's metadata. Palette never returns the key value after creation."""

    uid: str
    name: str
    user_uid: str | None
    expiry: datetime | None
    is_active: bool | None
    description: str | None
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)
    created: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ResourceLimit:
    """One of the tenant's resource limits (``v1TenantResourceLimit``): at most ``limit`` objects
    of ``kind`` (``cloudaccount``, ``sshkey``, ``apiKey``, ...), which an admin may raise up to
    ``max_limit``."""

    kind: str
    limit: int
    label: str | None = None
    max_limit: int | None = None


@dataclass(frozen=True)
class ClusterRef:
    """A cluster, as far as the offboarding needs to name it."""

    uid: str
    name: str
    project_uid: str | None


@dataclass(frozen=True)
class CreatedApiKey:
    """The result of creating an API key: the only time Palette shows the value."""

    uid: str
    value: SecretStr


def rate_key_for(path: str) -> str:
    """Palette's rate-limit bucket: the first two path segments (``/v1/cloudaccounts``)."""
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    return "/" + "/".join(segments[:2])


#: Palette's ``filters`` joins terms with ``AND`` and ``OR`` written into the value, unquoted.
_FILTER_OPERATORS = ("AND", "OR")


def name_filter(name: str | None) -> str | None:
    """``metadata.name=<name>`` for a list's ``filters``; None (list everything, match here) for a
    name the filter syntax cannot carry: one holding an operator word or ``=``, or none at all."""
    if not name or "=" in name or any(op in name for op in _FILTER_OPERATORS):
        return None
    return f"metadata.name={name}"


def _seg(value: str) -> str:
    """One URL path segment, so a uid can never reach another route.

    An empty uid names no resource: ``get_*`` raise ``ResourceNotFoundError`` without a call
    (``GET /v1/apiKeys/`` would be the list), and ``delete_*`` treat it as already gone.
    """
    if not value:
        raise ResourceNotFoundError(message="An empty Palette uid names no resource.")
    return quote(value, safe="")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _whole(value: object) -> int | None:
    """A JSON number that is a whole number (the spec types limits as ``number``), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value != int(value):
        return None
    return int(value)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _metadata(item: dict[str, Any]) -> dict[str, Any]:
    return _dict(item.get("metadata"))


def _annotations(item: dict[str, Any]) -> dict[str, Any]:
    return _dict(_metadata(item).get("annotations"))


def _string_annotations(item: dict[str, Any]) -> dict[str, str]:
    """The object's annotations that are strings (all of them, per the spec's map of strings)."""
    return {k: v for k, v in _annotations(item).items() if isinstance(k, str) and isinstance(v, str)}


def _scope_of(item: dict[str, Any], asked_project_uid: str | None) -> str:
    # Palette annotates every object with its scope. Without the annotation, the object can only
    # come from the scope we asked for.
    scope = _str(_annotations(item).get("scope"))
    if scope:
        return scope
    return SCOPE_PROJECT if asked_project_uid else SCOPE_TENANT


def _wanted_scope(project_uid: str | None) -> str:
    return SCOPE_PROJECT if project_uid else SCOPE_TENANT


def _azure_account(item: dict[str, Any], project_uid: str | None) -> AzureAccount:
    meta = _metadata(item)
    spec = _dict(item.get("spec"))
    settings = _dict(spec.get("settings"))
    overlord = _str(_annotations(item).get("overlordUid"))
    return AzureAccount(
        uid=str(meta.get("uid") or ""),
        name=str(meta.get("name") or ""),
        scope=_scope_of(item, project_uid),
        tenant_id=_str(spec.get("tenantId")),
        client_id=_str(spec.get("clientId")),
        environment=_str(spec.get("azureEnvironment")),
        tenant_name=_str(spec.get("tenantName")) or None,
        disable_properties=bool(settings.get("disablePropertiesRequest", False)),
        overlord_uid=overlord or None,
        state=_str(_dict(item.get("status")).get("state")),
        annotations=_string_annotations(item),
        created=parse_timestamp(meta.get("creationTimestamp")),
    )


def _ssh_key(item: dict[str, Any], project_uid: str | None) -> SshKey:
    meta = _metadata(item)
    return SshKey(uid=str(meta.get("uid") or ""), name=str(meta.get("name") or ""),
                  public_key=str(_dict(item.get("spec")).get("publicKey") or ""),
                  scope=_scope_of(item, project_uid), annotations=_string_annotations(item),
                  created=parse_timestamp(meta.get("creationTimestamp")))


#: ``spec.storage`` / ``spec.type`` of an Azure location in the list. The spec's ``v1LocationType``
#: enum has no Azure value, yet Terraform's import reads ``storage: "azure"``; ``type`` is what a
#: client sends ("Azure location type [azure]"). Either one marks an Azure location.
AZURE_LOCATION_TYPE = "azure"


def _is_azure_location(item: dict[str, Any]) -> bool:
    spec = _dict(item.get("spec"))
    return any((_str(spec.get(key)) or "").lower() == AZURE_LOCATION_TYPE for key in ("storage", "type"))


def _string_map(value: object) -> dict[str, str]:
    return {k: v for k, v in _dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def _azure_backup_location(item: dict[str, Any], uid: str, project_uid: str | None) -> AzureBackupLocation:
    meta = _metadata(item)
    spec = _dict(item.get("spec"))
    config = _dict(spec.get("config"))
    credentials = _dict(config.get("credentials"))
    return AzureBackupLocation(
        uid=uid,
        name=str(meta.get("name") or ""),
        scope=_scope_of(item, project_uid),
        tenant_id=_str(credentials.get("tenantId")),
        client_id=_str(credentials.get("clientId")),
        subscription_id=_str(credentials.get("subscriptionId")),
        client_cloud=_str(credentials.get("clientCloud")),
        resource_group=_str(config.get("resourceGroup")),
        storage_name=_str(config.get("storageName")),
        container_name=_str(config.get("containerName")),
        sku=_str(config.get("sku")),
        is_default=spec.get("isDefault") is True,
        location_type=_str(spec.get("type")),
        annotations=_string_annotations(item),
        labels=_string_map(meta.get("labels")),
    )


def _azure_location_body(location: AzureBackupLocation, creds: AzureCredentials) -> dict[str, Any]:
    """The full ``v1UserAssetsLocationAzure`` for a PUT: ``location`` as read, ``creds``' tenant id,
    client id and secret. Optional fields Palette did not return stay out; the spec's required
    config keys are sent even when Palette returned none (empty, as they were)."""
    credentials: dict[str, Any] = {
        "tenantId": creds.tenant_id,
        "clientId": creds.client_id,
        "clientSecret": creds.client_secret.get_secret_value(),
    }
    if location.subscription_id is not None:
        credentials["subscriptionId"] = location.subscription_id
    if location.client_cloud is not None:
        credentials["clientCloud"] = location.client_cloud
    config: dict[str, Any] = {
        "containerName": location.container_name or "",
        "storageName": location.storage_name or "",
        "resourceGroup": location.resource_group or "",
        "credentials": credentials,
    }
    if location.sku is not None:
        config["sku"] = location.sku
    spec: dict[str, Any] = {"config": config, "isDefault": location.is_default}
    if location.location_type is not None:
        spec["type"] = location.location_type
    metadata: dict[str, Any] = {"name": location.name, "annotations": dict(location.annotations)}
    if location.labels:
        metadata["labels"] = dict(location.labels)
    return {"metadata": metadata, "spec": spec}


def _api_key(item: dict[str, Any]) -> ApiKey:
    meta = _metadata(item)
    spec = _dict(item.get("spec"))
    active = _dict(item.get("status")).get("isActive")
    return ApiKey(uid=str(meta.get("uid") or ""), name=str(meta.get("name") or ""),
                  user_uid=_str(_dict(spec.get("user")).get("uid")),
                  expiry=parse_timestamp(spec.get("expiry")),
                  is_active=active if isinstance(active, bool) else None,
                  description=_str(_annotations(item).get("description")),
                  annotations=_string_annotations(item), created=parse_timestamp(meta.get("creationTimestamp")))


class PaletteClient(JsonHttpClient):
    """Palette REST client authenticated with an API key.

    :param endpoint: Palette API base URL, e.g. ``https://api.spectrocloud.com``.
    :param api_key: The Palette API key (sent as the ``ApiKey`` header, never logged).
    :keyword timeout: Seconds per connect and per read (default 30).
    :keyword session: A :class:`requests.Session` seam for tests and custom TLS trust.
    :keyword retry: The :class:`RetryPolicy` (defaults documented there).
    :keyword rate_per_second: Client-side pace per resource prefix (default 8, under Palette's 10).
    :keyword burst: Client-side burst per resource prefix (default 5, Palette's documented burst).
    :keyword rate_limiter: The pace to keep instead (one :class:`RateLimiter` shared by a worker's
        clients, or the app-wide :class:`~shared.state.pace.SharedPace`); when given,
        ``rate_per_second`` and ``burst`` are ignored.

    Every method raises azure-core exceptions: :class:`~azure.core.exceptions.ClientAuthenticationError`
    (401/403: the key is wrong, expired or lacks the permission), ``ResourceNotFoundError`` (404),
    ``ResourceExistsError`` (409), ``HttpResponseError`` (other statuses),
    ``ServiceRequestError`` / ``ServiceResponseError`` (network).
    """

    service_name = "Palette"
    request_id_headers = ("AuditUid", "X-Request-Id")

    def __init__(self, endpoint: str, api_key: SecretStr, *, timeout: float = 30,
                 session: requests.Session | None = None, retry: RetryPolicy | None = None,
                 rate_per_second: float = 8, burst: int = 5, rate_limiter: Pace | None = None) -> None:
        if not isinstance(api_key, SecretStr):
            raise TypeError("api_key must be a pydantic SecretStr.")
        if not api_key.get_secret_value():
            raise ValueError("api_key must not be empty: pass the Palette API key.")
        super().__init__(endpoint, timeout=timeout, session=session, retry=retry,
                         rate_limiter=rate_limiter or RateLimiter(rate_per_second, burst))
        self._api_key = api_key
        self._tenant_uid: str | None = None
        self._tenant_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, project_uid: str | None = None, json: Any = None,
              params: dict[str, Any] | None = None, idempotent: bool | None = None,
              secrets: Iterable[str] = ()) -> requests.Response:
        headers = {"ApiKey": self._api_key.get_secret_value(), "Accept": "application/json"}
        if project_uid:
            headers["ProjectUid"] = project_uid
        return self._send(method, path, json=json, params=params, headers=headers,
                          rate_key=rate_key_for(path), idempotent=idempotent,
                          secrets=(self._api_key.get_secret_value(), *secrets))

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._call(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise DecodeError(message=f"Palette {method} {path} returned {response.status_code} "
                                      "with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise DecodeError(message=f"Palette {method} {path} returned JSON that is not an object")
        return body

    @staticmethod
    def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
        items = body.get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def _paged(self, path: str, *, project_uid: str | None,
               convert: Callable[[dict[str, Any]], T], filters: str | None = None) -> ItemPaged[T]:
        """Items of a list endpoint, 50 a page, following ``listmeta.continue`` (``""`` ends it)."""

        def get_next(token: str | None) -> dict[str, Any]:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if filters:
                params["filters"] = filters
            if token:
                params["continue"] = token
            return self._json("GET", path, params=params, project_uid=project_uid)

        def extract(body: dict[str, Any]) -> tuple[str | None, list[T]]:
            token = _str(_dict(body.get("listmeta")).get("continue"))
            return (token or None), [convert(item) for item in self._items(body)]

        return ItemPaged[T](get_next, extract)

    @staticmethod
    def _uid_of(body: dict[str, Any], what: str) -> str:
        uid = _str(body.get("uid"))
        if not uid:
            raise DecodeError(message=f"Palette created the {what} but returned no uid")
        return uid

    # -- the tenant and its resource limits -----------------------------------------------------

    def tenant_uid(self) -> str:
        """The uid of the tenant the API key belongs to (``GET /v1/users/info``), asked once for the
        client's life: a key never moves to another tenant."""
        with self._tenant_lock:
            if self._tenant_uid is None:
                uid = _str(self._json("GET", "/v1/users/info").get("tenantUid"))
                if not uid:
                    raise DecodeError(message="Palette's GET /v1/users/info named no tenantUid")
                self._tenant_uid = uid
            return self._tenant_uid

    def get_resource_limits(self) -> dict[str, ResourceLimit]:
        """The tenant's resource limits by kind (``GET /v1/tenants/{tenantUid}/resourceLimits``);
        read afresh on every call, since an admin may change them at any time. A kind Palette does
        not list has no limit here."""
        body = self._json("GET", f"/v1/tenants/{_seg(self.tenant_uid())}/resourceLimits")
        resources = body.get("resources")
        found: dict[str, ResourceLimit] = {}
        for item in resources if isinstance(resources, list) else []:
            entry = _dict(item)
            kind, limit, most = _str(entry.get("kind")), _whole(entry.get("limit")), _whole(entry.get("maxLimit"))
            if kind and limit is not None:
                found[kind] = ResourceLimit(kind=kind, limit=limit, label=_str(entry.get("label")), max_limit=most)
        return found

    def count_cloud_accounts(self) -> int:
        """How many cloud accounts, of every cloud, the tenant holds: the tenant-scope cross-cloud
        summary (``GET /v1/cloudaccounts/summary``) with ``limit=1``, read from ``listmeta.count``,
        so one small call however many there are. Palette does not document whether that list
        takes in the projects' accounts too; the limit is tenant-wide, so a count that left them
        out would be low, and Palette's refusal at the create would then be what stops a request.
        Without a count in the answer, the pages are counted."""
        body = self._json("GET", "/v1/cloudaccounts/summary", params={"limit": 1})
        count = _dict(body.get("listmeta")).get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count
        return sum(1 for _ in self._paged("/v1/cloudaccounts/summary", project_uid=None, convert=lambda item: item))

    # -- lookups --------------------------------------------------------------------------------

    def get_project(self, name: str) -> Project | None:
        """The project called ``name`` (exact, case-sensitive), or ``None``.

        ``GET /v1/dashboard/projects/metadata?name=``; the server filter is treated as a hint.
        """
        body = self._json("GET", "/v1/dashboard/projects/metadata", params={"name": name})
        for item in self._items(body):
            meta = _metadata(item)
            if meta.get("name") == name and _str(meta.get("uid")):
                return Project(uid=str(meta["uid"]), name=name)
        return None

    def find_overlord(self, name_or_uid: str) -> Overlord | None:
        """The Private Cloud Gateway whose uid or name is ``name_or_uid``, or ``None``.

        One ``GET /v1/overlords`` (a tenant has few gateways); an exact uid match wins over a
        name match, so a gateway named like another's uid cannot shadow it.
        """
        overlords = [
            Overlord(uid=str(_metadata(i).get("uid") or ""), name=str(_metadata(i).get("name") or ""),
                     state=_str(_dict(i.get("status")).get("state")))
            for i in self._items(self._json("GET", "/v1/overlords"))
        ]
        for overlord in overlords:
            if overlord.uid == name_or_uid:
                return overlord
        for overlord in overlords:
            if overlord.name == name_or_uid:
                return overlord
        return None

    def find_user_by_email(self, email: str) -> User | None:
        """The tenant user with this email (case-insensitive), or ``None``.

        Uses the server-side filter ``POST /v1/users/summary`` (one call whatever the tenant size,
        and what Palette's SDK uses) rather than paging ``GET /v1/users``. The POST only reads,
        so it is retried like a GET. The match is re-checked here.
        """
        wanted = email.strip().casefold()
        body = self._json("POST", "/v1/users/summary", idempotent=True,
                          json={"filter": {"emailId": {"eq": email.strip(), "ignoreCase": True}}})
        for item in self._items(body):
            spec = _dict(item.get("spec"))
            found = _str(spec.get("emailId"))
            uid = _str(_metadata(item).get("uid"))
            if found and uid and found.casefold() == wanted:
                return User(uid=uid, name=str(_metadata(item).get("name") or ""), email=found,
                            first_name=_str(spec.get("firstName")), last_name=_str(spec.get("lastName")))
        return None

    # -- Azure cloud accounts -------------------------------------------------------------------

    def validate_azure_credentials(self, creds: AzureCredentials, *, project_uid: str | None = None) -> None:
        """Ask Palette to sign in to Azure with ``creds`` (``POST /v1/clouds/azure/account/validate``).

        Returns on 204. Invalid credentials raise the service's error (status and code as Palette
        sends them). A new Graph secret can take seconds to work; retrying that is the caller's
        decision, not this method's. The call only reads (Palette asks Azure and keeps nothing), so a
        5xx or a lost answer is retried like a GET's.
        """
        self._call("POST", "/v1/clouds/azure/account/validate", json=creds.to_spec(), project_uid=project_uid,
                   idempotent=True, secrets=(creds.client_secret.get_secret_value(),))

    def list_azure_accounts(self, *, project_uid: str | None = None,
                            name: str | None = None) -> ItemPaged[AzureAccount]:
        """Every Azure cloud account visible in the scope (only those named ``name``, when given),
        paging 50 at a time.

        In project scope Palette also lists tenant-scoped accounts; ``AzureAccount.scope`` tells them
        apart. With ``name`` the server filters (``filters=metadata.name=<name>``); the caller still
        matches the names, since the filter's semantics are the server's. Returns an
        :class:`~azure.core.paging.ItemPaged`, never ``None``.
        """
        return self._paged("/v1/cloudaccounts/azure", project_uid=project_uid, filters=name_filter(name),
                           convert=lambda item: _azure_account(item, project_uid))

    def find_azure_account(self, name: str, *, project_uid: str | None = None) -> AzureAccount | None:
        """The account named ``name`` in exactly this scope, or ``None``: one filtered call.

        In project scope a tenant-scoped account with the same name is ignored (and vice versa),
        because Palette allows one of each.
        """
        wanted = _wanted_scope(project_uid)
        for account in self.list_azure_accounts(project_uid=project_uid, name=name):
            if account.name == name and account.scope == wanted:
                return account
        return None

    def get_azure_account(self, uid: str, *, project_uid: str | None = None) -> AzureAccount:
        """``GET /v1/cloudaccounts/azure/{uid}``; raises ``ResourceNotFoundError`` when absent."""
        body = self._json("GET", f"/v1/cloudaccounts/azure/{_seg(uid)}", project_uid=project_uid)
        return _azure_account(body, project_uid)

    def _account_body(self, name: str, creds: AzureCredentials, project_uid: str | None,
                      overlord_uid: str | None, extra: Mapping[str, str] | None,
                      uid: str | None = None) -> dict[str, Any]:
        annotations = {**(extra or {}), "scope": _wanted_scope(project_uid)}
        if overlord_uid:
            annotations["overlordUid"] = overlord_uid
        metadata: dict[str, Any] = {"name": name, "annotations": annotations}
        if uid is not None:
            metadata["uid"] = uid
        return {"metadata": metadata, "spec": creds.to_spec()}

    def create_azure_account(self, name: str, creds: AzureCredentials, *, project_uid: str | None = None,
                             overlord_uid: str | None = None,
                             annotations: Mapping[str, str] | None = None) -> str:
        """Register an Azure cloud account (``POST /v1/cloudaccounts/azure``); return its uid.

        Not retried once sent: if the response is lost (``ServiceResponseError``), look the
        account up with :meth:`find_azure_account` before trying again. Palette does not document
        what it answers to a duplicate name, so callers must not rely on an error for it.
        ``annotations`` go into ``metadata.annotations`` (the product's proof of authorship).
        """
        body = self._json("POST", "/v1/cloudaccounts/azure", project_uid=project_uid,
                          json=self._account_body(name, creds, project_uid, overlord_uid, annotations),
                          secrets=(creds.client_secret.get_secret_value(),))
        return self._uid_of(body, "Azure cloud account")

    def update_azure_account(self, uid: str, name: str, creds: AzureCredentials, *,
                             project_uid: str | None = None, overlord_uid: str | None = None,
                             annotations: Mapping[str, str] | None = None) -> None:
        """Overwrite the account (``PUT /v1/cloudaccounts/azure/{uid}``, full body incl. the secret).

        A full PUT: annotations not passed here (such as a gateway) are removed.
        """
        self._call("PUT", f"/v1/cloudaccounts/azure/{_seg(uid)}", project_uid=project_uid,
                   json=self._account_body(name, creds, project_uid, overlord_uid, annotations, uid=uid),
                   secrets=(creds.client_secret.get_secret_value(),))

    def delete_azure_account(self, uid: str, *, project_uid: str | None = None) -> None:
        """Delete the account; succeeds when it is already gone (404)."""
        try:
            self._call("DELETE", f"/v1/cloudaccounts/azure/{_seg(uid)}", project_uid=project_uid)
        except ResourceNotFoundError:
            logger.debug("Azure cloud account %s was already deleted", uid)

    def clusters_using_account(self, account_uid: str, *, project_uid: str | None = None) -> list[ClusterRef]:
        """The clusters whose cloud account is ``account_uid`` (``POST
        /v1/dashboard/spectroclusters/search``, every page, matched here on
        ``specSummary.cloudAccountMeta.uid``: the spec names no filter property for it).
        Tenant scope lists the clusters of every project."""
        found: list[ClusterRef] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                params["continue"] = token
            body = self._json("POST", "/v1/dashboard/spectroclusters/search", params=params, project_uid=project_uid,
                              json={"filter": {}, "sort": []}, idempotent=True)
            for item in self._items(body):
                summary = _dict(item.get("specSummary"))
                if _str(_dict(summary.get("cloudAccountMeta")).get("uid")) == account_uid:
                    meta = _metadata(item)
                    found.append(ClusterRef(uid=str(meta.get("uid") or ""), name=str(meta.get("name") or ""),
                                            project_uid=_str(_dict(summary.get("projectMeta")).get("uid"))))
            token = _str(_dict(body.get("listmeta")).get("continue"))
            if not token:
                return found

    # -- SSH keys -------------------------------------------------------------------------------

    def list_ssh_keys(self, *, project_uid: str | None, name: str | None = None) -> list[SshKey]:
        """SSH public keys visible in the scope (only those named ``name``, when given: the
        server filters); the endpoint is not paged.

        ``project_uid`` has no default on purpose: the onboarding guide keeps keys in a project,
        so tenant scope (``None``) must be asked for explicitly.
        """
        filters = name_filter(name)
        body = self._json("GET", "/v1/users/assets/sshkeys", project_uid=project_uid,
                          params={"filters": filters} if filters else None)
        return [_ssh_key(item, project_uid) for item in self._items(body)]

    def find_ssh_key(self, name: str, *, project_uid: str | None) -> SshKey | None:
        """The key named ``name`` in exactly this scope, or ``None``: one filtered call."""
        wanted = _wanted_scope(project_uid)
        return next((k for k in self.list_ssh_keys(project_uid=project_uid, name=name)
                     if k.name == name and k.scope == wanted), None)

    def create_ssh_key(self, name: str, public_key: str, *, project_uid: str | None,
                       annotations: Mapping[str, str] | None = None) -> str:
        """Upload a public key (``POST /v1/users/assets/sshkeys``); return its uid. Not retried once sent."""
        metadata: dict[str, Any] = {"name": name}
        if annotations:
            metadata["annotations"] = dict(annotations)
        body = self._json("POST", "/v1/users/assets/sshkeys", project_uid=project_uid,
                          json={"metadata": metadata, "spec": {"publicKey": public_key}})
        return self._uid_of(body, "SSH key")

    def delete_ssh_key(self, uid: str, *, project_uid: str | None) -> None:
        """Delete the key; succeeds when it is already gone (404)."""
        try:
            self._call("DELETE", f"/v1/users/assets/sshkeys/{_seg(uid)}", project_uid=project_uid)
        except ResourceNotFoundError:
            logger.debug("SSH key %s was already deleted", uid)

    # -- backup locations -----------------------------------------------------------------------

    def list_azure_backup_locations(self, *, project_uid: str | None) -> list[AzureBackupLocation]:
        """The Azure backup locations of the scope, each read in full (never the secret).

        ``GET /v1/users/assets/locations`` (not paged; its items carry no config), then ``GET
        /v1/users/assets/locations/azure/{uid}`` for each item marked Azure; a location deleted in
        between is left out. ``project_uid`` has no default: backup locations are project settings
        in the console, and tenant scope (``None``) must be asked for explicitly. Whether Palette
        lists the tenant's locations in a project is not documented: to find every location, list
        the tenant and every project, and tell duplicates apart by ``uid``.
        """
        body = self._json("GET", "/v1/users/assets/locations", project_uid=project_uid)
        found: list[AzureBackupLocation] = []
        for item in self._items(body):
            uid = _str(_metadata(item).get("uid"))
            if not uid or not _is_azure_location(item):
                continue
            try:
                found.append(self.get_azure_backup_location(uid, project_uid=project_uid))
            except ResourceNotFoundError:
                logger.debug("Azure backup location %s was deleted while listing", uid)
        return found

    def get_azure_backup_location(self, uid: str, *, project_uid: str | None) -> AzureBackupLocation:
        """``GET /v1/users/assets/locations/azure/{uid}``; raises ``ResourceNotFoundError`` when absent."""
        body = self._json("GET", f"/v1/users/assets/locations/azure/{_seg(uid)}", project_uid=project_uid)
        return _azure_backup_location(body, uid, project_uid)

    def update_azure_backup_location(self, uid: str, location: AzureBackupLocation, creds: AzureCredentials, *,
                                     project_uid: str | None) -> None:
        """Replace the location's credentials (``PUT /v1/users/assets/locations/azure/{uid}``).

        A full PUT of ``location`` as read (name, annotations, labels, container, storage account,
        resource group, SKU, subscription, cloud, default flag, type) with ``creds``' tenant id,
        client id and secret; ``creds.environment`` and the cloud account's other settings do not
        apply to a location. Palette does not validate a location's credentials on PUT (the
        console and Terraform call :meth:`validate_azure_credentials` first), so neither does
        this method: validate the new secret before calling it. Read the location just before,
        since a full PUT overwrites what changed since the read.

        :raises ValueError: ``location`` is another location's, or from another scope.
        """
        if location.uid and location.uid != uid:
            raise ValueError(f"The location read is {location.uid}, not {uid}.")
        if location.scope != _wanted_scope(project_uid):
            raise ValueError(f"Backup location {uid} is in {location.scope} scope; update it from that scope.")
        self._call("PUT", f"/v1/users/assets/locations/azure/{_seg(uid)}", project_uid=project_uid,
                   json=_azure_location_body(location, creds), secrets=(creds.client_secret.get_secret_value(),))

    # -- API keys (always tenant scope) ----------------------------------------------------------

    def list_api_keys(self) -> list[ApiKey]:
        """Every API key in the tenant (``GET /v1/apiKeys``, not paged). Values are never included."""
        return [_api_key(item) for item in self._items(self._json("GET", "/v1/apiKeys"))]

    def find_api_key(self, name: str) -> ApiKey | None:
        """The API key named ``name``, or ``None``."""
        return next((k for k in self.list_api_keys() if k.name == name), None)

    def get_api_key(self, uid: str) -> ApiKey:
        """``GET /v1/apiKeys/{uid}``; raises ``ResourceNotFoundError`` when absent."""
        return _api_key(self._json("GET", f"/v1/apiKeys/{_seg(uid)}"))

    def create_api_key(self, name: str, *, user_uid: str, expiry: datetime,
                       description: str | None = None,
                       annotations: Mapping[str, str] | None = None) -> CreatedApiKey:
        """Create an API key for ``user_uid`` (``POST /v1/apiKeys``); the value is returned only here.

        ``expiry`` must be timezone-aware. Not retried once sent: Palette does not deduplicate
        API keys, so after a lost response check :meth:`list_api_keys` before creating another.
        """
        metadata: dict[str, Any] = {"name": name}
        extra = dict(annotations or {})
        if description is not None:
            extra["description"] = description
        if extra:
            metadata["annotations"] = extra
        body = self._json("POST", "/v1/apiKeys",
                          json={"metadata": metadata,
                                "spec": {"userUid": user_uid, "expiry": format_timestamp(expiry)}})
        value = _str(body.get("apiKey"))
        if not value:
            raise DecodeError(message="Palette created the API key but returned no key value")
        return CreatedApiKey(uid=self._uid_of(body, "API key"), value=SecretStr(value))

    def update_api_key(self, uid: str, *, name: str, expiry: datetime,
                       annotations: Mapping[str, str] | None = None) -> None:
        """Rename the key or change its annotations or expiry (``PUT /v1/apiKeys/{uid}``, full metadata)."""
        metadata: dict[str, Any] = {"name": name, "uid": uid}
        if annotations:
            metadata["annotations"] = dict(annotations)
        self._call("PUT", f"/v1/apiKeys/{_seg(uid)}",
                   json={"metadata": metadata, "spec": {"expiry": format_timestamp(expiry)}})

    def revoke_api_key(self, uid: str) -> None:
        """Revoke the key (``PUT /v1/apiKeys/{uid}/state``, ``isActive: false``); it stops authenticating."""
        self._call("PUT", f"/v1/apiKeys/{_seg(uid)}/state", json={"isActive": False})

    def reactivate_api_key(self, uid: str) -> None:
        """Re-activate a revoked key (``PUT /v1/apiKeys/{uid}/state``, ``isActive: true``); it
        authenticates again (until its expiry)."""
        self._call("PUT", f"/v1/apiKeys/{_seg(uid)}/state", json={"isActive": True})

    def delete_api_key(self, uid: str) -> None:
        """Delete the API key; succeeds when it is already gone (404)."""
        try:
            self._call("DELETE", f"/v1/apiKeys/{_seg(uid)}")
        except ResourceNotFoundError:
            logger.debug("API key %s was already deleted", uid)
