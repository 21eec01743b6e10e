"""Pure-Python backend of the Resource Manager stand-in: subscriptions, resource groups, role
definitions, role assignments and deny assignments, as Microsoft.Authorization keeps them.

No HTTP here: ``routes.py`` parses requests into the typed arguments below and renders the
records. Scopes compare without regard to case, as ARM's do, and keep the spelling they were
created with. What is modelled of ARM's rules, and what is not, is in ``devstack/COVERAGE.md``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from devstack.arm.errors import (
    BadRequest,
    DenyAssignmentNotFound,
    InvalidScope,
    InvalidSubscriptionId,
    ResourceGroupNotFound,
    RoleAssignmentExists,
    RoleAssignmentNotFound,
    RoleDefinitionNameExists,
    RoleDefinitionNotFound,
    SubscriptionNotFound,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

#: The principal id a deny assignment names to apply to every principal ("Everyone").
EVERYONE: Final = "00000000-0000-0000-0000-000000000000"
PROVIDER: Final = "Microsoft.Authorization"
PRINCIPAL_TYPES: Final = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SEGMENT = re.compile(r"[^/?#]{1,260}")
_ROLE_DEFINITION_ID = re.compile(
    r"^(?:/subscriptions/(?P<sub>[^/]+))?/providers/Microsoft\.Authorization/roleDefinitions/(?P<name>[^/]+)$",
    re.IGNORECASE)


def is_guid(value: str) -> bool:
    return _GUID.fullmatch(value) is not None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- scopes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """An ARM scope: ``/`` (the tenant root), a subscription, a resource group, or a resource in one.

    ``text`` keeps the spelling it was given (without a trailing slash); ``key`` is what it is
    compared by.
    """

    text: str
    subscription_id: str | None = None
    resource_group: str | None = None

    @property
    def key(self) -> str:
        return self.text.lower()

    @property
    def is_root(self) -> bool:
        return self.text == "/"

    def covers(self, other: Scope) -> bool:
        """Whether this scope is ``other`` or one of its ancestors (what applies there is inherited)."""
        return self.is_root or other.key == self.key or other.key.startswith(self.key + "/")

    def prefix(self) -> str:
        """The scope as the start of an id: ``""`` for the root, so ids never begin ``//``."""
        return "" if self.is_root else self.text

    @property
    def subscription_scope(self) -> Scope | None:
        if self.subscription_id is None:
            return None
        return Scope(f"/subscriptions/{self.subscription_id}", self.subscription_id)


def parse_scope(text: str) -> Scope:
    """Parse an ARM scope; raise :class:`InvalidScope` (or ``InvalidSubscriptionId``) when it is not one.

    Accepted: ``/``, ``/subscriptions/{guid}``, ``.../resourceGroups/{name}``, and a resource below a
    resource group, ``.../providers/{namespace}/{type}/{name}[/{type}/{name}...]``. Management
    groups are not modelled.
    """
    raw = text.strip()
    if raw in ("", "/"):
        return Scope("/")
    trimmed = raw.rstrip("/")
    if not trimmed.startswith("/"):
        trimmed = "/" + trimmed
    parts = trimmed.split("/")[1:]
    if any(not _SEGMENT.fullmatch(part) for part in parts):
        raise InvalidScope(text)
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise InvalidScope(text)
    subscription_id = parts[1]
    if not is_guid(subscription_id):
        raise InvalidSubscriptionId(subscription_id)
    if len(parts) == 2:
        return Scope(trimmed, subscription_id)
    if len(parts) < 4 or parts[2].lower() != "resourcegroups":
        raise InvalidScope(text)
    group = parts[3]
    rest = parts[4:]
    if rest and (len(rest) < 4 or rest[0].lower() != "providers" or len(rest[2:]) % 2):
        raise InvalidScope(text)
    return Scope(trimmed, subscription_id, group)


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermissionBlock:
    """One entry of a role definition's or a deny assignment's ``permissions``."""

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {"actions": list(self.actions), "notActions": list(self.not_actions),
                "dataActions": list(self.data_actions), "notDataActions": list(self.not_data_actions)}


@dataclass(frozen=True)
class RoleDefinition:
    name: str  # the GUID, lower case
    role_name: str
    description: str
    role_type: str  # "BuiltInRole" or "CustomRole"
    permissions: tuple[PermissionBlock, ...]
    assignable_scopes: tuple[str, ...]
    created: dt.datetime
    updated: dt.datetime
    created_by: str | None = None


@dataclass(frozen=True)
class RoleAssignment:
    name: str  # the GUID, lower case
    scope: Scope
    role_definition_name: str
    principal_id: str
    principal_type: str
    description: str | None
    created: dt.datetime
    updated: dt.datetime
    created_by: str | None = None


@dataclass(frozen=True)
class Principal:
    id: str
    type: str  # "User", "Group", "ServicePrincipal" or "SystemDefined" (Everyone)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.id == EVERYONE:
            out["displayName"] = "All Principals"
        return out


@dataclass(frozen=True)
class DenyAssignment:
    name: str
    deny_assignment_name: str
    description: str
    permissions: tuple[PermissionBlock, ...]
    scope: Scope
    do_not_apply_to_child_scopes: bool
    principals: tuple[Principal, ...]
    exclude_principals: tuple[Principal, ...]
    created: dt.datetime
    is_system_protected: bool = True

    def applies_to(self, principal_id: str) -> bool:
        """Named directly or through Everyone, and not excluded (group membership is not modelled)."""
        wanted = principal_id.lower()
        named = any(p.id.lower() in (wanted, EVERYONE) for p in self.principals)
        return named and not any(p.id.lower() == wanted for p in self.exclude_principals)


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    display_name: str
    tenant_id: str
    resource_groups: tuple[str, ...] = ()

    def has_group(self, name: str) -> bool:
        return any(group.lower() == name.lower() for group in self.resource_groups)


# -- filters (parsed by the wire layer) ---------------------------------------------------------


@dataclass(frozen=True)
class AssignmentFilter:
    """A role assignment list's ``$filter``: ``atScope()``, ``principalId eq``, ``assignedTo()``."""

    at_scope: bool = False
    principal_id: str | None = None


@dataclass(frozen=True)
class DenyFilter:
    """A deny assignment list's ``$filter``; ``gdpr_principal_id`` also matches ``excludePrincipals``."""

    at_scope: bool = False
    name: str | None = None
    principal_id: str | None = None
    gdpr_principal_id: str | None = None


@dataclass(frozen=True)
class ArmConfig:
    """Run-time settings: ``page_size`` (items per page of a list, 1-1000); ``caller_access``
    ``open`` (any valid token reads and writes everything) or ``rbac`` (the caller needs the
    operation's action through its own role assignments here, as in Azure)."""

    page_size: int = DEFAULT_PAGE_SIZE
    caller_access: str = "open"

    def __post_init__(self) -> None:
        size = self.page_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}.")
        if self.caller_access not in ("open", "rbac"):
            raise ValueError("callerAccess must be 'open' or 'rbac'.")


# -- built-in roles ----------------------------------------------------------------------------

_BUILT_IN_CREATED = dt.datetime(2015, 2, 2, 21, 55, 9, 880642, tzinfo=dt.UTC)

#: Owner, Contributor and Reader with their real ids and permissions (Azure's built-in roles page).
BUILT_IN_ROLES: Final = (
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner",
     "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
     PermissionBlock(actions=("*",))),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor",
     "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage "
     "assignments in Azure Blueprints, or share image galleries.",
     PermissionBlock(actions=("*",), not_actions=(
         "Microsoft.Authorization/*/Delete",
         "Microsoft.Authorization/*/Write",
         "Microsoft.Authorization/elevateAccess/Action",
         "Microsoft.Blueprint/blueprintAssignments/write",
         "Microsoft.Blueprint/blueprintAssignments/delete",
         "Microsoft.Compute/galleries/share/action",
         "Microsoft.Purview/consents/write",
         "Microsoft.Purview/consents/delete",
         "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
         "Microsoft.Subscription/cancel/action",
         "Microsoft.Subscription/enable/action",
     ))),
    ("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader",
     "View all resources, but does not allow you to make any changes.",
     PermissionBlock(actions=("*/read",))),
)


def _built_ins() -> dict[str, RoleDefinition]:
    return {guid: RoleDefinition(name=guid, role_name=name, description=description, role_type="BuiltInRole",
                                 permissions=(block,), assignable_scopes=("/",), created=_BUILT_IN_CREATED,
                                 updated=_BUILT_IN_CREATED)
            for guid, name, description, block in BUILT_IN_ROLES}


def action_matches(pattern: str, action: str) -> bool:
    """ARM's action match: case-insensitive, ``*`` standing for any run of characters (``/`` too)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, action, re.IGNORECASE | re.DOTALL) is not None


def _any_match(patterns: Iterable[str], action: str) -> bool:
    return any(action_matches(p, action) for p in patterns)


def role_definition_id(scope: Scope, name: str) -> str:
    """A role definition's id as ARM gives it at ``scope``: under the scope's subscription, or the
    tenant's form at the root."""
    subscription = scope.subscription_scope
    prefix = subscription.text if subscription is not None else ""
    return f"{prefix}/providers/{PROVIDER}/roleDefinitions/{name}"


def parse_role_definition_id(value: str) -> str:
    """The GUID of ``/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}``
    (or the tenant form); raise 400 when ``value`` is neither."""
    match = _ROLE_DEFINITION_ID.match(value.strip())
    if match is None or not is_guid(match.group("name")):
        raise BadRequest("InvalidRoleDefinitionId",
                         f"The role definition ID '{value}' is not valid.")
    return match.group("name").lower()


class ArmBackend:
    """Thread-safe state of the stand-in; :meth:`reset` returns it to what it was built with."""

    def __init__(self, *, tenant_id: str, subscriptions: Iterable[Subscription] = (),
                 config: ArmConfig | None = None, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.tenant_id = tenant_id.lower()
        self._initial_subscriptions = tuple(subscriptions)
        self._initial_config = config or ArmConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._subscriptions: dict[str, Subscription] = {}
        self._definitions: dict[str, RoleDefinition] = {}
        self._assignments: dict[str, RoleAssignment] = {}
        self._denies: dict[str, DenyAssignment] = {}
        self._config = self._initial_config
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._subscriptions = {s.subscription_id.lower(): s for s in self._initial_subscriptions}
            self._definitions = _built_ins()
            self._assignments = {}
            self._denies = {}
            self._config = self._initial_config

    @property
    def config(self) -> ArmConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> ArmConfig:
        with self._lock:
            self._config = replace(self._config, **changes)
            return self._config

    # -- subscriptions and resource groups -----------------------------------------------------

    def add_subscription(self, subscription_id: str, *, display_name: str | None = None,
                         tenant_id: str | None = None, resource_groups: Iterable[str] = ()) -> Subscription:
        """Create a subscription, or add resource groups to one (idempotent)."""
        if not is_guid(subscription_id):
            raise InvalidSubscriptionId(subscription_id)
        with self._lock:
            existing = self._subscriptions.get(subscription_id.lower())
            groups = list(existing.resource_groups) if existing else []
            for group in resource_groups:
                if not _SEGMENT.fullmatch(group) or "/" in group:
                    raise BadRequest("InvalidResourceGroupName", f"Resource group name '{group}' is invalid.")
                if not any(g.lower() == group.lower() for g in groups):
                    groups.append(group)
            subscription = Subscription(
                subscription_id=existing.subscription_id if existing else subscription_id,
                display_name=display_name or (existing.display_name if existing else f"devstack {subscription_id[:8]}"),
                tenant_id=(tenant_id or (existing.tenant_id if existing else self.tenant_id)).lower(),
                resource_groups=tuple(groups))
            self._subscriptions[subscription_id.lower()] = subscription
            return subscription

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subscriptions.values())

    def ensure_scope(self, scope: Scope) -> None:
        """Make the subscription and resource group ``scope`` lies in (the admin API's seeding)."""
        if scope.subscription_id is not None:
            self.add_subscription(scope.subscription_id,
                                  resource_groups=[scope.resource_group] if scope.resource_group else [])

    def subscription_of(self, scope: Scope) -> Subscription | None:
        if scope.subscription_id is None:
            return None
        with self._lock:
            return self._subscriptions.get(scope.subscription_id.lower())

    def check_scope(self, scope: Scope) -> Subscription | None:
        """Raise 404 when the scope's subscription or resource group does not exist (resources below
        a resource group are not modelled and always exist)."""
        if scope.subscription_id is None:
            return None
        subscription = self.subscription_of(scope)
        if subscription is None:
            raise SubscriptionNotFound(scope.subscription_id)
        if scope.resource_group is not None and not subscription.has_group(scope.resource_group):
            raise ResourceGroupNotFound(scope.resource_group)
        return subscription

    # -- role definitions ------------------------------------------------------------------------

    def get_role_definition(self, name: str) -> RoleDefinition:
        with self._lock:
            definition = self._definitions.get(name.lower())
        if definition is None:
            raise RoleDefinitionNotFound(name)
        return definition

    def find_role_by_name(self, role_name: str) -> RoleDefinition:
        with self._lock:
            for definition in self._definitions.values():
                if definition.role_name.lower() == role_name.lower():
                    return definition
        raise RoleDefinitionNotFound(role_name)

    def list_role_definitions(self, scope: Scope, *, role_name: str | None = None,
                              role_type: str | None = None) -> list[RoleDefinition]:
        """Built-in roles, and custom roles assignable at ``scope`` or above (at or below with
        ``atScopeAndBelow`` is not modelled)."""
        with self._lock:
            definitions = list(self._definitions.values())
        out = []
        for definition in definitions:
            if role_name is not None and definition.role_name.lower() != role_name.lower():
                continue
            if role_type is not None and definition.role_type.lower() != role_type.lower():
                continue
            if definition.role_type == "CustomRole" and not any(
                    parse_scope(assignable).covers(scope) for assignable in definition.assignable_scopes):
                continue
            out.append(definition)
        out.sort(key=lambda d: (d.role_type != "BuiltInRole", d.role_name.lower()))
        return out

    def put_role_definition(self, name: str, *, role_name: str, description: str,
                            permissions: tuple[PermissionBlock, ...], assignable_scopes: tuple[str, ...],
                            created_by: str | None = None) -> tuple[RoleDefinition, bool]:
        """Create or replace a custom role; ``(definition, created)``."""
        if not is_guid(name):
            raise BadRequest("InvalidRoleDefinitionId", f"The role definition ID '{name}' is not valid.")
        if not role_name.strip():
            raise BadRequest("InvalidRoleDefinitionName", "The role definition name cannot be empty.")
        if not assignable_scopes:
            raise BadRequest("InvalidAssignableScopes", "The role definition must have at least one assignable scope.")
        for assignable in assignable_scopes:
            parsed = parse_scope(assignable)
            if parsed.is_root:
                raise BadRequest("InvalidAssignableScopes",
                                 "The root scope '/' cannot be an assignable scope of a custom role.")
            self.check_scope(parsed)
        now = self._clock()
        with self._lock:
            existing = self._definitions.get(name.lower())
            if existing is not None and existing.role_type == "BuiltInRole":
                raise BadRequest("RoleDefinitionUpdateNotPermitted", "Built-in role definitions cannot be changed.")
            for other in self._definitions.values():
                if other.name != name.lower() and other.role_name.lower() == role_name.strip().lower():
                    raise RoleDefinitionNameExists(role_name)
            definition = RoleDefinition(
                name=name.lower(), role_name=role_name.strip(), description=description, role_type="CustomRole",
                permissions=permissions, assignable_scopes=assignable_scopes,
                created=existing.created if existing else now, updated=now,
                created_by=existing.created_by if existing else created_by)
            self._definitions[definition.name] = definition
            return definition, existing is None

    # -- role assignments ---------------------------------------------------------------------

    def list_role_assignments(self, scope: Scope, flt: AssignmentFilter) -> list[RoleAssignment]:
        """At ``scope``, above it and below it; ``atScope()`` keeps those at or above; a principal
        filter keeps that principal's (directly: groups are not modelled)."""
        with self._lock:
            assignments = list(self._assignments.values())
        out = []
        for assignment in assignments:
            above = assignment.scope.covers(scope)
            below = scope.covers(assignment.scope)
            if not (above or (below and not flt.at_scope)):
                continue
            if flt.principal_id is not None and assignment.principal_id.lower() != flt.principal_id.lower():
                continue
            out.append(assignment)
        out.sort(key=lambda a: (a.scope.key, a.name))
        return out

    def get_role_assignment(self, scope: Scope, name: str) -> RoleAssignment:
        with self._lock:
            assignment = self._assignments.get(name.lower())
        if assignment is None or assignment.scope.key != scope.key:
            raise RoleAssignmentNotFound(name)
        return assignment

    def create_role_assignment(self, scope: Scope, name: str, *, role_definition_name: str, principal_id: str,
                               principal_type: str = "ServicePrincipal", description: str | None = None,
                               created_by: str | None = None) -> tuple[RoleAssignment, bool]:
        """Create a role assignment; a repeat of the same one answers it again (ARM's PUT is idempotent)."""
        if not is_guid(name):
            raise BadRequest("InvalidRoleAssignmentId",
                             f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.")
        if not is_guid(principal_id):
            raise BadRequest("InvalidPrincipalId", "A valid principal ID must be provided for role assignment.")
        if principal_type not in PRINCIPAL_TYPES:
            raise BadRequest("InvalidPrincipalType", f"The principal type '{principal_type}' is not valid.")
        if scope.is_root:
            raise InvalidScope(scope.text)
        self.check_scope(scope)
        try:
            definition = self.get_role_definition(role_definition_name)
        except RoleDefinitionNotFound as exc:
            raise BadRequest(exc.code, exc.message) from None  # a bad reference in the body: 400
        now = self._clock()
        with self._lock:
            existing = self._assignments.get(name.lower())
            if existing is not None:
                same = (existing.scope.key == scope.key and existing.principal_id.lower() == principal_id.lower()
                        and existing.role_definition_name == definition.name)
                if not same:
                    raise BadRequest("RoleAssignmentUpdateNotPermitted",
                                     "Tenant ID, application ID, principal ID, and scope are not allowed to be "
                                     "updated.")
                return existing, False
            for other in self._assignments.values():
                if (other.scope.key == scope.key and other.principal_id.lower() == principal_id.lower()
                        and other.role_definition_name == definition.name):
                    raise RoleAssignmentExists
            assignment = RoleAssignment(name=name.lower(), scope=scope, role_definition_name=definition.name,
                                        principal_id=principal_id.lower(), principal_type=principal_type,
                                        description=description, created=now, updated=now, created_by=created_by)
            self._assignments[assignment.name] = assignment
            return assignment, True

    def delete_role_assignment(self, scope: Scope, name: str) -> RoleAssignment | None:
        with self._lock:
            assignment = self._assignments.get(name.lower())
            if assignment is None or assignment.scope.key != scope.key:
                return None
            del self._assignments[assignment.name]
            return assignment

    # -- deny assignments -----------------------------------------------------------------------

    def add_deny_assignment(self, scope: Scope, *, deny_assignment_name: str, permissions: tuple[PermissionBlock, ...],
                            principals: tuple[Principal, ...], exclude_principals: tuple[Principal, ...] = (),
                            description: str = "", do_not_apply_to_child_scopes: bool = False,
                            name: str | None = None) -> DenyAssignment:
        """What Azure Blueprints, managed applications and deployment stacks make; no public API does."""
        if scope.is_root:
            raise InvalidScope(scope.text)
        if not principals:
            raise BadRequest("InvalidDenyAssignment", "A deny assignment needs at least one principal.")
        for principal in (*principals, *exclude_principals):
            if not is_guid(principal.id):
                raise BadRequest("InvalidPrincipalId", f"The principal id '{principal.id}' is not a GUID.")
        guid = (name or str(uuid.uuid4())).lower()
        if not is_guid(guid):
            raise BadRequest("InvalidDenyAssignmentId", f"The deny assignment ID '{name}' is not a GUID.")
        deny = DenyAssignment(name=guid, deny_assignment_name=deny_assignment_name, description=description,
                              permissions=permissions, scope=scope,
                              do_not_apply_to_child_scopes=do_not_apply_to_child_scopes, principals=principals,
                              exclude_principals=exclude_principals, created=self._clock())
        with self._lock:
            self._denies[guid] = deny
        return deny

    def list_deny_assignments(self, scope: Scope, flt: DenyFilter) -> list[DenyAssignment]:
        """At, above and below ``scope``; ``atScope()`` keeps those at or above; ``principalId eq``
        those naming the principal in ``principals``; ``gdprExportPrincipalId eq`` those naming it
        in either list. A deny assignment above ``scope`` that does not apply to child scopes is
        still listed: it is the reader's to judge."""
        with self._lock:
            denies = list(self._denies.values())
        out = []
        for deny in denies:
            above = deny.scope.covers(scope)
            below = scope.covers(deny.scope)
            if not (above or (below and not flt.at_scope)):
                continue
            if flt.name is not None and deny.deny_assignment_name.lower() != flt.name.lower():
                continue
            if flt.principal_id is not None and not any(
                    p.id.lower() == flt.principal_id.lower() for p in deny.principals):
                continue
            if flt.gdpr_principal_id is not None and not any(
                    p.id.lower() == flt.gdpr_principal_id.lower() for p in (*deny.principals,
                                                                           *deny.exclude_principals)):
                continue
            out.append(deny)
        out.sort(key=lambda d: (d.scope.key, d.name))
        return out

    def get_deny_assignment(self, scope: Scope, name: str) -> DenyAssignment:
        with self._lock:
            deny = self._denies.get(name.lower())
        if deny is None or deny.scope.key != scope.key:
            raise DenyAssignmentNotFound(name)
        return deny

    # -- the caller's own rights ------------------------------------------------------------------

    def allows(self, principal_id: str, action: str, scope: Scope) -> bool:
        """Whether ``principal_id`` may perform ``action`` at ``scope``: a role assigned to it at the
        scope or above grants it (and that role's notActions do not take it back), and no deny
        assignment that applies to it there denies it."""
        granted = False
        for assignment in self.list_role_assignments(scope, AssignmentFilter(at_scope=True, principal_id=principal_id)):
            try:
                definition = self.get_role_definition(assignment.role_definition_name)
            except RoleDefinitionNotFound:
                continue
            if any(_any_match(b.actions, action) and not _any_match(b.not_actions, action)
                   for b in definition.permissions):
                granted = True
                break
        if not granted:
            return False
        for deny in self.list_deny_assignments(scope, DenyFilter(at_scope=True)):
            if deny.do_not_apply_to_child_scopes and deny.scope.key != scope.key:
                continue
            if deny.applies_to(principal_id) and any(
                    _any_match(b.actions, action) and not _any_match(b.not_actions, action)
                    for b in deny.permissions):
                return False
        return True

    # -- admin view -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            subscriptions = list(self._subscriptions.values())
            definitions = list(self._definitions.values())
            assignments = list(self._assignments.values())
            denies = list(self._denies.values())
            config = self._config
        return {
            "config": config_json(config),
            "subscriptions": [{"subscriptionId": s.subscription_id, "displayName": s.display_name,
                               "tenantId": s.tenant_id, "resourceGroups": list(s.resource_groups)}
                              for s in subscriptions],
            "roleDefinitions": [{"name": d.name, "roleName": d.role_name, "type": d.role_type} for d in definitions],
            "roleAssignments": [{"name": a.name, "scope": a.scope.text, "principalId": a.principal_id,
                                 "roleDefinitionName": a.role_definition_name} for a in assignments],
            "denyAssignments": [{"name": d.name, "denyAssignmentName": d.deny_assignment_name, "scope": d.scope.text}
                                for d in denies],
        }


def config_json(config: ArmConfig) -> dict[str, Any]:
    return {"pageSize": config.page_size, "callerAccess": config.caller_access}


def format_datetime(moment: dt.datetime) -> str:
    """ARM's form: UTC with seven fractional digits and ``Z``."""
    moment = moment.astimezone(dt.UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "0Z"

