"""Microsoft.Authorization's REST API over :mod:`devstack.httpbase`, as azure-mgmt-authorization 4.0.0
calls it (API version 2022-04-01, the default of the three operation groups served here).

Routes are extension resources under any scope, matched without regard to the case of the
provider and type segments, as ARM matches them:

* ``GET {scope}/providers/Microsoft.Authorization/roleAssignments`` (``$filter`` ``atScope()``,
  ``principalId eq '{id}'``, ``assignedTo('{id}')``, ``atScope() and assignedTo('{id}')``; paged
  with an absolute ``nextLink`` carrying ``$skipToken``), ``GET/PUT/DELETE .../roleAssignments/{name}``
  (``get_by_id`` and ``create_by_id`` send the same paths);
* ``GET {scope}/providers/Microsoft.Authorization/roleDefinitions`` (``$filter`` ``roleName eq '...'``
  or ``type eq '...'``), ``GET/PUT .../roleDefinitions/{id}``, and the tenant form
  ``/providers/Microsoft.Authorization/roleDefinitions/{id}``;
* ``GET {scope}/providers/Microsoft.Authorization/denyAssignments`` (``$filter`` ``atScope()``,
  ``denyAssignmentName eq``, ``principalId eq``, ``gdprExportPrincipalId eq``), ``GET .../denyAssignments/{id}``.

Every call needs a bearer token the identity stand-in issued for Resource Manager
(``https://management.azure.com`` or ``https://management.core.windows.net``), from the
subscription's tenant; else 401 with ARM's ``WWW-Authenticate`` challenge. The admin API
(``/_devstack/subscriptions``, ``roleDefinitions``, ``roleAssignments``, ``denyAssignments``,
``config``) seeds without a token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

from devstack.arm import models
from devstack.arm.errors import (
    AuthorizationFailed,
    BadRequest,
    InvalidApiVersion,
    MissingApiVersion,
    Unauthenticated,
    UnsupportedFilter,
    UnsupportedRoleAssignmentFilter,
)
from devstack.httpbase import HttpError, Request, Response, ServiceApp
from devstack.tokens import b64url, bearer_token, peek_claims, verify_token

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: The audiences ARM takes tokens for (the public cloud's two spellings of its resource).
AUDIENCES: Final = ("https://management.azure.com", "https://management.core.windows.net")
API_VERSIONS: Final = {
    "roleAssignments": ("2015-07-01", "2018-01-01-preview", "2018-09-01-preview", "2020-04-01-preview",
                        "2020-10-01-preview", "2022-04-01"),
    "roleDefinitions": ("2015-07-01", "2018-01-01-preview", "2022-04-01", "2022-05-01-preview"),
    "denyAssignments": ("2018-07-01-preview", "2022-04-01"),
}
_ACTIONS: Final = {
    ("roleAssignments", "GET"): "Microsoft.Authorization/roleAssignments/read",
    ("roleAssignments", "PUT"): "Microsoft.Authorization/roleAssignments/write",
    ("roleAssignments", "DELETE"): "Microsoft.Authorization/roleAssignments/delete",
    ("roleDefinitions", "GET"): "Microsoft.Authorization/roleDefinitions/read",
    ("roleDefinitions", "PUT"): "Microsoft.Authorization/roleDefinitions/write",
    ("denyAssignments", "GET"): "Microsoft.Authorization/denyAssignments/read",
}
_SCOPE = r"(?P<scope>(?:/[^/]+)*?)"
_PROVIDER = r"/(?i:providers/Microsoft\.Authorization)"
_CONFIG_KEYS: Final = {"pageSize": "page_size", "callerAccess": "caller_access"}

_LITERAL = r"'(?P<{name}>[^']*)'"
_AT_SCOPE = re.compile(r"^\s*atScope\(\)\s*$", re.IGNORECASE)
_PRINCIPAL_EQ = re.compile(r"^\s*principalId\s+eq\s+" + _LITERAL.format(name="id") + r"\s*$", re.IGNORECASE)
_ASSIGNED_TO = re.compile(r"^\s*assignedTo\(\s*" + _LITERAL.format(name="id") + r"\s*\)\s*$", re.IGNORECASE)
_AT_SCOPE_AND_ASSIGNED = re.compile(
    r"^\s*(?:atScope\(\)\s+and\s+assignedTo\(\s*'(?P<a>[^']*)'\s*\)|assignedTo\(\s*'(?P<b>[^']*)'\s*\)\s+and\s+"
    r"atScope\(\))\s*$", re.IGNORECASE)
_DENY_NAME_EQ = re.compile(r"^\s*denyAssignmentName\s+eq\s+" + _LITERAL.format(name="value") + r"\s*$", re.IGNORECASE)
_GDPR_EQ = re.compile(r"^\s*gdprExportPrincipalId\s+eq\s+" + _LITERAL.format(name="id") + r"\s*$", re.IGNORECASE)
_ROLE_NAME_EQ = re.compile(r"^\s*roleName\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*$", re.IGNORECASE)
_TYPE_EQ = re.compile(r"^\s*type\s+eq\s+'(?P<value>BuiltInRole|CustomRole)'\s*$", re.IGNORECASE)
_SAFE_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")


def parse_assignment_filter(text: str | None) -> models.AssignmentFilter:
    """A role assignment list's ``$filter``; ARM refuses ``atScope()`` with ``principalId eq``."""
    if text is None or not text.strip():
        return models.AssignmentFilter()
    if _AT_SCOPE.match(text):
        return models.AssignmentFilter(at_scope=True)
    for pattern in (_PRINCIPAL_EQ, _ASSIGNED_TO):
        match = pattern.match(text)
        if match and match.group("id"):
            return models.AssignmentFilter(principal_id=match.group("id"))
    match = _AT_SCOPE_AND_ASSIGNED.match(text)
    if match and (match.group("a") or match.group("b")):
        return models.AssignmentFilter(at_scope=True, principal_id=match.group("a") or match.group("b"))
    raise UnsupportedRoleAssignmentFilter(text)


def parse_deny_filter(text: str | None) -> models.DenyFilter:
    if text is None or not text.strip():
        return models.DenyFilter()
    if _AT_SCOPE.match(text):
        return models.DenyFilter(at_scope=True)
    match = _DENY_NAME_EQ.match(text)
    if match and match.group("value"):
        return models.DenyFilter(name=match.group("value"))
    match = _PRINCIPAL_EQ.match(text)
    if match and match.group("id"):
        return models.DenyFilter(principal_id=match.group("id"))
    match = _GDPR_EQ.match(text)
    if match and match.group("id"):
        return models.DenyFilter(gdpr_principal_id=match.group("id"))
    raise UnsupportedFilter(text, "'atScope()', 'denyAssignmentName eq '{name}'', 'principalId eq '{id}'' or "
                                  "'gdprExportPrincipalId eq '{id}''")


def _permission_blocks(value: Any, what: str) -> tuple[models.PermissionBlock, ...]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise BadRequest("InvalidRequestContent", f"'{what}' must be an array of permission objects.")
    return tuple(_permission_block(item, what) for item in value)


def _permission_block(item: dict[str, Any], what: str) -> models.PermissionBlock:
    lists: dict[str, tuple[str, ...]] = {}
    for wire, attribute in (("actions", "actions"), ("notActions", "not_actions"), ("dataActions", "data_actions"),
                            ("notDataActions", "not_data_actions")):
        value = item.get(wire)
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise BadRequest("InvalidRequestContent", f"'{what}.{wire}' must be an array of non-empty strings.")
        lists[attribute] = tuple(value)
    return models.PermissionBlock(**lists)


def _json_object(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(request.body) if request.body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise BadRequest("InvalidRequestContent", "The request content was invalid and could not be deserialized.")
    return payload


def _properties(payload: dict[str, Any]) -> dict[str, Any]:
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise BadRequest("InvalidRequestContent", "The request content must have a 'properties' object.")
    return properties


def _optional_str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("InvalidRequestContent", f"'{key}' must be a string.")
    return value


def _principals(value: Any, what: str) -> tuple[models.Principal, ...]:
    """``[{"id", "type"?}]`` or plain ids; ``type`` defaults to what the id is (Everyone's is SystemDefined)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest("InvalidRequestContent", f"'{what}' must be an array.")
    out = []
    for item in value:
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise BadRequest("InvalidRequestContent", f"Each of '{what}' must be an id or an object with 'id'.")
        default = "SystemDefined" if item["id"] == models.EVERYONE else "ServicePrincipal"
        kind = item.get("type", default)
        if not isinstance(kind, str):
            raise BadRequest("InvalidRequestContent", f"'{what}[].type' must be a string.")
        out.append(models.Principal(id=item["id"].lower(), type=kind))
    return tuple(out)


class ArmApp(ServiceApp):
    """Microsoft.Authorization's role assignments, role definitions and deny assignments over one backend."""

    name = "arm"

    def __init__(self, backend: models.ArmBackend, *, authority: str) -> None:
        super().__init__()
        self.backend = backend
        self.authority = authority.rstrip("/") + "/"
        add = self.router.add
        for kind, get_one, list_all in (
                ("roleAssignments", self._get_assignment, self._list_assignments),
                ("roleDefinitions", self._get_definition, self._list_definitions),
                ("denyAssignments", self._get_deny, self._list_denies)):
            collection = f"{_SCOPE}{_PROVIDER}/(?i:{kind})"
            add("GET", collection, list_all)
            add("GET", collection + "/{name}", get_one)
        assignment = f"{_SCOPE}{_PROVIDER}/(?i:roleAssignments)/{{name}}"
        add("PUT", assignment, self._put_assignment)
        add("DELETE", assignment, self._delete_assignment)
        add("PUT", f"{_SCOPE}{_PROVIDER}/(?i:roleDefinitions)/{{name}}", self._put_definition)

    # -- ServiceApp hooks -----------------------------------------------------------------------

    def error_response(self, error: HttpError) -> Response:
        return self._json(error.status, {"error": {"code": error.code, "message": error.message}}, error.headers)

    def before_request(self, request: Request) -> Response | None:
        """ARM's front door: the token first, then the api-version the resource type takes."""
        self._claims(request)
        kind = self._kind(request.path)
        version = request.query_value("api-version")
        if not version:
            raise MissingApiVersion
        if kind is not None and version not in API_VERSIONS[kind]:
            raise InvalidApiVersion(version, kind, API_VERSIONS[kind])
        return None

    def reset(self) -> None:
        self.backend.reset()

    def state(self) -> Any:
        return self.backend.snapshot()

    def admin(self, request: Request, subpath: str) -> Response | None:
        routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("subscriptions", "POST"): self._admin_subscription,
            ("roleDefinitions", "POST"): self._admin_role_definition,
            ("roleAssignments", "POST"): self._admin_role_assignment,
            ("denyAssignments", "POST"): self._admin_deny_assignment,
            ("config", "POST"): self._admin_config,
            ("config", "GET"): lambda _: Response.json(200, models.config_json(self.backend.config)),
        }
        handler = routes.get((subpath, request.method))
        return handler(request) if handler is not None else None

    # -- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _kind(path: str) -> str | None:
        match = re.search(r"/providers/Microsoft\.Authorization/(roleAssignments|roleDefinitions|denyAssignments)"
                          r"(?:/[^/]+)?/?$", path, re.IGNORECASE)
        if match is None:
            return None
        return next(kind for kind in API_VERSIONS if kind.lower() == match.group(1).lower())

    def _unauthenticated(self, code: str, message: str, description: str) -> Unauthenticated:
        return Unauthenticated(code, message, authority=self.authority, description=description)

    def _claims(self, request: Request) -> dict[str, Any]:
        token = bearer_token(request.header("authorization"))
        if token is None:
            raise self._unauthenticated("AuthenticationFailed",
                                        "Authentication failed. The 'Authorization' header is missing.",
                                        "The authentication failed because of missing 'Authorization' header.")
        for audience in AUDIENCES:
            claims = verify_token(token, audience=audience)
            if claims is not None:
                return claims
        peeked = peek_claims(token)
        other = peeked.get("aud") if peeked is not None else None
        if isinstance(other, str) and other.rstrip("/") not in AUDIENCES and verify_token(
                token, audience=other) is not None:
            allowed = "','".join(f"{a}/" for a in AUDIENCES)
            raise self._unauthenticated(
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource '{other}'. It should exactly "
                f"match with one of the allowed audiences '{allowed}'.",
                "The access token has been obtained for wrong audience or resource.")
        raise self._unauthenticated("InvalidAuthenticationToken", "The access token is invalid.",
                                    "The access token is invalid.")

    def _authorize(self, request: Request, kind: str, scope: models.Scope, shown: str) -> None:
        """The subscription's tenant must have issued the token; with ``callerAccess: rbac`` the caller
        needs the operation's action at the scope through its own role assignments."""
        claims = self._claims(request)
        subscription = self.backend.check_scope(scope)
        tenant = str(claims.get("tid", "")).lower()
        if subscription is not None and tenant != subscription.tenant_id:
            raise self._unauthenticated(
                "InvalidAuthenticationTokenTenant",
                f"The access token is from the wrong issuer 'https://sts.windows.net/{tenant}/'. It must match the "
                f"tenant 'https://sts.windows.net/{subscription.tenant_id}/' associated with this subscription.",
                "The access token is from the wrong issuer.")
        if self.backend.config.caller_access != "rbac" or scope.is_root:
            return
        caller = str(claims.get("oid") or claims.get("sub") or "")
        action = _ACTIONS[(kind, request.method)]
        if not self.backend.allows(caller, action, scope):
            raise AuthorizationFailed(caller, action, shown)

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        request_id = str(uuid.uuid4())
        merged = {"x-ms-request-id": request_id, "x-ms-correlation-request-id": request_id,
                  "Cache-Control": "no-cache", **(headers or {})}
        return Response.json(status, payload, merged)

    @staticmethod
    def _base_url(request: Request) -> str:
        host = request.header("host") or ""
        return f"https://{host if _SAFE_HOST.fullmatch(host) else '127.0.0.1'}"

    def _page(self, request: Request, items: Sequence[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
        """One page of ``items`` and an absolute ``nextLink`` with ``$skipToken`` when more remain."""
        size = self.backend.config.page_size
        token = request.query_value("$skipToken") or request.query_value("$skiptoken")
        offset = 0
        if token:
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["offset"])
            except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
                raise BadRequest("InvalidSkipToken", "The skip token is invalid.") from None
            if offset < 0:
                raise BadRequest("InvalidSkipToken", "The skip token is invalid.")
        page = items[offset:offset + size]
        body: dict[str, Any] = {"value": [render(item) for item in page]}
        if offset + size < len(items):
            query = {name: values[-1] for name, values in request.query.items() if name.lower() != "$skiptoken"}
            query["$skipToken"] = b64url(json.dumps({"offset": offset + size}).encode())
            body["nextLink"] = f"{self._base_url(request)}{request.path}?{urlencode(query, quote_via=quote)}"
        return self._json(200, body)

    @staticmethod
    def _scope(request: Request) -> models.Scope:
        return models.parse_scope(request.path_params.get("scope", ""))

    # -- rendering ------------------------------------------------------------------------------

    @staticmethod
    def _assignment_json(assignment: models.RoleAssignment) -> dict[str, Any]:
        scope = assignment.scope
        return {
            "properties": {
                "roleDefinitionId": models.role_definition_id(scope, assignment.role_definition_name),
                "principalId": assignment.principal_id,
                "principalType": assignment.principal_type,
                "scope": scope.text,
                "condition": None,
                "conditionVersion": None,
                "createdOn": models.format_datetime(assignment.created),
                "updatedOn": models.format_datetime(assignment.updated),
                "createdBy": assignment.created_by,
                "updatedBy": assignment.created_by,
                "delegatedManagedIdentityResourceId": None,
                "description": assignment.description,
            },
            "id": f"{scope.prefix()}/providers/{models.PROVIDER}/roleAssignments/{assignment.name}",
            "type": "Microsoft.Authorization/roleAssignments",
            "name": assignment.name,
        }

    @staticmethod
    def _definition_json(definition: models.RoleDefinition, scope: models.Scope) -> dict[str, Any]:
        return {
            "properties": {
                "roleName": definition.role_name,
                "type": definition.role_type,
                "description": definition.description,
                "assignableScopes": list(definition.assignable_scopes),
                "permissions": [block.to_json() for block in definition.permissions],
                "createdOn": models.format_datetime(definition.created),
                "updatedOn": models.format_datetime(definition.updated),
                "createdBy": definition.created_by,
                "updatedBy": definition.created_by,
            },
            "id": models.role_definition_id(scope, definition.name),
            "type": "Microsoft.Authorization/roleDefinitions",
            "name": definition.name,
        }

    @staticmethod
    def _deny_json(deny: models.DenyAssignment, *, names_only: bool = False) -> dict[str, Any]:
        properties: dict[str, Any] = {"denyAssignmentName": deny.deny_assignment_name,
                                      "description": deny.description}
        if not names_only:
            properties.update({
                "permissions": [block.to_json() for block in deny.permissions],
                "scope": deny.scope.text,
                "doNotApplyToChildScopes": deny.do_not_apply_to_child_scopes,
                "principals": [p.to_json() for p in deny.principals],
                "excludePrincipals": [p.to_json() for p in deny.exclude_principals],
                "isSystemProtected": deny.is_system_protected,
                "createdOn": models.format_datetime(deny.created),
                "updatedOn": models.format_datetime(deny.created),
                "createdBy": None,
                "updatedBy": None,
            })
        return {"properties": properties,
                "id": f"{deny.scope.prefix()}/providers/{models.PROVIDER}/denyAssignments/{deny.name}",
                "type": "Microsoft.Authorization/denyAssignments",
                "name": deny.name}

    # -- role assignments -----------------------------------------------------------------------

    def _list_assignments(self, request: Request) -> Response:
        scope = self._scope(request)
        self._authorize(request, "roleAssignments", scope, f"{scope.prefix()}/providers/{models.PROVIDER}")
        flt = parse_assignment_filter(request.query_value("$filter"))
        return self._page(request, self.backend.list_role_assignments(scope, flt), self._assignment_json)

    def _get_assignment(self, request: Request) -> Response:
        scope = self._scope(request)
        name = request.path_params["name"]
        self._authorize(request, "roleAssignments", scope,
                        f"{scope.prefix()}/providers/{models.PROVIDER}/roleAssignments/{name}")
        return self._json(200, self._assignment_json(self.backend.get_role_assignment(scope, name)))

    def _put_assignment(self, request: Request) -> Response:
        scope = self._scope(request)
        name = request.path_params["name"]
        self._authorize(request, "roleAssignments", scope,
                        f"{scope.prefix()}/providers/{models.PROVIDER}/roleAssignments/{name}")
        properties = _properties(_json_object(request))
        if properties.get("condition") is not None:
            raise BadRequest("UnsupportedCondition", "Role assignment conditions are not modelled by the local stack.")
        role_definition_id = _optional_str(properties, "roleDefinitionId")
        principal_id = _optional_str(properties, "principalId")
        if role_definition_id is None or principal_id is None:
            raise BadRequest("InvalidRequestContent", "'roleDefinitionId' and 'principalId' are required.")
        claims = self._claims(request)
        assignment, created = self.backend.create_role_assignment(
            scope, name, role_definition_name=models.parse_role_definition_id(role_definition_id),
            principal_id=principal_id,
            principal_type=_optional_str(properties, "principalType") or "ServicePrincipal",
            description=_optional_str(properties, "description"),
            created_by=str(claims.get("oid") or "") or None)
        return self._json(201 if created else 200, self._assignment_json(assignment))

    def _delete_assignment(self, request: Request) -> Response:
        scope = self._scope(request)
        name = request.path_params["name"]
        self._authorize(request, "roleAssignments", scope,
                        f"{scope.prefix()}/providers/{models.PROVIDER}/roleAssignments/{name}")
        removed = self.backend.delete_role_assignment(scope, name)
        if removed is None:
            return Response.empty(204, {"x-ms-request-id": str(uuid.uuid4())})
        return self._json(200, self._assignment_json(removed))

    # -- role definitions -------------------------------------------------------------------------

    def _list_definitions(self, request: Request) -> Response:
        scope = self._scope(request)
        self._authorize(request, "roleDefinitions", scope, f"{scope.prefix()}/providers/{models.PROVIDER}")
        text = request.query_value("$filter")
        role_name = role_type = None
        if text is not None and text.strip():
            match = _ROLE_NAME_EQ.match(text)
            if match:
                role_name = match.group("value").replace("''", "'")
            elif (match := _TYPE_EQ.match(text)) is not None:
                role_type = match.group("value")
            else:
                raise UnsupportedFilter(text, "'roleName eq '{value}'' or 'type eq '{value}''")
        definitions = self.backend.list_role_definitions(scope, role_name=role_name, role_type=role_type)
        return self._page(request, definitions, lambda d: self._definition_json(d, scope))

    def _get_definition(self, request: Request) -> Response:
        scope = self._scope(request)
        name = request.path_params["name"]
        self._authorize(request, "roleDefinitions", scope,
                        f"{scope.prefix()}/providers/{models.PROVIDER}/roleDefinitions/{name}")
        return self._json(200, self._definition_json(self.backend.get_role_definition(name), scope))

    def _put_definition(self, request: Request) -> Response:
        scope = self._scope(request)
        name = request.path_params["name"]
        self._authorize(request, "roleDefinitions", scope,
                        f"{scope.prefix()}/providers/{models.PROVIDER}/roleDefinitions/{name}")
        properties = _properties(_json_object(request))
        definition = self._store_definition(name, properties, created_by=str(self._claims(request).get("oid") or ""))
        # The SDK takes only 201 here, for a new role and an update alike.
        return self._json(201, self._definition_json(definition, scope))

    def _store_definition(self, name: str, properties: dict[str, Any], *,
                          created_by: str | None) -> models.RoleDefinition:
        role_name = _optional_str(properties, "roleName")
        if not role_name:
            raise BadRequest("InvalidRequestContent", "'roleName' is required.")
        if "permissions" in properties:
            permissions = _permission_blocks(properties["permissions"], "permissions")
        else:
            permissions = (_permission_block(properties, "properties"),)
        scopes = properties.get("assignableScopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise BadRequest("InvalidRequestContent", "'assignableScopes' must be an array of scopes.")
        definition, _ = self.backend.put_role_definition(
            name, role_name=role_name, description=_optional_str(properties, "description") or "",
            permissions=permissions, assignable_scopes=tuple(models.parse_scope(s).text for s in scopes),
            created_by=created_by or None)
        return definition

    # -- deny assignments -------------------------------------------------------------------------

    def _list_denies(self, request: Request) -> Response:
        scope = self._scope(request)
        self._authorize(request, "denyAssignments", scope, f"{scope.prefix()}/providers/{models.PROVIDER}")
        flt = parse_deny_filter(request.query_value("$filter"))
        names_only = flt.gdpr_principal_id is not None
        return self._page(request, self.backend.list_deny_assignments(scope, flt),
                          lambda d: self._deny_json(d, names_only=names_only))

    def _get_deny(self, request: Request) -> Response:
        scope = self._scope(request)
        name = request.path_params["name"]
        self._authorize(request, "denyAssignments", scope,
                        f"{scope.prefix()}/providers/{models.PROVIDER}/denyAssignments/{name}")
        return self._json(200, self._deny_json(self.backend.get_deny_assignment(scope, name)))

    # -- admin ----------------------------------------------------------------------------------

    def _admin_subscription(self, request: Request) -> Response:
        spec = _json_object(request)
        subscription_id = _optional_str(spec, "subscriptionId")
        groups = spec.get("resourceGroups", [])
        if subscription_id is None or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise BadRequest("InvalidRequestContent",
                             'The body is {"subscriptionId", "displayName"?, "tenantId"?, "resourceGroups"?: [names]}.')
        subscription = self.backend.add_subscription(subscription_id, display_name=_optional_str(spec, "displayName"),
                                                     tenant_id=_optional_str(spec, "tenantId"), resource_groups=groups)
        return Response.json(200, {"subscriptionId": subscription.subscription_id,
                                   "displayName": subscription.display_name, "tenantId": subscription.tenant_id,
                                   "resourceGroups": list(subscription.resource_groups)})

    def _seed_definition(self, spec: dict[str, Any]) -> models.RoleDefinition:
        """A custom role from ``{"roleName", "name"?, "description"?, "assignableScopes"?, and
        "permissions": [...] or flat "actions"/"notActions"/"dataActions"/"notDataActions"}``;
        assignable scopes default to each subscription the stand-in knows and make theirs exist."""
        scopes = spec.get("assignableScopes")
        if scopes is None:
            scopes = [f"/subscriptions/{s.subscription_id}" for s in self.backend.subscriptions()]
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
            raise BadRequest("InvalidRequestContent",
                             "'assignableScopes' must be a non-empty array of scopes (or a subscription must exist).")
        for scope in scopes:
            self.backend.ensure_scope(models.parse_scope(scope))
        name = _optional_str(spec, "name") or str(uuid.uuid4())
        return self._store_definition(name, {**spec, "assignableScopes": scopes}, created_by=None)

    def _admin_role_definition(self, request: Request) -> Response:
        definition = self._seed_definition(_json_object(request))
        return Response.json(201, self._definition_json(definition, models.Scope("/")))

    def _admin_role_assignment(self, request: Request) -> Response:
        """``{"scope", "principalId", one of "roleDefinitionId" | "roleName" | "roleDefinition": {...},
        "principalType"?, "name"?, "description"?}``: makes the scope's subscription and resource
        group, and with ``roleDefinition`` the custom role too, then assigns it."""
        spec = _json_object(request)
        scope_text = _optional_str(spec, "scope")
        principal_id = _optional_str(spec, "principalId")
        if scope_text is None or principal_id is None:
            raise BadRequest("InvalidRequestContent", "'scope' and 'principalId' are required.")
        scope = models.parse_scope(scope_text)
        self.backend.ensure_scope(scope)
        inline = spec.get("roleDefinition")
        role_definition_id = _optional_str(spec, "roleDefinitionId")
        role_name = _optional_str(spec, "roleName")
        if sum(x is not None for x in (inline, role_definition_id, role_name)) != 1:
            raise BadRequest("InvalidRequestContent",
                             "Give exactly one of 'roleDefinitionId', 'roleName' or 'roleDefinition'.")
        if inline is not None:
            if not isinstance(inline, dict):
                raise BadRequest("InvalidRequestContent", "'roleDefinition' must be an object.")
            definition = self._seed_definition({"assignableScopes": [scope.subscription_scope.text]
                                                if scope.subscription_scope else None, **inline})
        elif role_name is not None:
            definition = self.backend.find_role_by_name(role_name)
        else:
            definition = self.backend.get_role_definition(models.parse_role_definition_id(role_definition_id or ""))
        assignment, created = self.backend.create_role_assignment(
            scope, _optional_str(spec, "name") or str(uuid.uuid4()), role_definition_name=definition.name,
            principal_id=principal_id, principal_type=_optional_str(spec, "principalType") or "ServicePrincipal",
            description=_optional_str(spec, "description"))
        return Response.json(201 if created else 200, self._assignment_json(assignment))

    def _admin_deny_assignment(self, request: Request) -> Response:
        """``{"scope", "denyAssignmentName", "principals": [ids or {"id","type"}], "excludePrincipals"?,
        "permissions": [...] or flat "actions"/"notActions"/..., "doNotApplyToChildScopes"?,
        "description"?, "name"?}``."""
        spec = _json_object(request)
        scope_text = _optional_str(spec, "scope")
        deny_name = _optional_str(spec, "denyAssignmentName")
        if scope_text is None or not deny_name:
            raise BadRequest("InvalidRequestContent", "'scope' and 'denyAssignmentName' are required.")
        scope = models.parse_scope(scope_text)
        self.backend.ensure_scope(scope)
        if "permissions" in spec:
            permissions = _permission_blocks(spec["permissions"], "permissions")
        else:
            permissions = (_permission_block(spec, "body"),)
        child = spec.get("doNotApplyToChildScopes", False)
        if not isinstance(child, bool):
            raise BadRequest("InvalidRequestContent", "'doNotApplyToChildScopes' must be a boolean.")
        deny = self.backend.add_deny_assignment(
            scope, deny_assignment_name=deny_name, permissions=permissions,
            principals=_principals(spec.get("principals"), "principals"),
            exclude_principals=_principals(spec.get("excludePrincipals"), "excludePrincipals"),
            description=_optional_str(spec, "description") or "", do_not_apply_to_child_scopes=child,
            name=_optional_str(spec, "name"))
        return Response.json(201, self._deny_json(deny))

    def _admin_config(self, request: Request) -> Response:
        spec = _json_object(request)
        unknown = set(spec) - set(_CONFIG_KEYS)
        if unknown:
            raise BadRequest("InvalidRequestContent",
                             f"Unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(_CONFIG_KEYS)}.")
        try:
            config = self.backend.configure(**{_CONFIG_KEYS[key]: value for key, value in spec.items()})
        except ValueError as exc:
            raise BadRequest("InvalidRequestContent", str(exc)) from None
        return Response.json(200, models.config_json(config))
