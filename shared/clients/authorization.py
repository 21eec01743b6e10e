"""What one principal may do at an Azure scope, read through Resource Manager.

A small layer over ``azure.mgmt.authorization.AuthorizationManagementClient`` (API version
2022-04-01) that answers one question, for the check step and the drift pass: at this scope,
which roles does this principal hold (each resolved to its role definition's permissions) and
which deny assignments apply to it? :mod:`shared.permissions.evaluate` then names what is missing.

How it reads, with the product's managed identity:

* role assignments: ``GET {scope}/providers/Microsoft.Authorization/roleAssignments`` with
  ``$filter=atScope() and assignedTo('{principal}')``: the principal's assignments at the scope and
  at its ancestors (what is inherited there), none below it. Group memberships are out of scope
  for this client: it resolves none itself. In Azure, ``assignedTo()`` also returns assignments to
  the groups the principal belongs to (Resource Manager resolves them, transitively); those are
  kept, each naming the group's id as its ``principal_id``. The local stand-in models no groups;
* role definitions: ``GET {roleDefinitionId}`` for each distinct role of those assignments (one
  read per role per call); an assignment whose role no longer exists grants nothing;
* deny assignments: ``GET {scope}/providers/Microsoft.Authorization/denyAssignments`` with
  ``$filter=atScope()``, kept when they apply to the principal: naming it or Everyone
  (``00000000-0000-0000-0000-000000000000``) among their principals and not among their
  ``excludePrincipals``, and, for one made above the scope, not limited to its own scope
  (``doNotApplyToChildScopes``). A deny assignment that names a group the principal is in is not
  seen as applying (groups are not resolved).

The identity needs ``Microsoft.Authorization/roleAssignments/read``, ``roleDefinitions/read`` and
``denyAssignments/read`` at the scope (Reader grants all three).

Errors are the SDK's azure-core exceptions, passed through with ``service = "Resource Manager"``
and ``scope`` (the scope asked about) set on them, so the failure table
(:mod:`shared.engine.failures`) words them: 403 (the product's identity may not read there) and
404 (no such subscription or resource group) are permanent and name the scope; 429, 5xx and lost
connections are transient; 401 is our own token (transient). No token appears in any of them.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.permissions.evaluate import Permission

if TYPE_CHECKING:
    from types import TracebackType

    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

SERVICE_NAME = "Resource Manager"
#: Azure's public cloud; sovereign clouds have their own (``RESOURCE_MANAGER_ENDPOINT``).
DEFAULT_ENDPOINT = "https://management.azure.com"
#: The principal id deny assignments use for every principal.
EVERYONE = "00000000-0000-0000-0000-000000000000"
# The SDK's client wants a subscription id for its subscription-level operations; none is used
# here (every call names its scope), so any well-formed id will do.
_UNUSED_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SCOPE = re.compile(r"/subscriptions/[0-9a-fA-F-]{36}(/resourceGroups/[^/]+(/providers(/[^/]+){3}(/[^/]+/[^/]+)*)?)?",
                    re.IGNORECASE)


@dataclass(frozen=True)
class RoleGrant:
    """A role assignment that applies at the scope, resolved to its role's permissions."""

    assignment_id: str
    scope: str  # where it is assigned: the scope asked about or one of its ancestors
    principal_id: str  # the principal's id, or a group's it belongs to
    role_definition_id: str
    role_name: str | None  # None when the role no longer exists (it then grants nothing)
    permissions: tuple[Permission, ...]


@dataclass(frozen=True)
class DenyRule:
    """A deny assignment that applies to the principal at the scope."""

    deny_assignment_id: str
    name: str
    scope: str
    permissions: tuple[Permission, ...]


@dataclass(frozen=True)
class ScopePermissions:
    """What applies to ``principal_id`` at ``scope``: its role grants and the deny assignments."""

    principal_id: str
    scope: str
    grants: tuple[RoleGrant, ...]
    denies: tuple[DenyRule, ...]

    @property
    def granted(self) -> tuple[Permission, ...]:
        """Every permissions entry of every role granted: the evaluator's ``granted_permissions``."""
        return tuple(p for grant in self.grants for p in grant.permissions)

    @property
    def denied(self) -> tuple[Permission, ...]:
        """Every permissions entry of every deny assignment that applies: its ``deny_assignments``."""
        return tuple(p for rule in self.denies for p in rule.permissions)


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(v for v in (values or ()) if isinstance(v, str))


def _covers(ancestor: str, scope: str) -> bool:
    a, s = ancestor.rstrip("/").lower(), scope.rstrip("/").lower()
    return a in ("", "/") or s == a or s.startswith(a + "/")


class AuthorizationReader:
    """Reads the role assignments, role definitions and deny assignments that apply to a principal.

    Parameters
    ----------
    endpoint
        Resource Manager's URL: ``https://management.azure.com`` in Azure's public cloud
        (``RESOURCE_MANAGER_ENDPOINT``; sovereign clouds and the local stack set their own).
    credential
        The product's managed identity (any azure-core token credential).
    scope
        The token scope; defaults to ``f"{endpoint}/.default"``. The local stack's stand-in
        serves on its own address but, as Resource Manager, takes tokens for
        ``https://management.azure.com`` (its ``RESOURCE_MANAGER_SCOPE``).
    connection_verify
        A CA bundle path for an endpoint whose certificate is not publicly trusted.
    client
        An ``AuthorizationManagementClient`` to use instead (tests); not closed by :meth:`close`.

    The SDK is imported on the first read, not when a reader is built, for cold start.
    Request and response bodies are never logged (``logging_enable=False``).
    """

    def __init__(self, endpoint: str, credential: TokenCredential, *, scope: str | None = None,
                 connection_verify: str | bool | None = None, client: Any = None) -> None:
        if not endpoint:
            raise ValueError(f"endpoint is empty: pass Resource Manager's URL, e.g. {DEFAULT_ENDPOINT}.")
        self.endpoint = endpoint.rstrip("/")
        self._credential = credential
        self._scope = scope or f"{self.endpoint}/.default"
        self._connection_verify = connection_verify
        self._given = client
        self._made: Any = None
        self._lock = threading.Lock()

    @property
    def _client(self) -> Any:
        """The SDK client, made on first use: most workers never check permissions, and the
        management SDK is a large import (cold start)."""
        if self._given is not None:
            return self._given
        with self._lock:
            if self._made is None:
                from azure.mgmt.authorization import AuthorizationManagementClient

                options: dict[str, Any] = {"logging_enable": False}
                if self._connection_verify is not None:
                    options["connection_verify"] = self._connection_verify
                self._made = AuthorizationManagementClient(
                    self._credential, _UNUSED_SUBSCRIPTION, base_url=self.endpoint,
                    credential_scopes=[self._scope], **options)
            return self._made

    def __repr__(self) -> str:
        return f"AuthorizationReader(endpoint={self.endpoint!r})"

    def permissions_at(self, principal_id: str, scope: str) -> ScopePermissions:
        """The role grants and deny assignments that apply to ``principal_id`` at ``scope``.

        ``principal_id`` is the principal's object id (for an app: its service principal's, from
        ``GraphClient.service_principal_id``, not the appId). ``scope`` is an ARM scope id:
        ``/subscriptions/<id>``, ``.../resourceGroups/<name>``, or a resource in one (a virtual
        network). Pass :attr:`ScopePermissions.granted` and :attr:`ScopePermissions.denied` to
        :func:`shared.permissions.evaluate.missing_actions`.

        Raises
        ------
        ValueError
            ``principal_id`` is not a GUID or ``scope`` is not a subscription-rooted ARM scope
            (checked before any call).
        azure.core.exceptions.HttpResponseError
            403 when the product's identity may not read role assignments, role definitions or
            deny assignments at ``scope``; ``ResourceNotFoundError`` (404) when the subscription
            or resource group does not exist; 429/5xx when Resource Manager fails. Each carries
            ``service`` and ``scope``.
        azure.core.exceptions.ServiceRequestError
            No connection (also ``ServiceResponseError``: the answer was lost).
        """
        if not _GUID.fullmatch(principal_id or ""):
            raise ValueError(f"principal_id {principal_id!r} is not an object id (a GUID).")
        if not _SCOPE.fullmatch(scope or ""):
            raise ValueError(f"scope {scope!r} is not an ARM scope such as /subscriptions/<id>/resourceGroups/<name>.")
        try:
            return self._read(principal_id.lower(), scope)
        except AzureError as exc:
            # What the failure table reads: which service, and the scope asked about.
            exc.service = SERVICE_NAME  # type: ignore[attr-defined]
            exc.scope = scope  # type: ignore[attr-defined]
            raise

    def _read(self, principal: str, scope: str) -> ScopePermissions:
        assignments = [a for a in self._client.role_assignments.list_for_scope(
            scope, filter=f"atScope() and assignedTo('{principal}')") if _covers(a.scope or "", scope)]
        roles: dict[str, tuple[str | None, tuple[Permission, ...]]] = {}
        grants = []
        for assignment in assignments:
            definition_id = assignment.role_definition_id or ""
            key = definition_id.rsplit("/", 1)[-1].lower()
            if key not in roles:
                roles[key] = self._role(definition_id)
            role_name, permissions = roles[key]
            where = f"role '{role_name}' at {assignment.scope}" if role_name else f"missing role at {assignment.scope}"
            grants.append(RoleGrant(
                assignment_id=assignment.id or "", scope=assignment.scope or "",
                principal_id=(assignment.principal_id or "").lower(), role_definition_id=definition_id,
                role_name=role_name,
                permissions=tuple(Permission(p.actions, p.not_actions, p.data_actions, p.not_data_actions,
                                             source=where) for p in permissions)))
        denies = []
        for deny in self._client.deny_assignments.list_for_scope(scope, filter="atScope()"):
            if not self._applies(deny, principal, scope):
                continue
            name = deny.deny_assignment_name or deny.name or ""
            denies.append(DenyRule(
                deny_assignment_id=deny.id or "", name=name, scope=deny.scope or "",
                permissions=tuple(Permission(_strings(p.actions), _strings(p.not_actions), _strings(p.data_actions),
                                             _strings(p.not_data_actions), source=f"deny assignment '{name}'")
                                  for p in deny.permissions or ())))
        logger.info("Read %d role assignment(s) and %d deny assignment(s) applying to %s at %s",
                    len(grants), len(denies), principal, scope)
        return ScopePermissions(principal_id=principal, scope=scope, grants=tuple(grants), denies=tuple(denies))

    def _role(self, definition_id: str) -> tuple[str | None, tuple[Permission, ...]]:
        if not definition_id:
            return None, ()
        try:
            definition = self._client.role_definitions.get_by_id(definition_id)
        except ResourceNotFoundError:
            logger.warning("Role definition %s no longer exists; its assignments grant nothing", definition_id)
            return None, ()
        return definition.role_name, tuple(
            Permission(_strings(p.actions), _strings(p.not_actions), _strings(p.data_actions),
                       _strings(p.not_data_actions)) for p in definition.permissions or ())

    @staticmethod
    def _applies(deny: Any, principal: str, scope: str) -> bool:
        if deny.do_not_apply_to_child_scopes and (deny.scope or "").rstrip("/").lower() != scope.rstrip("/").lower():
            return False
        if not _covers(deny.scope or "", scope):
            return False
        named = {(p.id or "").lower() for p in deny.principals or ()}
        excluded = {(p.id or "").lower() for p in deny.exclude_principals or ()}
        return bool(named & {principal, EVERYONE}) and principal not in excluded

    # Lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the SDK client's connections (unless it was passed in)."""
        with self._lock:
            made, self._made = self._made, None
        if made is not None:
            made.close()

    def __enter__(self) -> AuthorizationReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
