"""Wire layer of the identity stand-in: managed identity, Entra ID token endpoints and Graph.

One :class:`IdentityApp` serves, on every listener it is given (plain HTTP and HTTPS):

* ``GET /msi/token`` -- the App Service managed identity protocol (api-version 2019-08-01);
* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  -- what MSAL needs for a client-credentials sign-in;
* ``/v1.0/applications...`` -- Graph's app registrations with ``addPassword``/``removePassword``, and
  ``/v1.0/policies/defaultAppManagementPolicy``, the tenant policy that may cap password lifetimes;
* ``GET /v1.0/servicePrincipals(appId='...')`` -- each application's service principal, whose object
  id is what Azure role assignments name;
* ``/_devstack/applications`` and ``/_devstack/config`` -- seeding and run-time settings (password
  cap and lifetime policy, propagation delay, Graph throttling: a plain rate, or Graph's own write
  windows with their ``x-ms-throttle-limit-percentage`` warning).

Handlers only parse and serialise; every rule lives in :mod:`devstack.identity.models`.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote

from devstack.httpbase import HttpError, Request, Response, ServiceApp
from devstack.identity import models
from devstack.identity.errors import (
    USAGE_HEADER,
    EntraError,
    GraphError,
    GraphThrottled,
    ManagedIdentityError,
    WireError,
    format_usage,
    graph_error_response,
    new_id,
)
from devstack.tokens import bearer_token, issue_token, verify_token

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

GRAPH_RESOURCE: Final = "https://graph.microsoft.com"
MSI_API_VERSION: Final = "2019-08-01"
CLIENT_CREDENTIALS_LIFETIME: Final = 3599
MANAGED_IDENTITY_LIFETIME: Final = 86399

_GRAPH_CONTEXT: Final = "https://graph.microsoft.com/v1.0/$metadata"
_APP_ID_SEGMENT = re.compile(r"^applications\(appId=(?:'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\")\)$")
_SP_APP_ID_SEGMENT = re.compile(r"^servicePrincipals\(appId=(?:'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\")\)$")
_FILTER_APP_ID = re.compile(r"^\s*appId\s+eq\s+'(?P<app_id>[^']*)'\s*$")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_SAFE_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")
_REDACT_DEPTH = 32
_SECRET_FIELDS: Final = frozenset({"secretText", "client_secret", "clientSecret", "client_assertion"})
_RESERVED_SCOPES: Final = frozenset({"openid", "profile", "offline_access", "email"})
_APPLICATION_PROPERTIES: Final = ("id", "appId", "displayName", "createdDateTime", "signInAudience",
                                  "keyCredentials", "passwordCredentials")
_SERVICE_PRINCIPAL_PROPERTIES: Final = ("id", "appId", "displayName", "servicePrincipalType", "accountEnabled",
                                        "appOwnerOrganizationId", "servicePrincipalNames")
_CONFIG_KEYS: Final = {"propagationDelaySeconds": "propagation_delay_seconds", "passwordCap": "password_cap",
                        "passwordLifetimeMaxDays": "password_lifetime_max_days",
                        "graphRequestsPerSecond": "graph_requests_per_second",
                        "graphWriteLimits": "graph_write_limits",
                        "graphAppWriteLimit": "graph_app_write_limit",
                        "graphAppWriteWindowSeconds": "graph_app_write_window_seconds",
                        "graphTenantWriteLimit": "graph_tenant_write_limit",
                        "graphTenantWriteWindowSeconds": "graph_tenant_write_window_seconds"}
# What null sets, for the settings where null is not a value of its own: off, or the real figure.
_NULL_MEANS: Final[dict[str, Any]] = {
    "graph_requests_per_second": 0.0, "graph_write_limits": False,
    "graph_app_write_limit": models.GRAPH_APP_WRITE_LIMIT,
    "graph_app_write_window_seconds": models.GRAPH_APP_WRITE_WINDOW_SECONDS,
    "graph_tenant_write_limit": models.GRAPH_TENANT_WRITE_LIMIT,
    "graph_tenant_write_window_seconds": models.GRAPH_TENANT_WRITE_WINDOW_SECONDS,
}
_GRAPH_CHALLENGE: Final = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                           'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"')


def _literal(pattern: str) -> str:
    """Escape a route pattern's literal parts (``.`` in ``v1.0``) but keep ``{param}`` slots."""
    parts = re.split(r"(\{\w+\})", pattern)
    return "".join(part if part.startswith("{") else re.escape(part) for part in parts)


def _safe_id(value: str | None) -> str | None:
    """A caller-supplied correlation id, only if it is safe to echo in a header."""
    return value if value and _SAFE_ID.fullmatch(value) else None


def _base_url(request: Request) -> str:
    """The HTTPS origin the caller used; MSAL accepts only ``https`` authorities."""
    host = request.header("host") or ""
    return f"https://{host if _SAFE_HOST.fullmatch(host) else '127.0.0.1'}"


def _form(request: Request) -> dict[str, str]:
    """The body as an HTML form; undecodable bytes count as no parameters, as Entra sees it."""
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    try:
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=200)
    except ValueError:
        return {}
    return {name: values[-1] for name, values in parsed.items()}


def _json_object(request: Request, client_request_id: str | None) -> dict[str, Any]:
    """The body as a JSON object, or Graph's 400 for anything else."""
    try:
        payload = json.loads(request.body) if request.body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise GraphError(400, "Request_BadRequest",
                         "Unable to read JSON request payload. Please ensure Content-Type header is set "
                         "and payload is of valid JSON format.", client_request_id=client_request_id)
    return payload


class IdentityApp(ServiceApp):
    """Entra ID, managed identity and Graph app registrations over one backend."""

    name = "identity"

    def __init__(self, backend: models.IdentityBackend, *, identity_header: str) -> None:
        super().__init__()
        self.backend = backend
        self.identity_header = identity_header
        add = self.router.add
        add("GET", "/msi/token", self._msi_token)
        add("GET", _literal("/{tenant}/v2.0/.well-known/openid-configuration"), self._openid_configuration)
        add("GET", _literal("/{tenant}/discovery/v2.0/keys"), self._keys)
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            add(method, _literal("/{tenant}/oauth2/v2.0/token"), self._token_wrong_method)
        add("POST", _literal("/{tenant}/oauth2/v2.0/token"), self._token)
        add("GET", _literal("/v1.0/policies/defaultAppManagementPolicy"), self._default_policy)
        add("GET", _literal("/v1.0/applications"), self._list_applications)
        add("GET", _literal("/v1.0/applications/{object_id}"), self._get_application)
        add("POST", _literal("/v1.0/applications/{object_id}/addPassword"), self._add_password)
        add("POST", _literal("/v1.0/applications/{object_id}/removePassword"), self._remove_password)
        # Before the catch-all segment below, which is the applications(appId=...) alternate key.
        add("GET", r"/v1\.0/(?P<sp_segment>servicePrincipals\([^/]*\))", self._get_service_principal)
        add("GET", _literal("/v1.0/{segment}"), self._get_application)
        add("POST", _literal("/v1.0/{segment}/addPassword"), self._add_password)
        add("POST", _literal("/v1.0/{segment}/removePassword"), self._remove_password)

    # -- ServiceApp hooks -----------------------------------------------------------------------

    def error_response(self, error: HttpError) -> Response:
        if isinstance(error, WireError):
            return error.render()
        # Router misses, oversized bodies and injected faults: Graph's shape, the busiest surface.
        return graph_error_response(error.status, error.code, error.message, headers=error.headers)

    def before_request(self, request: Request) -> Response | None:
        """Graph checks the bearer token before it looks at the path, then the caller's limits.

        A caller past 80 % of a write window is answered here, so that the answer, error or not,
        carries ``x-ms-throttle-limit-percentage``; every other request goes on to its route.
        """
        if request.path.startswith(("/v1.0/", "/beta/")) or request.path in ("/v1.0", "/beta"):
            claims = self._graph_claims(request)
            usage = self._throttle(request, claims)
            if usage is not None:
                return self._answer_with_usage(request, usage)
        return None

    def reset(self) -> None:
        self.backend.reset()

    def state(self) -> Any:
        return self.backend.snapshot()

    def redact(self, body: Any, _depth: int = 0) -> Any:
        """Mask ``client_secret`` in forms (recorded as text) and secret fields in JSON."""
        if _depth > _REDACT_DEPTH:
            return "***"  # nothing legitimate nests this deep; masking beats a recursion error
        if isinstance(body, str):
            return re.sub(r"((?:^|&)(?:client_secret|client_assertion)=)[^&]*", r"\1***", body)
        if isinstance(body, dict):
            return {key: "***" if key in _SECRET_FIELDS and value else self.redact(value, _depth + 1)
                    for key, value in body.items()}
        if isinstance(body, list):
            return [self.redact(item, _depth + 1) for item in body]
        return body

    def admin(self, request: Request, subpath: str) -> Response | None:
        if subpath == "applications" and request.method == "POST":
            return self._admin_register(request)
        if subpath == "applications/bulk" and request.method == "POST":
            return self._admin_register_in_bulk(request)
        if subpath.startswith("applications/") and request.method == "DELETE":
            found = self.backend.delete_application(unquote(subpath.partition("/")[2]))
            if not found:
                raise HttpError(404, "NotFound", "No such application.")
            return Response.empty()
        if subpath == "config" and request.method == "POST":
            return self._admin_config(request)
        if subpath == "config" and request.method == "GET":
            return Response.json(200, models.config_json(self.backend.config))
        return None

    # -- managed identity (App Service protocol) --------------------------------------------------

    def _msi_token(self, request: Request) -> Response:
        supplied = request.header("x-identity-header")
        if supplied is None:
            raise ManagedIdentityError(400, "BadRequest", "The X-IDENTITY-HEADER header is required.")
        if not hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"),
                                   self.identity_header.encode("utf-8", "surrogateescape")):
            raise ManagedIdentityError(401, "Unauthorized", "The X-IDENTITY-HEADER value is not valid.")
        api_version = request.query_value("api-version")
        if api_version != MSI_API_VERSION:
            raise ManagedIdentityError(400, "BadRequest",
                                       f"The api-version '{api_version}' is not supported; "
                                       f"use {MSI_API_VERSION}.")
        resource = (request.query_value("resource") or "").strip()
        if not resource:
            raise ManagedIdentityError(400, "BadRequest", "The resource query parameter is required.")
        backend = self.backend
        client_id = request.query_value("client_id")
        other_ids = [request.query_value(name) for name in ("principal_id", "object_id", "mi_res_id")]
        if (client_id is not None and client_id.lower() != backend.managed_identity_client_id.lower()) or any(
                value is not None for value in other_ids):
            raise ManagedIdentityError(400, "BadRequest", "Unable to load the proper Managed Identity.")
        token, expires_on = issue_token(audience=resource, subject=backend.managed_identity_client_id,
                                        tenant_id=backend.managed_identity_tenant_id,
                                        lifetime_seconds=MANAGED_IDENTITY_LIFETIME)
        return Response.json(200, {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": backend.managed_identity_client_id,
        })

    # -- Entra ID ---------------------------------------------------------------------------------

    def _entra_error(self, request: Request, status: int, error: str, aadsts: int, text: str) -> EntraError:
        return EntraError(status, error, aadsts, text, base_url=_base_url(request),
                          correlation_id=_safe_id(request.header("client-request-id")))

    def _openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if tenant.lower() not in models.MULTI_TENANT_ALIASES and not self.backend.tenant_exists(tenant):
            raise self._entra_error(request, 400, "invalid_tenant", 90002, _tenant_not_found(tenant))
        base = _base_url(request)
        issuer_tenant = "{tenantid}" if tenant.lower() in models.MULTI_TENANT_ALIASES else tenant
        return Response.json(200, {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        })

    def _keys(self, request: Request) -> Response:
        # Tokens here are HMAC-signed for the local services; there is no public key to publish.
        return Response.json(200, {"keys": []})

    def _token_wrong_method(self, request: Request) -> Response:
        raise self._entra_error(request, 400, "invalid_request", 900561,
                                f"The endpoint only accepts POST, OPTIONS requests. "
                                f"Received a {request.method} request.")

    def _token(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]

        def fail(status: int, error: str, aadsts: int, text: str) -> EntraError:
            return self._entra_error(request, status, error, aadsts, text)

        form = _form(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise fail(400, "invalid_request", 900144, _missing_parameter("grant_type"))
        if grant_type != "client_credentials":
            raise fail(400, "unsupported_grant_type", 70003,
                       f"The app requested an unsupported grant type '{grant_type}'.")
        if tenant.lower() in models.MULTI_TENANT_ALIASES:
            raise fail(400, "invalid_request", 50059,
                       "No tenant-identifying information found in either the request or implied by "
                       "any provided credentials.")
        if not self.backend.tenant_exists(tenant):
            raise fail(400, "invalid_request", 90002, _tenant_not_found(tenant))
        client_id = form.get("client_id")
        if not client_id:
            raise fail(400, "invalid_request", 900144, _missing_parameter("client_id"))
        scope = form.get("scope")
        if not scope:
            raise fail(400, "invalid_request", 900144, _missing_parameter("scope"))
        resource = _client_credentials_resource(scope)
        if resource is None:
            raise fail(400, "invalid_scope", 1002012,
                       f"The provided value for scope {scope} is not valid. Client credential flows must "
                       "have a scope value with /.default suffixed to the resource identifier "
                       "(application ID URI).")
        client_secret = form.get("client_secret")
        try:
            if not client_secret:
                # Look the app up first: an unknown app is reported as such even without a secret.
                self.backend.get_application(tenant, app_id=client_id)
                raise fail(401, "invalid_client", 7000218,
                           "The request body must contain the following parameter: 'client_assertion' or "
                           "'client_secret'.")
            app = self.backend.authenticate_client(tenant, client_id, client_secret)
        except models.TenantNotFoundError:
            raise fail(400, "invalid_request", 90002, _tenant_not_found(tenant)) from None
        except models.ApplicationNotFoundError:
            raise fail(400, "unauthorized_client", 700016,
                       f"Application with identifier '{client_id}' was not found in the directory "
                       f"'{tenant}'. This can happen if the application has not been installed by the "
                       "administrator of the tenant or consented to by any user in the tenant. You may "
                       "have sent your authentication request to the wrong tenant.") from None
        except models.InvalidClientSecretError:
            raise fail(401, "invalid_client", 7000215,
                       "Invalid client secret provided. Ensure the secret being sent in the request is "
                       "the client secret value, not the client secret ID, for a secret added to app "
                       f"'{client_id}'.") from None
        except models.ExpiredClientSecretError:
            raise fail(401, "invalid_client", 7000222,
                       f"The provided client secret keys for app '{client_id}' are expired. Visit the "
                       "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
                       "consider using certificate credentials for added security: "
                       "https://aka.ms/certCreds.") from None
        token, _ = issue_token(audience=resource, subject=app.app_id, tenant_id=app.tenant_id,
                               lifetime_seconds=CLIENT_CREDENTIALS_LIFETIME)
        return Response.json(200, {
            "token_type": "Bearer",
            "expires_in": CLIENT_CREDENTIALS_LIFETIME,
            "ext_expires_in": CLIENT_CREDENTIALS_LIFETIME,
            "access_token": token,
        }, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    # -- Microsoft Graph ----------------------------------------------------------------------------

    def _graph_claims(self, request: Request) -> dict[str, Any]:
        client_request_id = _safe_id(request.header("client-request-id"))

        def unauthorized(message: str) -> GraphError:
            return GraphError(401, "InvalidAuthenticationToken", message, client_request_id=client_request_id,
                              headers={"WWW-Authenticate": _GRAPH_CHALLENGE})

        token = bearer_token(request.header("authorization"))
        if not token:
            raise unauthorized("Access token is empty.")
        claims = verify_token(token, audience=GRAPH_RESOURCE)
        if claims is not None:
            return claims
        if token.count(".") != 2:
            raise unauthorized("IDX14100: JWT is not well formed, there are no dots (.).")
        raise unauthorized(_token_problem(token))

    def _caller_tenant(self, request: Request) -> str:
        """The tenant of the token's principal: Graph shows a caller only its own directory."""
        return str(self._graph_claims(request).get("tid", ""))

    def _application_ref(self, request: Request) -> tuple[str, dict[str, str]]:
        """The caller's tenant and ``app_id=``/``object_id=`` keywords from the path."""
        tenant = self._caller_tenant(request)
        client_request_id = _safe_id(request.header("client-request-id"))
        if "object_id" in request.path_params:
            object_id = request.path_params["object_id"]
            if not models.is_guid(object_id):
                raise GraphError(400, "Request_BadRequest", f"Invalid object identifier '{object_id}'.",
                                 client_request_id=client_request_id)
            return tenant, {"object_id": object_id}
        segment = request.path_params.get("segment", "")
        match = _APP_ID_SEGMENT.match(segment)
        if match is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.",
                             client_request_id=client_request_id)
        return tenant, {"app_id": match.group("single") if match.group("single") is not None
                        else match.group("double")}

    def _graph_call(self, request: Request, action: Callable[[], Response]) -> Response:
        """Run a backend call, mapping its domain errors onto Graph's."""
        client_request_id = _safe_id(request.header("client-request-id"))
        try:
            response = action()
        except models.ApplicationNotFoundError as exc:
            raise GraphError(404, "Request_ResourceNotFound",
                             f"Resource '{exc.reference}' does not exist or one of its queried "
                             "reference-property objects are not present.",
                             client_request_id=client_request_id) from None
        except models.PasswordLimitError as exc:
            # Graph's words (Azure/azure-cli#12946): the code is on the error itself and in details.
            raise GraphError(400, "TooManyAppPasswords",
                             f"Not allowed to add {exc.cap + 1} passwords. You can only add a maximum of "
                             f"{exc.cap} passwords.",
                             details=[{"target": "passwordCredentials", "code": "TooManyAppPasswords"}],
                             client_request_id=client_request_id) from None
        except models.PasswordLifetimeError as exc:
            # Graph names the policy, not the limit: the limit is read from that policy.
            message = str(exc)
            raise GraphError(400, "CredentialInvalidLifetimeAsPerAppPolicy", message,
                             details=[{"code": "InvalidKeyEndDate", "message": message, "target": "EndDate"}],
                             client_request_id=client_request_id) from None
        except models.PasswordNotFoundError as exc:
            # Not documented; Graph reports a keyId it cannot find as a resource that does not exist.
            raise GraphError(404, "Request_ResourceNotFound",
                             f"Resource '{exc.key_id}' does not exist or one of its queried "
                             "reference-property objects are not present.",
                             client_request_id=client_request_id) from None
        except models.InvalidPasswordDatesError as exc:
            raise GraphError(400, "Request_BadRequest",
                             f"Invalid value specified for property 'endDateTime' of resource "
                             f"'PasswordCredential': {exc}", client_request_id=client_request_id) from None
        response.headers.setdefault("request-id", new_id())
        response.headers.setdefault("client-request-id", client_request_id or response.headers["request-id"])
        return response

    def _throttle(self, request: Request, claims: dict[str, Any]) -> float | None:
        """429 past the plain rate or a write window, per caller (token ``sub``) and tenant.

        Returns the share of a write window used when Graph would report it (above 0.8), else
        ``None``.
        """
        tenant = str(claims.get("tid", ""))
        caller = str(claims.get("sub", ""))
        client_request_id = _safe_id(request.header("client-request-id"))
        config = self.backend.config
        retry_after = self.backend.throttle.take((tenant, caller), config.graph_requests_per_second)
        if retry_after is not None:
            raise GraphThrottled(retry_after, tenant=tenant, caller=caller, client_request_id=client_request_id)
        limits = config.write_limits
        if limits is None:
            return None
        verdict = self.backend.write_windows.take(tenant, caller, write=request.method in models.WRITE_METHODS,
                                                  limits=limits)
        if verdict.retry_after is not None:
            raise GraphThrottled(verdict.retry_after, tenant=tenant, caller=caller,
                                 client_request_id=client_request_id, scope=verdict.scope, limit="Write",
                                 information="WriteLimitExceeded", usage=verdict.usage)
        return verdict.reported_usage

    def _answer_with_usage(self, request: Request, usage: float) -> Response:
        """Route the request as the server would, and add the usage header to whatever it answers."""
        try:
            handler, request.path_params = self.router.resolve(request.method, request.path)
            response = handler(request)
        except HttpError as error:
            response = self.error_response(error)
        response.headers[USAGE_HEADER] = format_usage(usage)
        return response

    def _default_policy(self, request: Request) -> Response:
        """The tenant default app management policy: where the lifetime limit an error names is read."""
        max_days = self.backend.config.password_lifetime_max_days
        restrictions = [] if max_days is None else [{
            "restrictionType": "passwordLifetime", "state": "enabled", "maxLifetime": f"P{max_days}D",
            "restrictForAppsCreatedAfterDateTime": None}]
        return self._graph_call(request, lambda: Response.json(200, {
            "@odata.context": f"{_GRAPH_CONTEXT}#policies/defaultAppManagementPolicy/$entity",
            "id": models.DEFAULT_APP_MANAGEMENT_POLICY_ID,
            "displayName": "Default app management tenant policy",
            "description": "Default tenant policy that enforces app management restrictions on applications "
                           "and service principals.",
            "isEnabled": max_days is not None,
            "applicationRestrictions": {"passwordCredentials": restrictions, "keyCredentials": []},
            "servicePrincipalRestrictions": {"passwordCredentials": [], "keyCredentials": []},
        }))

    def _list_applications(self, request: Request) -> Response:
        tenant = self._caller_tenant(request)
        client_request_id = _safe_id(request.header("client-request-id"))
        apps = self.backend.list_applications(tenant)
        odata_filter = request.query_value("$filter")
        if odata_filter is not None:
            match = _FILTER_APP_ID.match(odata_filter)
            if match is None:
                raise GraphError(400, "Request_UnsupportedQuery", "Unsupported query.",
                                 client_request_id=client_request_id)
            apps = [app for app in apps if app.app_id.lower() == match.group("app_id").lower()]
        select = self._select(request, client_request_id)
        return self._graph_call(request, lambda: Response.json(200, {
            "@odata.context": f"{_GRAPH_CONTEXT}#applications",
            "value": [_application_json(app, select) for app in apps],
        }))

    def _get_application(self, request: Request) -> Response:
        tenant, ref = self._application_ref(request)
        select = self._select(request, _safe_id(request.header("client-request-id")))

        def action() -> Response:
            app = self.backend.get_application(tenant, **ref)
            body = {"@odata.context": f"{_GRAPH_CONTEXT}#applications/$entity",
                    **_application_json(app, select)}
            return Response.json(200, body)
        return self._graph_call(request, action)

    def _get_service_principal(self, request: Request) -> Response:
        """``GET /v1.0/servicePrincipals(appId='...')``: the application's service principal."""
        tenant = self._caller_tenant(request)
        client_request_id = _safe_id(request.header("client-request-id"))
        segment = request.path_params["sp_segment"]
        match = _SP_APP_ID_SEGMENT.match(segment)
        if match is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.",
                             client_request_id=client_request_id)
        app_id = match.group("single") if match.group("single") is not None else match.group("double")
        select = self._select(request, client_request_id, _SERVICE_PRINCIPAL_PROPERTIES,
                              "microsoft.graph.servicePrincipal")

        def action() -> Response:
            app = self.backend.get_application(tenant, app_id=app_id)
            body = {"@odata.context": f"{_GRAPH_CONTEXT}#servicePrincipals/$entity",
                    **_service_principal_json(app, select)}
            return Response.json(200, body)
        return self._graph_call(request, action)

    def _add_password(self, request: Request) -> Response:
        tenant, ref = self._application_ref(request)
        client_request_id = _safe_id(request.header("client-request-id"))
        payload = _json_object(request, client_request_id)
        credential = payload.get("passwordCredential")
        if credential is None:
            credential = {}
        if not isinstance(credential, dict):
            raise GraphError(400, "Request_BadRequest",
                             "Invalid value for parameter 'passwordCredential': an object is expected.",
                             client_request_id=client_request_id)
        display_name = credential.get("displayName")
        if display_name is not None and not isinstance(display_name, str):
            raise GraphError(400, "Request_BadRequest",
                             "Invalid value for property 'displayName': a string is expected.",
                             client_request_id=client_request_id)
        start = _optional_datetime(credential, "startDateTime", client_request_id)
        end = _optional_datetime(credential, "endDateTime", client_request_id)

        def action() -> Response:
            password, secret_text = self.backend.add_password(tenant, display_name=display_name,
                                                              start=start, end=end, **ref)
            body = {"@odata.context": f"{_GRAPH_CONTEXT}#microsoft.graph.passwordCredential",
                    **_password_json(password), "secretText": secret_text}
            return Response.json(200, body)
        return self._graph_call(request, action)

    def _remove_password(self, request: Request) -> Response:
        tenant, ref = self._application_ref(request)
        client_request_id = _safe_id(request.header("client-request-id"))
        payload = _json_object(request, client_request_id)
        key_id = payload.get("keyId")
        if not isinstance(key_id, str) or not models.is_guid(key_id):
            raise GraphError(400, "Request_BadRequest",
                             "Invalid value for parameter 'keyId': a GUID is expected.",
                             client_request_id=client_request_id)

        def action() -> Response:
            self.backend.remove_password(tenant, key_id, **ref)
            return Response.empty(204)
        return self._graph_call(request, action)

    def _select(self, request: Request, client_request_id: str | None,
                known: tuple[str, ...] = _APPLICATION_PROPERTIES,
                entity: str = "microsoft.graph.application") -> tuple[str, ...] | None:
        raw = request.query_value("$select")
        if raw is None:
            return None
        names = tuple(name.strip() for name in raw.split(",") if name.strip())
        for name in names:
            if name not in known:
                raise GraphError(400, "Request_BadRequest",
                                 f"Could not find a property named '{name}' on type "
                                 f"'{entity}'.", client_request_id=client_request_id)
        return names or None

    # -- admin ----------------------------------------------------------------------------------------

    def _admin_register_in_bulk(self, request: Request) -> Response:
        """Many app registrations at once, each with the passwords it holds already (their values
        are kept as digests only); the keyIds, never a secret, in the order given."""
        usage = ('The body is {"tenantId"?: string, "applications": [{"appId": string, "displayName"?: string, '
                 '"passwords"?: [{"secretText": string, "keyId"?: GUID, "displayName"?: string, "startDateTime"?, '
                 '"endDateTime"?: date-time}]}]}.')
        spec = _admin_json(request)
        tenant_id = spec.get("tenantId", self.backend.managed_identity_tenant_id) if isinstance(spec, dict) else None
        given = spec.get("applications") if isinstance(spec, dict) else None
        if (not isinstance(spec, dict) or set(spec) - {"tenantId", "applications"} or not isinstance(given, list)
                or not given or not isinstance(tenant_id, str) or not _SAFE_ID.fullmatch(tenant_id)
                or tenant_id.lower() in models.MULTI_TENANT_ALIASES):
            raise HttpError(400, "BadRequest", usage)
        applications = []
        try:
            for item in given:
                if (not isinstance(item, dict) or set(item) - {"appId", "displayName", "passwords"}
                        or not isinstance(item.get("appId"), str) or not _SAFE_ID.fullmatch(item["appId"])
                        or not isinstance(item.get("displayName"), str | None)
                        or not isinstance(item.get("passwords", []), list)):
                    raise HttpError(400, "BadRequest", usage)
                passwords = []
                for password in item.get("passwords", []):
                    if (not isinstance(password, dict)
                            or set(password) - {"secretText", "keyId", "displayName", "startDateTime", "endDateTime"}
                            or not isinstance(password.get("secretText"), str) or not password["secretText"]
                            or not isinstance(password.get("displayName"), str | None)
                            or (password.get("keyId") is not None and (not isinstance(password["keyId"], str)
                                                                       or not models.is_guid(password["keyId"])))):
                        raise HttpError(400, "BadRequest", usage)
                    dates = {name: models.parse_datetime(password[wire]) if password.get(wire) is not None else None
                             for name, wire in (("start", "startDateTime"), ("end", "endDateTime"))}
                    passwords.append({"secret_text": password["secretText"], "key_id": password.get("keyId"),
                                      "display_name": password.get("displayName"), **dates})
                applications.append({"app_id": item["appId"], "display_name": item.get("displayName"),
                                     "passwords": passwords})
            made = self.backend.add_applications(tenant_id, applications)
        except (ValueError, TypeError, models.InvalidPasswordDatesError) as exc:
            raise HttpError(400, "BadRequest", f"{usage} {exc}") from None
        except models.ApplicationConflictError as exc:
            raise HttpError(409, "Conflict", str(exc)) from None
        return Response.json(201, {"count": len(made),
                                   "keyIds": [[password.key_id for password in app.passwords] for app in made]})

    def _admin_register(self, request: Request) -> Response:
        spec = _admin_json(request)
        if not isinstance(spec, dict):
            raise HttpError(400, "BadRequest", "A JSON object with 'appId' and 'tenantId' is required.")
        app_id = spec.get("appId")
        tenant_id = spec.get("tenantId", self.backend.managed_identity_tenant_id)
        display_name = spec.get("displayName")
        object_id = spec.get("objectId")
        service_principal_id = spec.get("servicePrincipalId")
        if not isinstance(app_id, str) or not _SAFE_ID.fullmatch(app_id):
            raise HttpError(400, "BadRequest",
                            "'appId' must be a non-empty identifier (letters, digits, -_.:).")
        if not isinstance(tenant_id, str) or not _SAFE_ID.fullmatch(tenant_id) or (
                tenant_id.lower() in models.MULTI_TENANT_ALIASES):
            raise HttpError(400, "BadRequest", "'tenantId' must be a tenant identifier.")
        if display_name is not None and not isinstance(display_name, str):
            raise HttpError(400, "BadRequest", "'displayName' must be a string.")
        if object_id is not None and (not isinstance(object_id, str) or not models.is_guid(object_id)):
            raise HttpError(400, "BadRequest", "'objectId' must be a GUID string.")
        if service_principal_id is not None and (not isinstance(service_principal_id, str)
                                                 or not models.is_guid(service_principal_id)):
            raise HttpError(400, "BadRequest", "'servicePrincipalId' must be a GUID string.")
        try:
            app, created = self.backend.register_application(app_id=app_id, tenant_id=tenant_id,
                                                             display_name=display_name, object_id=object_id,
                                                             service_principal_id=service_principal_id)
        except models.ApplicationConflictError as exc:
            raise HttpError(409, "Conflict", str(exc)) from None
        return Response.json(201 if created else 200, {"tenantId": app.tenant_id,
                                                       "servicePrincipalId": app.service_principal_id,
                                                       **_application_json(app)})

    def _admin_config(self, request: Request) -> Response:
        spec = _admin_json(request)
        if not isinstance(spec, dict):
            raise HttpError(400, "BadRequest", "A JSON object is required.")
        unknown = set(spec) - set(_CONFIG_KEYS)
        if unknown:
            raise HttpError(400, "BadRequest", f"Unknown settings: {', '.join(sorted(unknown))}; known: "
                                               f"{', '.join(_CONFIG_KEYS)}.")
        changes: dict[str, Any] = {
            name: _NULL_MEANS[name] if value is None and name in _NULL_MEANS else value
            for name, value in ((_CONFIG_KEYS[key], value) for key, value in spec.items())}
        try:
            config = self.backend.configure(**changes)
        except models.InvalidConfigError as exc:
            raise HttpError(400, "BadRequest", str(exc)) from None
        return Response.json(200, models.config_json(config))


def _admin_json(request: Request) -> Any:
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HttpError(400, "BadRequest", "The request body is not valid JSON.") from None


def _missing_parameter(name: str) -> str:
    return f"The request body must contain the following parameter: '{name}'."


def _tenant_not_found(tenant: str) -> str:
    return (f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud. Check with your subscription administrator, this may happen "
            "if there are no active subscriptions for the tenant.")


def _client_credentials_resource(scope: str) -> str | None:
    """The one resource of a client-credentials ``scope`` (``<resource>/.default``), else ``None``."""
    scopes = [s for s in scope.split() if s.lower() not in _RESERVED_SCOPES]
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        return None
    resource = scopes[0][: -len("/.default")]
    return resource or None


def _token_problem(token: str) -> str:
    """Why a well-formed token was refused, in Graph's words."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "Access token validation failure."
    audience = claims.get("aud") if isinstance(claims, dict) else None
    if isinstance(audience, str) and audience and verify_token(token, audience=audience) is not None:
        return "Access token validation failure. Invalid audience."
    return "Access token validation failure."


def _optional_datetime(credential: dict[str, Any], name: str,
                       client_request_id: str | None) -> dt.datetime | None:
    value = credential.get(name)
    if value is None:
        return None
    try:
        return models.parse_datetime(value)
    except (ValueError, TypeError):
        raise GraphError(400, "Request_BadRequest",
                         f"Invalid value specified for property '{name}' of resource 'PasswordCredential'.",
                         client_request_id=client_request_id) from None


def _password_json(password: models.PasswordCredential) -> dict[str, Any]:
    return {
        "customKeyIdentifier": None,
        "displayName": password.display_name,
        "endDateTime": models.format_datetime(password.end),
        "hint": password.hint,
        "keyId": password.key_id,
        "secretText": None,
        "startDateTime": models.format_datetime(password.start),
    }


def _service_principal_json(app: models.Application, select: tuple[str, ...] | None = None) -> dict[str, Any]:
    full: dict[str, Any] = {
        "id": app.service_principal_id,
        "appId": app.app_id,
        "displayName": app.display_name,
        "servicePrincipalType": "Application",
        "accountEnabled": True,
        "appOwnerOrganizationId": app.tenant_id,
        "servicePrincipalNames": [app.app_id],
    }
    return full if select is None else {name: full[name] for name in select}


def _application_json(app: models.Application, select: tuple[str, ...] | None = None) -> dict[str, Any]:
    full: dict[str, Any] = {
        "id": app.object_id,
        "appId": app.app_id,
        "displayName": app.display_name,
        "createdDateTime": models.format_datetime(app.created),
        "signInAudience": "AzureADMyOrg",
        "keyCredentials": [],
        "passwordCredentials": [_password_json(p) for p in app.passwords],
    }
    return full if select is None else {name: full[name] for name in select}
