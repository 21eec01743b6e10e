"""The permissions Palette publishes for Azure, as data: one JSON file per published role in
``roles/`` and, in ``requirements.json``, which roles a (profile, placement) needs and at which scope.

The files are copied from Spectro Cloud's documentation (``spectrocloud/librarium``: the
``_partials/permissions/_azure-*-role.mdx`` partials and the page
``docs/docs-content/clusters/public-cloud/azure/required-permissions.md``); each records the path,
the commit read and the dates. Lists are kept exactly as published. To follow a new release of
the docs, replace the files, not this code. ``requirements.json``'s ``notes`` say what was judged
where the page is not explicit.

Reading the files is the only I/O here, once per process; the evaluation is
:mod:`shared.permissions.evaluate`'s.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

_HERE = Path(__file__).resolve().parent
PROFILES: Final = ("iaas", "aks")
PLACEMENTS: Final = ("static", "dynamic")


class ScopeKind(StrEnum):
    """Where a role must hold, relative to the request's ``azure.permissions.scopes``."""

    TARGET = "target"  # each scope given: a subscription or a resource group
    SUBSCRIPTION = "subscription"  # the subscription of each scope given
    VIRTUAL_NETWORK = "virtualNetwork"  # the virtual network's scope


@dataclass(frozen=True)
class Source:
    repository: str
    path: str
    commit: str
    read: str  # the day it was read (ISO date)
    last_update: str | None = None  # the date the published file states, when it states one
    commit_date: str | None = None


@dataclass(frozen=True)
class PublishedRole:
    """A role as Spectro Cloud publishes it (``key`` is the partial's name, the JSON file's stem)."""

    key: str
    role_name: str
    description: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]
    source: Source


@dataclass(frozen=True)
class RoleRequirement:
    role: PublishedRole
    scope: ScopeKind


def _source(raw: dict[str, Any]) -> Source:
    return Source(repository=raw["repository"], path=raw["path"], commit=raw["commit"], read=raw["read"],
                  last_update=raw.get("lastUpdate"), commit_date=raw.get("commitDate"))


@functools.cache
def published_role(key: str) -> PublishedRole:
    """The role published as ``key`` (``azure-iaas-static-rg-sub-role``, ...).

    Raises
    ------
    KeyError
        No such role file.
    """
    path = _HERE / "roles" / f"{key}.json"
    if path.parent != _HERE / "roles" or not path.is_file():
        raise KeyError(f"No published role {key!r} in {path.parent}.")
    raw = json.loads(path.read_text())
    return PublishedRole(key=raw["key"], role_name=raw["roleName"], description=raw["description"],
                         actions=tuple(raw["actions"]), not_actions=tuple(raw["notActions"]),
                         data_actions=tuple(raw["dataActions"]), not_data_actions=tuple(raw["notDataActions"]),
                         source=_source(raw["source"]))


@functools.cache
def _requirements() -> tuple[Source, dict[tuple[str, str], tuple[RoleRequirement, ...]]]:
    raw = json.loads((_HERE / "requirements.json").read_text())
    table = {(entry["profile"], entry["placement"]): tuple(
        RoleRequirement(published_role(item["role"]), ScopeKind(item["scope"])) for item in entry["roles"])
        for entry in raw["requirements"]}
    return _source(raw["source"]), table


def requirements(profile: str, placement: str) -> tuple[RoleRequirement, ...]:
    """The roles Palette needs for ``profile`` (``iaas``/``aks``) and ``placement`` (``static``/``dynamic``).

    Raises
    ------
    KeyError
        An unknown profile or placement.
    """
    table = _requirements()[1]
    if (profile, placement) not in table:
        raise KeyError(f"No published requirements for profile {profile!r} and placement {placement!r}; "
                       f"profiles are {', '.join(PROFILES)}, placements {', '.join(PLACEMENTS)}.")
    return table[(profile, placement)]


def requirements_source() -> Source:
    """Where the (profile, placement) table comes from: Spectro Cloud's required-permissions page."""
    return _requirements()[0]
