"""Palette's REST wire: routes looked up in the spec, request checks, auth, scope, rate limit, V1Error.

Every route is registered under its exact ``paths`` template, and registration fails if the spec
has no such operation, so the stand-in cannot invent endpoints. A request then goes through, in
order: the rate limit (per resource prefix, before routing, as Palette's gateway does), routing
(404/405), the ``ApiKey`` check (401), the spec checks of parameters and body (400 with every
violation in ``details.violations``; 415 for a body that is not JSON), the ``ProjectUid`` scope
(403 for an unknown project) and finally the handler, which calls the backend with typed values.

Decisions where Palette's behaviour is not documented (see also ``errors.py`` for the codes):

- ``GET`` never returns the client secret: the schema requires ``spec.clientSecret``, so it is
  present but masked as ``********``.
- An unknown ``ProjectUid`` is 403 ``Forbidden`` (not 404, which clients read as "the resource is
  gone"); a blank one is 400. Routes that are tenant-wide (API keys, users, gateways, projects)
  ignore the header, as the SDK's comments say Palette does.
- Any key created through ``POST /v1/apiKeys`` acts with the full rights of its user; there is no
  role model.
- ``PUT`` needs ``metadata.uid`` equal to the path uid. ``PUT`` of a cloud account validates the
  credentials again, as the SDK does before every update.
- Azure backup locations (``/v1/users/assets/locations``): the spec gives their body
  ``v1ObjectMetaInputEntity`` metadata (name, annotations, labels; no uid), so ``GET
  .../azure/{uid}`` answers without ``metadata.uid`` and a ``PUT`` carrying one is refused as an
  undeclared property; only the list (``v1ObjectMeta``) names uids. ``GET`` masks
  ``config.credentials.clientSecret`` as ``********``, as for cloud accounts (Terraform keeps the
  secret from its state because "API returns masked values"). Create and ``PUT`` store the
  credentials without asking Azure: the console and Terraform validate them first through
  ``POST /v1/clouds/azure/account/validate``. The list answers ``spec.storage: "azure"``, which
  the spec's ``v1LocationType`` enum (s3, gcp, minio) lacks: Terraform's import maps that value,
  so Palette sends it regardless of the enum.
- ``fields`` is accepted and ignored (whole objects come back); ``filters`` supports
  ``field=value`` terms joined by ``AND`` (exact, case-sensitive equality; ``OR`` is a 501);
  ``orderBy`` supports ``field=1|-1`` lists.
- The rate limit is one token bucket per resource prefix (``/v1/cloudaccounts``, ``/v1/users``...)
  for all callers, not per source IP.
- Tenant resource limits (``/v1/tenants/{tenantUid}/resourceLimits``): ``GET`` answers every kind
  ``v1TenantResourceLimitsEntity`` names as supported, with Palette's documented defaults; ``PATCH``
  changes the kinds it lists (a whole number from 1 to the kind's ``maxLimit``; another kind, or one
  listed twice with two limits, is a 400) and answers 204. Another tenant's uid is 403. Any key of
  the tenant may read and change them (no role model, as above). A create past a limit is a 400
  ``ResourceLimitExceeded`` whose ``details`` are ``{kind, limit, count}`` (Palette documents only
  that an error comes back). The tenant-scope ``GET /v1/cloudaccounts/summary`` lists every
  scope's accounts, the tenant-wide count the cloud account limit is checked against (guessed).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.httpbase import HttpError, Request, Response, ServiceApp
from devstack.palette.errors import Forbidden, InvalidRequest, PaletteError, Unauthorized, invalid_field
from devstack.palette.models import (
    RESOURCE_LIMITS,
    SECRET_MASK,
    ApiKey,
    AzureAccount,
    AzureLocation,
    Cluster,
    Overlord,
    PaletteBackend,
    Project,
    SshKey,
    User,
    apply_filters,
    apply_order,
    filtered_name,
    format_time,
    masked_credentials,
    new_uid,
    paginate,
    scope_annotations,
)
from devstack.palette.spec import Operation, PaletteSpec, Violation

_REDACTED_KEYS = {"clientSecret", "apiKey"}


@dataclass
class Call:
    """A request that passed auth and the spec checks, as a handler sees it."""

    request: Request
    operation: Operation
    user: User
    query: dict[str, Any]
    body: Any
    project_uid: str | None

    def uid(self) -> str:
        return self.request.path_params["uid"]


CallHandler = Callable[[Call], Response]


class RateLimiter:
    """Token buckets per key holding ``rate * burst`` tokens and refilling at ``rate`` per second.

    With Palette's 10 requests/s and burst 5 a client gets 50 requests at once, then 10 a second.
    """

    def __init__(self, rate_per_second: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.configure(rate_per_second, burst)

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate_per_second * self.burst)

    def configure(self, rate_per_second: float, burst: int) -> None:
        """Change the limits; every bucket starts full again."""
        with self._lock:
            self.rate_per_second = float(rate_per_second)
            self.burst = int(burst)
            self._buckets.clear()

    def allow(self, key: str) -> bool:
        with self._lock:
            if self.rate_per_second <= 0:
                return True
            now = self._clock()
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate_per_second)
            allowed = tokens >= 1.0 - 1e-9  # float rounding of the refill must not cost a token
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            return allowed


def rate_limit_prefix(path: str) -> str:
    """The resource prefix Palette counts a request under: the first two path segments."""
    segments = [s for s in path.split("/") if s]
    return "/" + "/".join(segments[:2])


_SECRET_IN_TEXT = re.compile(r'("(?:clientSecret|apiKey)"\s*:\s*)"(?:[^"\\]|\\.)*"')


def redact(value: Any) -> Any:
    """A copy of a JSON value with every ``clientSecret`` and ``apiKey`` masked.

    A body that was not valid JSON is recorded as text; secrets in it are masked by pattern.
    """
    if isinstance(value, str):
        return _SECRET_IN_TEXT.sub(lambda m: f'{m.group(1)}"{SECRET_MASK}"', value)
    if isinstance(value, dict):
        return {k: (SECRET_MASK if k in _REDACTED_KEYS and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class PaletteApp(ServiceApp):
    """The HTTP surface of the Palette stand-in over a :class:`PaletteBackend`."""

    name = "palette"

    def __init__(self, *, spec: PaletteSpec, backend: PaletteBackend, rate_per_second: float = 10,
                 burst: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.spec = spec
        self.backend = backend
        self._initial_rate = (rate_per_second, burst)
        self.limiter = RateLimiter(rate_per_second, burst, clock=clock)
        self.operations: list[Operation] = []
        self._register_routes()

    # ------------------------------------------------------------------ ServiceApp hooks

    def error_response(self, error: HttpError) -> Response:
        """Every error as a ``V1Error``; ``ref`` is a fresh id to quote when reporting it."""
        details = error.details
        if details is None:
            details = {}
        elif not isinstance(details, dict):
            details = {"detail": details}
        body = {"code": error.code, "message": error.message, "details": details, "ref": new_uid()}
        return Response.json(error.status, body, error.headers)

    def before_request(self, request: Request) -> Response | None:
        prefix = rate_limit_prefix(request.path)
        if not self.limiter.allow(prefix):
            raise PaletteError(429, "TooManyRequests",
                               f"Too Many Requests, [{request.method}] {request.path}: the limit for {prefix} "
                               f"is {self.limiter.rate_per_second:g} requests per second with a burst of "
                               f"{self.limiter.burst}; retry after a few moments.")
        return None

    def reset(self) -> None:
        self.backend.reset()
        self.limiter.configure(*self._initial_rate)

    def state(self) -> Any:
        snapshot = self.backend.snapshot()
        snapshot["rateLimit"] = self._rate_config()
        return snapshot

    def redact(self, body: Any) -> Any:
        return redact(body)

    def admin(self, request: Request, subpath: str) -> Response | None:
        if subpath == "config" and request.method == "GET":
            return Response.json(200, self._rate_config())
        if subpath == "config" and request.method == "POST":
            config = request.json()
            known = {"ratePerSecond", "burst", "uniqueNames", "resourceLimits"}
            if not isinstance(config, dict) or set(config) - known:
                raise InvalidRequest('The config body is {"ratePerSecond"?: number, "burst"?: integer, '
                                     '"uniqueNames"?: boolean, "resourceLimits"?: {kind: integer}}.')
            rate = config.get("ratePerSecond", self.limiter.rate_per_second)
            burst = config.get("burst", self.limiter.burst)
            unique = config.get("uniqueNames", self.backend.unique_names)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)):
                raise InvalidRequest("ratePerSecond must be a number (0 or less disables the limit).")
            if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
                raise InvalidRequest("burst must be an integer of 1 or more.")
            if not isinstance(unique, bool):
                raise InvalidRequest("uniqueNames must be true or false.")
            limits = config.get("resourceLimits", {})
            if (not isinstance(limits, dict) or set(limits) - set(RESOURCE_LIMITS)
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in limits.values())):
                raise InvalidRequest(f"resourceLimits maps kinds ({', '.join(RESOURCE_LIMITS)}) to whole numbers of 1 "
                                     "or more; unlike Palette's PATCH, no maxLimit applies.")
            self.limiter.configure(rate, burst)
            self.backend.unique_names = unique
            self.backend.override_resource_limits(limits)
            return Response.json(200, self._rate_config())
        if subpath == "clusters" and request.method == "POST":
            spec = request.json()
            if (not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]
                    or not isinstance(spec.get("cloudAccountUid"), str)):
                raise InvalidRequest('The body is {"name": string, "cloudAccountUid": string, "projectUid"?: string, '
                                     '"state"?: string}.')
            cluster = self.backend.add_cluster(name=spec["name"], cloud_account_uid=spec["cloudAccountUid"],
                                               project_uid=spec.get("projectUid"),
                                               state=str(spec.get("state", "Running")))
            return Response.json(201, {"uid": cluster.uid, "name": cluster.name, "projectUid": cluster.project_uid})
        if subpath.startswith("clusters/") and request.method == "DELETE":
            self.backend.remove_cluster(subpath.removeprefix("clusters/"))
            return Response.empty()
        if subpath == "cloudaccounts/bulk" and request.method == "POST":
            return self._seed_accounts_in_bulk(request)
        if subpath == "cloudaccounts" and request.method == "POST":
            spec = request.json()
            count = spec.get("count", 1) if isinstance(spec, dict) else None
            if (not isinstance(spec, dict) or not isinstance(spec.get("namePrefix"), str) or not spec["namePrefix"]
                    or isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000
                    or not isinstance(spec.get("projectUid"), str | None)):
                raise InvalidRequest('The body is {"namePrefix": string, "count"?: 1-100000, "projectUid"?: string}.')
            made = self.backend.seed_azure_accounts(name_prefix=spec["namePrefix"], count=count,
                                                    project_uid=spec.get("projectUid"))
            return Response.json(201, {"count": len(made), "first": made[0].name, "last": made[-1].name})
        if subpath == "locations/azure" and request.method == "POST":
            return self._seed_azure_location(request)
        if subpath == "overlords" and request.method == "POST":
            spec = request.json()
            if (not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]
                    or not isinstance(spec.get("state"), str)):
                raise InvalidRequest('The body is {"name": string, "state": string, "cloudType"?: string}.')
            gateway = self.backend.set_overlord(spec["name"], spec["state"], str(spec.get("cloudType", "azure")))
            return Response.json(200, {"uid": gateway.uid, "name": gateway.name, "state": gateway.state})
        return None

    _BULK_ACCOUNT_REQUIRED = ("name", "tenantId", "clientId", "clientSecret")
    _BULK_ACCOUNT_FIELDS = {*_BULK_ACCOUNT_REQUIRED, "uid", "annotations", "labels"}

    def _seed_accounts_in_bulk(self, request: Request) -> Response:
        """Admin: many Azure cloud accounts at once, as given (an earlier onboarding's, with the
        product's annotations), stored without asking Azure; the uids in the order given. What a
        benchmark of tens of thousands of managed accounts seeds in seconds."""
        spec = request.json()
        usage = ('The body is {"projectUid"?: string, "accounts": [{"name", "tenantId", "clientId", "clientSecret": '
                 'string, "uid"?: 24 hex digits, "annotations"?, "labels"?: {string: string}}]}.')
        accounts = spec.get("accounts") if isinstance(spec, dict) else None
        if (not isinstance(spec, dict) or set(spec) - {"projectUid", "accounts"} or not isinstance(accounts, list)
                or not accounts or not isinstance(spec.get("projectUid"), str | None)):
            raise InvalidRequest(usage)
        for item in accounts:
            if (not isinstance(item, dict) or set(item) - self._BULK_ACCOUNT_FIELDS
                    or not all(isinstance(item.get(key), str) for key in self._BULK_ACCOUNT_REQUIRED)
                    or not all(_string_map(item.get(key, {})) for key in ("annotations", "labels"))):
                raise InvalidRequest(usage)
        project_uid = spec.get("projectUid")
        if project_uid is not None and self.backend.project(project_uid) is None:
            raise InvalidRequest(f"projectUid {project_uid!r} is not a project of this tenant.")
        made = self.backend.add_azure_accounts(project_uid, accounts)
        return Response.json(201, {"count": len(made), "uids": [account.uid for account in made]})

    _SEED_LOCATION_FIELDS = {"name": True, "projectUid": False, "tenantId": True, "clientId": True,
                             "clientSecret": True, "subscriptionId": False, "clientCloud": False,
                             "resourceGroup": False, "storageName": False, "containerName": False, "sku": False,
                             "isDefault": False, "annotations": False, "labels": False}

    def _seed_azure_location(self, request: Request) -> Response:
        """Admin: an Azure backup location as another team (or the console) would have made it.

        A flat body with defaults for the storage fields; the location it makes is then checked
        against the spec like a public ``POST``'s body, so a seed is always a valid location.
        """
        spec = request.json()
        usage = ('The body is {"name", "tenantId", "clientId", "clientSecret": string, "projectUid"?, '
                 '"subscriptionId"?, "clientCloud"?, "resourceGroup"?, "storageName"?, "containerName"?, '
                 '"sku"?: string, "isDefault"?: boolean, "annotations"?, "labels"?: {string: string}}.')
        if not isinstance(spec, dict) or set(spec) - set(self._SEED_LOCATION_FIELDS):
            raise InvalidRequest(usage)
        for name, required in self._SEED_LOCATION_FIELDS.items():
            if required and not isinstance(spec.get(name), str):
                raise InvalidRequest(usage)
        project_uid = spec.get("projectUid")
        if project_uid is not None and (not isinstance(project_uid, str) or self.backend.project(project_uid) is None):
            raise InvalidRequest(f"projectUid {project_uid!r} is not a project of this tenant.")
        credentials = {k: spec[k] for k in ("tenantId", "clientId", "clientSecret", "subscriptionId", "clientCloud")
                       if k in spec}
        config = {"containerName": spec.get("containerName", "velero-backups"),
                  "storageName": spec.get("storageName", "backupstorage"),
                  "resourceGroup": spec.get("resourceGroup", "backups-rg"),
                  "credentials": credentials}
        if "sku" in spec:
            config["sku"] = spec["sku"]
        metadata: dict[str, Any] = {"name": spec["name"]}
        for key in ("annotations", "labels"):
            if key in spec:
                metadata[key] = spec[key]
        body: dict[str, Any] = {"metadata": metadata, "spec": {"config": config, "type": "azure"}}
        if "isDefault" in spec:
            body["spec"]["isDefault"] = spec["isDefault"]
        operation = self.spec.operation("POST", "/v1/users/assets/locations/azure")
        violations = self.spec.check_body(operation, body)
        if violations:
            raise InvalidRequest(f"The seeded location does not match the API spec: {violations[0].message}",
                                 [v.as_dict() for v in violations])
        location = self.backend.create_azure_location(project_uid, name=spec["name"], spec=body["spec"],
                                                      annotations=metadata.get("annotations") or {},
                                                      labels=metadata.get("labels") or {})
        return Response.json(201, {"uid": location.uid, "name": location.name, "projectUid": project_uid})

    def _rate_config(self) -> dict[str, Any]:
        return {"ratePerSecond": self.limiter.rate_per_second, "burst": self.limiter.burst,
                "capacity": self.limiter.capacity if self.limiter.rate_per_second > 0 else None,
                "enabled": self.limiter.rate_per_second > 0, "uniqueNames": self.backend.unique_names}

    # ------------------------------------------------------------------ plumbing

    def _serve(self, method: str, path: str, handler: CallHandler, *, scoped: bool = False) -> None:
        """Register ``handler`` for the spec operation at ``method path`` (which must exist)."""
        operation = self.spec.operation(method, path)
        self.operations.append(operation)

        def run(request: Request) -> Response:
            user = self._authenticate(request)
            query, body = self._checked(operation, request)
            project_uid = self._project_scope(request) if scoped else None
            return handler(Call(request, operation, user, query, body, project_uid))

        self.router.add(method, path, run)

    def _authenticate(self, request: Request) -> User:
        key = request.header("ApiKey")
        if not key:
            hint = (" A JWT in Authorization is not accepted by the stand-in."
                    if request.header("Authorization") else "")
            raise Unauthorized("Authentication is required: send the ApiKey header." + hint)
        user = self.backend.authenticate(key)
        if user is None:
            raise Unauthorized("The API key is not valid: it is unknown, revoked, deactivated or expired.")
        return user

    def _checked(self, operation: Operation, request: Request) -> tuple[dict[str, Any], Any]:
        query, violations = self.spec.check_parameters(operation, path_params=request.path_params,
                                                       query=request.query, headers=request.headers)
        body: Any = None
        if request.body:
            if operation.body_schema is None:
                violations.append(Violation("body", "", "absent",
                                            f"{operation.operation_id} takes no request body."))
            else:
                body = self._parse_json(request)
                violations.extend(self.spec.check_body(operation, body))
        elif operation.body_required:
            violations.append(Violation("body", "", "required", "A JSON request body is required."))
        if violations:
            first = violations[0].message
            more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
            raise InvalidRequest(f"The request does not match the API spec of {operation.operation_id}: "
                                 f"{first}{more}", [v.as_dict() for v in violations])
        return query, body

    @staticmethod
    def _parse_json(request: Request) -> Any:
        media = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            raise PaletteError(415, "UnsupportedMediaType",
                               f"The body must be sent as application/json, not {media or 'no content type'}.")

        def no_constants(name: str) -> Any:
            raise ValueError(f"{name} is not valid JSON")

        try:
            return json.loads(request.body.decode("utf-8"), parse_constant=no_constants)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            reason = str(exc) if not isinstance(exc, RecursionError) else "it is nested too deeply"
            raise InvalidRequest(f"The request body is not valid JSON: {reason}",
                                 [{"in": "body", "path": "", "rule": "json", "message": reason}]) from None

    def _project_scope(self, request: Request) -> str | None:
        project_uid = request.header("ProjectUid")
        if project_uid is None:
            return None
        if not project_uid.strip():
            raise InvalidRequest("The ProjectUid header is blank; leave it out for tenant scope.",
                                 [{"in": "header", "path": "ProjectUid", "rule": "blank",
                                   "message": "ProjectUid must be a project uid."}])
        if self.backend.project(project_uid) is None:
            raise Forbidden(f"ProjectUid '{project_uid}' is not a project of this tenant (or not one the "
                            "API key may use).")
        return project_uid

    # ------------------------------------------------------------------ routes

    def _register_routes(self) -> None:
        serve = self._serve
        serve("POST", "/v1/clouds/azure/account/validate", self._validate_azure, scoped=True)
        serve("POST", "/v1/cloudaccounts/azure", self._create_account, scoped=True)
        serve("GET", "/v1/cloudaccounts/azure", self._list_accounts, scoped=True)
        serve("GET", "/v1/cloudaccounts/azure/{uid}", self._get_account, scoped=True)
        serve("PUT", "/v1/cloudaccounts/azure/{uid}", self._update_account, scoped=True)
        serve("DELETE", "/v1/cloudaccounts/azure/{uid}", self._delete_account, scoped=True)
        serve("GET", "/v1/cloudaccounts/summary", self._account_summaries, scoped=True)
        serve("POST", "/v1/users/assets/sshkeys", self._create_ssh_key, scoped=True)
        serve("GET", "/v1/users/assets/sshkeys", self._list_ssh_keys, scoped=True)
        serve("GET", "/v1/users/assets/sshkeys/{uid}", self._get_ssh_key, scoped=True)
        serve("PUT", "/v1/users/assets/sshkeys/{uid}", self._update_ssh_key, scoped=True)
        serve("DELETE", "/v1/users/assets/sshkeys/{uid}", self._delete_ssh_key, scoped=True)
        serve("GET", "/v1/users/assets/locations", self._list_locations, scoped=True)
        serve("POST", "/v1/users/assets/locations/azure", self._create_azure_location, scoped=True)
        serve("GET", "/v1/users/assets/locations/azure/{uid}", self._get_azure_location, scoped=True)
        serve("PUT", "/v1/users/assets/locations/azure/{uid}", self._update_azure_location, scoped=True)
        serve("DELETE", "/v1/users/assets/locations/{uid}", self._delete_location, scoped=True)
        serve("POST", "/v1/apiKeys", self._create_api_key)
        serve("GET", "/v1/apiKeys", self._list_api_keys)
        serve("GET", "/v1/apiKeys/{uid}", self._get_api_key)
        serve("PUT", "/v1/apiKeys/{uid}", self._update_api_key)
        serve("PATCH", "/v1/apiKeys/{uid}", self._set_api_key_active)
        serve("DELETE", "/v1/apiKeys/{uid}", self._delete_api_key)
        serve("PUT", "/v1/apiKeys/{uid}/state", self._set_api_key_active)
        serve("GET", "/v1/users", self._list_users)
        serve("POST", "/v1/users/summary", self._user_summaries)
        serve("GET", "/v1/users/info", self._user_info)
        serve("GET", "/v1/dashboard/projects/metadata", self._projects_metadata)
        serve("GET", "/v1/overlords", self._list_overlords)
        serve("GET", "/v1/overlords/{uid}", self._get_overlord)
        serve("POST", "/v1/dashboard/spectroclusters/search", self._search_clusters, scoped=True)
        serve("GET", "/v1/tenants/{tenantUid}/resourceLimits", self._get_resource_limits)
        serve("PATCH", "/v1/tenants/{tenantUid}/resourceLimits", self._set_resource_limits)

    # Azure cloud accounts

    def _validate_azure(self, call: Call) -> Response:
        self.backend.validate_azure_credentials(call.body)
        return Response.empty(204, {"AuditUid": new_uid()})

    def _create_account(self, call: Call) -> Response:
        body = call.body or {}
        metadata = body.get("metadata") or {}
        spec = _required_object(body, "spec")
        account = self.backend.create_azure_account(
            call.project_uid, name=metadata.get("name"), spec=spec,
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.json(201, {"uid": account.uid}, {"AuditUid": new_uid()})

    def _list_accounts(self, call: Call) -> Response:
        accounts = self.backend.list_azure_accounts(call.project_uid)
        name = filtered_name(call.query.get("filters"))
        if name is not None:
            accounts = [a for a in accounts if a.name == name]
        return self._paged(call, "cloudaccounts/azure", accounts, account_wire)

    def _get_account(self, call: Call) -> Response:
        return Response.json(200, account_wire(self.backend.get_azure_account(call.project_uid, call.uid())))

    def _update_account(self, call: Call) -> Response:
        body = call.body or {}
        metadata = _metadata_for_put(body, call.uid())
        spec = _required_object(body, "spec")
        self.backend.update_azure_account(
            call.project_uid, call.uid(), name=metadata.get("name"), spec=spec,
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.empty(204)

    def _delete_account(self, call: Call) -> Response:
        self.backend.delete_azure_account(call.project_uid, call.uid())
        return Response.empty(204)

    def _account_summaries(self, call: Call) -> Response:
        return self._paged(call, "cloudaccounts/summary", self.backend.summary_accounts(call.project_uid),
                           account_summary_wire)

    # SSH keys

    def _create_ssh_key(self, call: Call) -> Response:
        body = call.body or {}
        metadata = body.get("metadata") or {}
        key = self.backend.create_ssh_key(
            call.project_uid, name=metadata.get("name"), public_key=(body.get("spec") or {}).get("publicKey"),
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.json(201, {"uid": key.uid}, {"AuditUid": new_uid()})

    def _list_ssh_keys(self, call: Call) -> Response:
        keys = self.backend.list_ssh_keys(call.project_uid)
        name = filtered_name(call.query.get("filters"))
        if name is not None:
            keys = [k for k in keys if k.name == name]
        items = [ssh_key_wire(k) for k in keys]
        items = apply_order(apply_filters(items, call.query.get("filters")), call.query.get("orderBy"))
        return Response.json(200, {"items": items})

    def _get_ssh_key(self, call: Call) -> Response:
        return Response.json(200, ssh_key_wire(self.backend.get_ssh_key(call.project_uid, call.uid())))

    def _update_ssh_key(self, call: Call) -> Response:
        body = call.body or {}
        metadata = _metadata_for_put(body, call.uid())
        self.backend.update_ssh_key(
            call.project_uid, call.uid(), name=metadata.get("name"),
            public_key=(body.get("spec") or {}).get("publicKey"),
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.empty(204)

    def _delete_ssh_key(self, call: Call) -> Response:
        self.backend.delete_ssh_key(call.project_uid, call.uid())
        return Response.empty(204)

    # Backup locations (Azure only)

    def _create_azure_location(self, call: Call) -> Response:
        body = call.body or {}
        metadata = body.get("metadata") or {}
        location = self.backend.create_azure_location(
            call.project_uid, name=metadata.get("name"), spec=_required_object(body, "spec"),
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.json(201, {"uid": location.uid}, {"AuditUid": new_uid()})

    def _list_locations(self, call: Call) -> Response:
        items = [location_wire(loc) for loc in self.backend.list_locations(call.project_uid)]
        items = apply_order(apply_filters(items, call.query.get("filters")), call.query.get("orderBy"))
        return Response.json(200, {"items": items})

    def _get_azure_location(self, call: Call) -> Response:
        return Response.json(200, azure_location_wire(self.backend.get_azure_location(call.project_uid, call.uid())))

    def _update_azure_location(self, call: Call) -> Response:
        # No metadata.uid here: the spec's v1ObjectMetaInputEntity has none (see the module notes).
        body = call.body or {}
        metadata = body.get("metadata") or {}
        self.backend.update_azure_location(
            call.project_uid, call.uid(), name=metadata.get("name"), spec=_required_object(body, "spec"),
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.empty(204)

    def _delete_location(self, call: Call) -> Response:
        self.backend.delete_location(call.project_uid, call.uid())
        return Response.empty(204)

    # API keys

    def _create_api_key(self, call: Call) -> Response:
        body = call.body or {}
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        key, value = self.backend.create_api_key(
            call.user, name=metadata.get("name"), user_uid=spec.get("userUid"), expiry=spec.get("expiry"),
            annotations=metadata.get("annotations") or {}, labels=metadata.get("labels") or {})
        return Response.json(201, {"apiKey": value, "uid": key.uid})

    def _list_api_keys(self, call: Call) -> Response:
        return Response.json(200, {"items": [self._api_key_wire(k) for k in self.backend.list_api_keys()]})

    def _get_api_key(self, call: Call) -> Response:
        return Response.json(200, self._api_key_wire(self.backend.get_api_key(call.uid())))

    def _update_api_key(self, call: Call) -> Response:
        body = call.body or {}
        metadata = _metadata_for_put(body, call.uid())
        self.backend.update_api_key(call.uid(), name=metadata.get("name"),
                                    expiry=(body.get("spec") or {}).get("expiry"),
                                    annotations=metadata.get("annotations") or {},
                                    labels=metadata.get("labels") or {})
        return Response.empty(204)

    def _set_api_key_active(self, call: Call) -> Response:
        self.backend.set_api_key_active(call.uid(), (call.body or {}).get("isActive"))
        return Response.empty(204)

    def _delete_api_key(self, call: Call) -> Response:
        self.backend.delete_api_key(call.uid())
        return Response.empty(204)

    def _api_key_wire(self, key: ApiKey) -> dict[str, Any]:
        owner = self.backend.user(key.user_uid)
        user = {"uid": key.user_uid}
        if owner is not None:
            user.update(firstName=owner.first_name, lastName=owner.last_name)
        return {
            "metadata": _metadata(key.uid, key.name, key.created, key.modified, key.annotations, key.labels),
            "spec": {"expiry": format_time(key.expiry), "user": user},
            "status": {"isActive": key.active},
        }

    # Users, projects, gateways

    def _list_users(self, call: Call) -> Response:
        return self._paged(call, "users", [user_wire(u) for u in self.backend.users()])

    def _user_summaries(self, call: Call) -> Response:
        body = call.body or {}
        users = self.backend.user_summaries(body.get("filter"), body.get("sort"))
        project_count = len(self.backend.projects())
        return Response.json(200, {"items": [user_summary_wire(u, project_count) for u in users]})

    def _user_info(self, call: Call) -> Response:
        return Response.json(200, {"userUid": call.user.uid, "tenantUid": self.backend.tenant_uid,
                                   "orgName": self.backend.org_name})

    def _projects_metadata(self, call: Call) -> Response:
        projects = self.backend.projects(call.query.get("name"))
        return Response.json(200, {"items": [{"metadata": {"name": p.name, "uid": p.uid}} for p in projects]})

    def _list_overlords(self, call: Call) -> Response:
        gateways = self.backend.overlords(call.query.get("name"))
        return Response.json(200, {"items": [overlord_wire(o, self.backend.tenant_uid) for o in gateways]})

    def _get_overlord(self, call: Call) -> Response:
        gateway = self.backend.overlord(call.uid())
        if gateway is None:
            raise PaletteError(404, "ResourceNotFound", f"Private cloud gateway '{call.uid()}' not found.")
        return Response.json(200, overlord_wire(gateway, self.backend.tenant_uid))

    # Tenant resource limits

    def _own_tenant(self, call: Call) -> None:
        tenant_uid = call.request.path_params["tenantUid"]
        if tenant_uid != self.backend.tenant_uid:
            raise Forbidden(f"Tenant '{tenant_uid}' is not the tenant of this API key; GET /v1/users/info "
                            "names its tenant.")

    def _get_resource_limits(self, call: Call) -> Response:
        self._own_tenant(call)
        limits = self.backend.resource_limits()
        return Response.json(200, {"resources": [
            {"kind": kind, "label": spec.label, "limit": limits[kind], "maxLimit": spec.max_limit}
            for kind, spec in RESOURCE_LIMITS.items()]})

    def _set_resource_limits(self, call: Call) -> Response:
        self._own_tenant(call)
        resources = (call.body or {}).get("resources")
        if not isinstance(resources, list) or not resources:
            raise invalid_field("resources", "required", "resources is required: the kinds to change, each "
                                "{\"kind\", \"limit\"}.")
        self.backend.set_resource_limits(resources)
        return Response.empty(204)

    # Clusters (only what the offboarding asks: which clusters use a cloud account)

    def _search_clusters(self, call: Call) -> Response:
        spec: dict[str, Any] = call.body if isinstance(call.body, dict) else {}
        filter_spec = spec.get("filter")
        if isinstance(filter_spec, dict) and filter_spec.get("filterGroups"):
            # Palette's filter properties are not in the spec; refuse rather than answer wrongly.
            raise PaletteError(501, "NotImplemented", "The stand-in supports cluster search without filterGroups.")
        items = [cluster_summary_wire(c, self.backend.project(c.project_uid)) for c in
                 self.backend.clusters(call.project_uid)]
        return self._paged(call, "clusters", items)

    # Paging

    def _paged(self, call: Call, kind: str, items: list[Any],
               wire: Callable[[Any], dict[str, Any]] | None = None) -> Response:
        """One page of ``items`` (wire dicts, or objects ``wire`` turns into them). Without filters
        or an order only the page is put in wire form: a page of a large tenant costs its 50 items,
        not every account."""
        filters, order_by = call.query.get("filters"), call.query.get("orderBy")
        if wire is not None and (filters or order_by):
            items, wire = [wire(item) for item in items], None
        items = apply_order(apply_filters(items, filters), order_by)
        # The token is bound to the list, scope and query so it cannot be replayed on another list.
        listing = f"{kind}|{call.project_uid or 'tenant'}|{filters or ''}|{order_by or ''}"
        page, listmeta = paginate(items, listing=hashlib.sha256(listing.encode()).hexdigest()[:16],
                                  limit=call.query.get("limit"), offset=call.query.get("offset"),
                                  token=call.query.get("continue"))
        if wire is not None:
            page = [wire(item) for item in page]
        return Response.json(200, {"items": page, "listmeta": listmeta})


# ---------------------------------------------------------------------------------------------- bodies


def _string_map(value: Any) -> bool:
    """Whether ``value`` is a JSON object of strings (annotations, labels)."""
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _required_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict):
        raise invalid_field(name, "required", f"{name} is required.")
    return value


def _metadata_for_put(body: dict[str, Any], uid: str) -> dict[str, Any]:
    """PUT replaces the resource; ``metadata.uid`` must name the one in the path."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        raise invalid_field("metadata", "required", "metadata is required on PUT (with name and uid).")
    sent = metadata.get("uid")
    if sent != uid:
        message = ("metadata.uid is required on PUT and must equal the uid in the path" if sent is None
                   else f"metadata.uid '{sent}' does not match the uid in the path '{uid}'; a uid cannot change")
        raise invalid_field("metadata.uid", "uid", message + ".")
    return metadata


def _metadata(uid: str, name: str, created: float, modified: float, annotations: dict[str, str],
              labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid, "annotations": dict(annotations),
                            "creationTimestamp": format_time(created),
                            "lastModifiedTimestamp": format_time(modified)}
    if labels:
        meta["labels"] = dict(labels)
    return meta


def account_wire(account: AzureAccount) -> dict[str, Any]:
    """``v1AzureAccount`` with the secret masked and the scope annotations set."""
    annotations = {**account.annotations, **scope_annotations(account.project_uid)}
    return {
        "metadata": _metadata(account.uid, account.name, account.created, account.modified, annotations,
                              account.labels),
        "spec": {**account.spec, "clientSecret": SECRET_MASK},
        "status": {"state": "Running"},
    }


def account_summary_wire(account: AzureAccount) -> dict[str, Any]:
    annotations = {**account.annotations, **scope_annotations(account.project_uid)}
    return {
        "kind": "azure",
        "metadata": _metadata(account.uid, account.name, account.created, account.modified, annotations,
                              account.labels),
        "specSummary": {"accountId": str(account.spec.get("tenantId", ""))},
        "status": {"state": "Running"},
    }


def location_wire(location: AzureLocation) -> dict[str, Any]:
    """``v1UserAssetsLocation``, a list item: metadata with the uid, no config."""
    annotations = {**location.annotations, **scope_annotations(location.project_uid)}
    return {
        "metadata": _metadata(location.uid, location.name, location.created, location.modified, annotations,
                              location.labels),
        "spec": {"isDefault": location.is_default, "storage": "azure", "type": "azure"},
    }


def azure_location_wire(location: AzureLocation) -> dict[str, Any]:
    """``v1UserAssetsLocationAzure``: ``v1ObjectMetaInputEntity`` metadata (no uid, no timestamps)
    and the config with the client secret masked."""
    metadata: dict[str, Any] = {"name": location.name,
                                "annotations": {**location.annotations, **scope_annotations(location.project_uid)}}
    if location.labels:
        metadata["labels"] = dict(location.labels)
    config = {**location.config, "credentials": masked_credentials(location.credentials)}
    return {"metadata": metadata, "spec": {"config": config, "isDefault": location.is_default, "type": "azure"}}


def ssh_key_wire(key: SshKey) -> dict[str, Any]:
    annotations = {**key.annotations, **scope_annotations(key.project_uid)}
    return {
        "metadata": _metadata(key.uid, key.name, key.created, key.modified, annotations, key.labels),
        "spec": {"publicKey": key.public_key},
    }


def user_wire(user: User) -> dict[str, Any]:
    return {
        "metadata": _metadata(user.uid, user.name, user.created, user.created, {}, {}),
        "spec": {"emailId": user.email, "firstName": user.first_name, "lastName": user.last_name,
                 "roles": list(user.roles)},
        "status": {"isActive": True, "activationLink": "", "isPasswordResetting": False},
    }


def _role_uid(role: str) -> str:
    return hashlib.sha256(f"role:{role}".encode()).hexdigest()[:24]


def user_summary_wire(user: User, project_count: int) -> dict[str, Any]:
    return {
        "metadata": _metadata(user.uid, user.name, user.created, user.created, {}, {}),
        "spec": {"emailId": user.email, "firstName": user.first_name, "lastName": user.last_name,
                 "projectsCount": project_count if "Tenant Admin" in user.roles else 1,
                 "roles": [{"name": r, "uid": _role_uid(r)} for r in user.roles], "teams": []},
        "status": {"isActive": True, "activationLink": "", "isPasswordResetting": False},
    }


def overlord_wire(gateway: Overlord, tenant_uid: str) -> dict[str, Any]:
    running = gateway.state == "Running"
    return {
        "kind": "overlord",
        "metadata": _metadata(gateway.uid, gateway.name, gateway.created, gateway.created, {}, {}),
        "spec": {"cloudAccountUid": "", "spectroClusterUid": "", "tenantUid": tenant_uid,
                 "isSelfHosted": False, "isSystem": False},
        "status": {"state": gateway.state, "isActive": running, "isReady": running,
                   "health": {"state": "Healthy" if running else "Unknown"}},
    }


def cluster_summary_wire(cluster: Cluster, project: Project | None) -> dict[str, Any]:
    """``v1SpectroClusterSummary`` with what the product reads (and a little of what Palette shows)."""
    return {
        "metadata": _metadata(cluster.uid, cluster.name, cluster.created, cluster.created,
                              scope_annotations(cluster.project_uid), {}),
        "specSummary": {"cloudAccountMeta": {"uid": cluster.cloud_account_uid, "name": ""},
                        "projectMeta": {"uid": cluster.project_uid, "name": project.name if project else ""}},
        "status": {"state": cluster.state},
    }

