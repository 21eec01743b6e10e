"""Whether an onboarded principal holds what Palette asks of it at the request's scopes.

For the check step (before anything is made) and the drift pass (daily, for accounts that asked):
``azure.permissions`` names a profile, a placement and scopes; :mod:`shared.permissions.catalog`
says which published roles that needs and where; :class:`~shared.clients.authorization.AuthorizationReader`
reads what applies to the principal at each scope (once per scope); and
:mod:`shared.permissions.evaluate` names each action missing or denied.

Where each role is checked, per :class:`~shared.permissions.catalog.ScopeKind`:

* ``target``: every subscription or resource group in ``scopes``;
* ``subscription``: the subscription of each of those;
* ``virtualNetwork``: every virtual network id in ``scopes``, or, when there is none, the targets
  (a role assigned on the network itself is then not seen: give the network's id to check it).

A scope the product's identity cannot read (403, no such scope, another tenant) is a finding of its
own (``unreadable``), not an error, so a caller decides: the check step refuses it unless
``enforce`` is false. Any other failure to read (throttling, an outage) propagates, to be retried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.permissions.catalog import RoleRequirement, ScopeKind, requirements
from shared.permissions.evaluate import denying, missing_actions, missing_data_actions

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.clients.authorization import AuthorizationReader, ScopePermissions

#: Actions named per scope in a message, and kept per scope in a state row or an event (with the
#: counts: ten scopes lacking everything stay well inside a Table property's 32K characters).
NAMED_IN_MESSAGE = 8
KEPT_PER_SCOPE = 12

_VIRTUAL_NETWORK = re.compile(r"/providers/Microsoft\.Network/virtualNetworks/[^/]+$", re.IGNORECASE)
_SUBSCRIPTION = re.compile(r"^/subscriptions/[^/]+", re.IGNORECASE)


@dataclass(frozen=True)
class ScopeFinding:
    """What one scope lacks of the roles checked there."""

    scope: str
    roles: tuple[str, ...]  # the published roles' names checked at this scope
    missing: tuple[str, ...] = ()  # actions and data actions no role assigned there grants
    denied: tuple[str, ...] = ()  # actions granted there but taken away by a deny assignment
    unreadable: str = ""  # why the product could not read what applies there ...
    unreadable_reason: str = ""  # ... as the failure table names it (permissions_unreadable, ...)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.denied or self.unreadable)

    @property
    def outcome(self) -> str:
        return "unreadable" if self.unreadable else "ok" if self.ok else "missing"

    def describe(self) -> str:
        if self.unreadable:
            return f"{self.scope}: could not be read ({self.unreadable})"
        parts = [f"missing {_named(self.missing)}" if self.missing else "",
                 f"denied by a deny assignment {_named(self.denied)}" if self.denied else ""]
        return f"{self.scope} ({', '.join(self.roles)}): " + "; ".join(p for p in parts if p)

    def as_data(self) -> dict[str, Any]:
        """For the state row and the ``validated`` event: bounded, whatever the principal lacks."""
        return {"scope": self.scope, "roles": list(self.roles), "outcome": self.outcome,
                "missingCount": len(self.missing), "missing": list(self.missing[:KEPT_PER_SCOPE]),
                "deniedCount": len(self.denied), "denied": list(self.denied[:KEPT_PER_SCOPE]),
                **({"unreadable": self.unreadable_reason} if self.unreadable else {})}


@dataclass(frozen=True)
class PermissionReport:
    """Every scope's finding, in the order checked."""

    principal_id: str
    findings: tuple[ScopeFinding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)

    @property
    def unreadable(self) -> tuple[ScopeFinding, ...]:
        return tuple(finding for finding in self.findings if finding.unreadable)

    def describe(self) -> str:
        """One line a person can act on: each scope that falls short, and how."""
        short = [finding.describe() for finding in self.findings if not finding.ok]
        return "; ".join(short) if short else "every action Palette needs is granted at every scope"

    def as_data(self) -> list[dict[str, Any]]:
        return [finding.as_data() for finding in self.findings]


def _named(actions: tuple[str, ...]) -> str:
    shown = ", ".join(actions[:NAMED_IN_MESSAGE])
    more = len(actions) - NAMED_IN_MESSAGE
    return f"{shown} and {more} more" if more > 0 else shown


def _subscription_of(scope: str) -> str:
    match = _SUBSCRIPTION.match(scope)
    return match.group(0) if match else scope


def placements(spec: Mapping[str, Any]) -> list[tuple[str, tuple[RoleRequirement, ...]]]:
    """Each scope to read and the roles that must hold there, in a stable order (a scope once)."""
    scopes = [str(s) for s in spec["scopes"]]
    networks = [s for s in scopes if _VIRTUAL_NETWORK.search(s)]
    targets = [s for s in scopes if not _VIRTUAL_NETWORK.search(s)] or networks
    where: dict[ScopeKind, list[str]] = {
        ScopeKind.TARGET: targets,
        ScopeKind.SUBSCRIPTION: list(dict.fromkeys(_subscription_of(s) for s in targets)),
        ScopeKind.VIRTUAL_NETWORK: networks or targets,
    }
    by_scope: dict[str, list[RoleRequirement]] = {}
    for requirement in requirements(str(spec["profile"]), str(spec["placement"])):
        for scope in where[requirement.scope]:
            by_scope.setdefault(scope.lower(), []).append(requirement)
    originals = {s.lower(): s for kind in (ScopeKind.SUBSCRIPTION, ScopeKind.TARGET, ScopeKind.VIRTUAL_NETWORK)
                 for s in where[kind]}
    return [(originals[key], tuple(needed)) for key, needed in by_scope.items()]


def check_permissions(spec: Mapping[str, Any], principal_id: str, reader: AuthorizationReader) -> PermissionReport:
    """Read what applies to ``principal_id`` at each scope ``spec`` (``azure.permissions``, on the
    wire's field names) needs, and name what falls short.

    Raises
    ------
    azure.core.exceptions.AzureError
        Reading failed for a reason a retry may fix (throttling, an outage, our token).
    """
    from azure.core.exceptions import HttpResponseError

    from shared.engine.failures import FailureKind, classify

    findings = []
    for scope, needed in placements(spec):
        roles = tuple(dict.fromkeys(requirement.role.role_name for requirement in needed))
        try:
            held = reader.permissions_at(principal_id, scope)
        except HttpResponseError as exc:
            failure = classify(exc)
            if failure.kind is not FailureKind.PERMANENT:
                raise
            findings.append(ScopeFinding(scope, roles, unreadable=failure.message, unreadable_reason=failure.reason))
            continue
        findings.append(_finding(scope, roles, needed, held))
    return PermissionReport(principal_id, tuple(findings))


def _finding(scope: str, roles: tuple[str, ...], needed: tuple[RoleRequirement, ...],
             held: ScopePermissions) -> ScopeFinding:
    actions = tuple(dict.fromkeys(a for r in needed for a in r.role.actions))
    data_actions = tuple(dict.fromkeys(a for r in needed for a in r.role.data_actions))
    granted, denies = held.granted, held.denied
    missing = missing_actions(actions, granted, ()) + missing_data_actions(data_actions, granted, ())
    denied = (tuple(a for a in actions if a not in missing and denying(a, denies))
              + tuple(a for a in data_actions if a not in missing and denying(a, denies, data=True)))
    return ScopeFinding(scope, roles, missing=missing, denied=denied)
