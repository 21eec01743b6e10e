"""Which required Azure actions a principal lacks, by Azure RBAC's rules: pure functions, no I/O.

The rules, as Azure role-based access control applies them to a principal at one scope:

* an action is **granted** when some role assignment's role has a permissions entry whose
  ``actions`` match it and whose ``notActions`` (of that same entry) do not: ``notActions`` only
  ever take away from their own role, never from another role that grants the action;
* it is **denied** when some deny assignment that applies has a permissions entry whose
  ``actions`` match it and whose ``notActions`` do not; a deny wins over any grant;
* data actions are a separate namespace: ``actions: ["*"]`` (Owner) grants no data action, and
  ``dataActions``/``notDataActions`` (of roles and of deny assignments) are matched only against
  data actions;
* matching ignores case (both sides casefolded) and ``*`` stands for any run of characters,
  ``/`` included (``Microsoft.Authorization/*/Write`` matches
  ``Microsoft.Authorization/roleAssignments/write``); every other character matches itself.

Which assignments and deny assignments apply at a scope (inheritance from ancestors, Everyone,
``excludePrincipals``) is the caller's to work out: see :mod:`shared.clients.authorization`.
ABAC conditions on role assignments are not evaluated.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


@dataclass(frozen=True)
class Permission:
    """One ``permissions`` entry of a role definition or of a deny assignment.

    ``source`` says where it came from (a role's name and scope, a deny assignment's name), for
    messages only: it plays no part in the evaluation.
    """

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()
    source: str = ""


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.casefold().split("*")), re.DOTALL)


def action_matches(pattern: str, action: str) -> bool:
    """Whether an ``actions`` entry (``pattern``) covers ``action``: case ignored, ``*`` any run of characters."""
    return _pattern(pattern).fullmatch(action.casefold()) is not None


def _any(patterns: Iterable[str], action: str) -> bool:
    return any(action_matches(pattern, action) for pattern in patterns)


def _covers(permission: Permission, action: str, *, data: bool) -> bool:
    if data:
        return _any(permission.data_actions, action) and not _any(permission.not_data_actions, action)
    return _any(permission.actions, action) and not _any(permission.not_actions, action)


def is_granted(action: str, granted_permissions: Iterable[Permission], *, data: bool = False) -> bool:
    """Whether some entry grants ``action`` (a data action when ``data``) and its own not-list does not take it back."""
    return any(_covers(permission, action, data=data) for permission in granted_permissions)


def denying(action: str, deny_assignments: Iterable[Permission], *, data: bool = False) -> tuple[Permission, ...]:
    """The deny assignment entries that deny ``action`` (a data action when ``data``); empty when none does."""
    return tuple(permission for permission in deny_assignments if _covers(permission, action, data=data))


def _unique(actions: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for action in actions:
        key = action.casefold()
        if key not in seen:
            seen.add(key)
            out.append(action)
    return out


def _missing(required: Iterable[str], granted: Sequence[Permission], denies: Sequence[Permission], *,
             data: bool) -> tuple[str, ...]:
    return tuple(action for action in _unique(required)
                 if not is_granted(action, granted, data=data) or denying(action, denies, data=data))


def missing_actions(required_actions: Iterable[str], granted_permissions: Iterable[Permission],
                    deny_assignments: Iterable[Permission]) -> tuple[str, ...]:
    """The control-plane actions of ``required_actions`` that the principal lacks: not granted by
    any entry of ``granted_permissions``, or denied by an entry of ``deny_assignments``.

    In the order given, each once (the first spelling of actions equal but for case). Empty when
    nothing is missing.
    """
    return _missing(required_actions, tuple(granted_permissions), tuple(deny_assignments), data=False)


def missing_data_actions(required_data_actions: Iterable[str], granted_permissions: Iterable[Permission],
                         deny_assignments: Iterable[Permission]) -> tuple[str, ...]:
    """:func:`missing_actions` for data actions (``dataActions``/``notDataActions``)."""
    return _missing(required_data_actions, tuple(granted_permissions), tuple(deny_assignments), data=True)
