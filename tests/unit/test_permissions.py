"""Azure RBAC's rules in shared.permissions.evaluate, and the published role data: pure, no stack.

The matcher is checked against a reference written differently (dynamic programming over the
casefolded strings rather than a regular expression), and the evaluation's properties are
fuzzed: ``*`` grants everything, a pattern never grants what it does not match, notActions and
deny assignments only ever take away, data actions are a namespace of their own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.permissions.catalog import PLACEMENTS, PROFILES, ScopeKind, published_role, requirements
from shared.permissions.evaluate import (
    Permission,
    action_matches,
    denying,
    is_granted,
    missing_actions,
    missing_data_actions,
)

ROLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "permissions" / "roles"
CONTRIBUTOR = Permission(actions=("*",), not_actions=(
    "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
    "Microsoft.Authorization/elevateAccess/Action",
    "Microsoft.Blueprint/blueprintAssignments/write", "Microsoft.Blueprint/blueprintAssignments/delete",
    "Microsoft.Compute/galleries/share/action", "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
    "Microsoft.Resources/deploymentStacks/manageDenySetting/action", "Microsoft.Subscription/cancel/action",
    "Microsoft.Subscription/enable/action"))
READER = Permission(actions=("*/read",))
OWNER = Permission(actions=("*",))


def reference_match(pattern: str, action: str) -> bool:
    """Wildcard match by dynamic programming: ``*`` any run (``/`` too), everything else itself, case ignored."""
    p, a = pattern.casefold(), action.casefold()
    row = [True] + [False] * len(a)
    for char in p:
        nxt = [row[0] and char == "*"] + [False] * len(a)
        for j in range(1, len(a) + 1):
            nxt[j] = (row[j] or nxt[j - 1]) if char == "*" else (row[j - 1] and char == a[j - 1])
        row = nxt
    return row[-1]


# Small alphabets, so that patterns and actions meet often; the published lists for realism.
PATTERNS = st.text(alphabet="aAbB/.*", max_size=8)
ACTIONS = st.text(alphabet="aAbB/.", max_size=8)
PUBLISHED = sorted({a for path in ROLES_DIR.glob("*.json") for a in json.loads(path.read_text())["actions"]})
REAL_ACTIONS = st.sampled_from(PUBLISHED)
ANY_ACTION = st.one_of(ACTIONS, REAL_ACTIONS)
PERMISSIONS = st.builds(
    Permission,
    actions=st.lists(st.one_of(PATTERNS, REAL_ACTIONS), max_size=3).map(tuple),
    not_actions=st.lists(st.one_of(PATTERNS, REAL_ACTIONS), max_size=2).map(tuple),
    data_actions=st.lists(PATTERNS, max_size=2).map(tuple),
    not_data_actions=st.lists(PATTERNS, max_size=2).map(tuple),
)


# -- the matcher ------------------------------------------------------------------------------------------


@given(pattern=PATTERNS, action=ACTIONS)
def test_matcher_agrees_with_the_reference(pattern: str, action: str) -> None:
    assert action_matches(pattern, action) == reference_match(pattern, action)


@given(pattern=PATTERNS, action=ACTIONS)
def test_matching_ignores_case(pattern: str, action: str) -> None:
    assert action_matches(pattern, action) == action_matches(pattern.swapcase(), action.upper())


@pytest.mark.parametrize(("pattern", "action", "expected"), [
    ("*", "Microsoft.Compute/virtualMachines/write", True),
    ("*/read", "Microsoft.Compute/virtualMachines/read", True),
    ("*/read", "Microsoft.Compute/virtualMachines/write", False),
    ("Microsoft.Authorization/*/Write", "microsoft.authorization/roleAssignments/write", True),
    ("Microsoft.Authorization/*/Write", "Microsoft.Authorization/write", False),
    ("Microsoft.Compute/*", "Microsoft.Compute/disks/delete", True),
    ("Microsoft.Compute/*", "Microsoft.ComputeX/disks/delete", False),
    ("Microsoft.Network/virtualNetworks/subnets/join/action", "Microsoft.Network/virtualNetworks/subnets/join/action",
     True),
    ("Microsoft.Network/virtualNetworks/*/read", "Microsoft.Network/virtualNetworks/subnets/read", True),
    ("Microsoft.Storage/storageAccounts/read", "Microsoft.Storage/storageAccounts/readX", False),
    ("a.b/c", "aXb/c", False),  # "." is itself, not any character
    ("a?b", "axb", False),
])
def test_matcher_examples(pattern: str, action: str, expected: bool) -> None:
    assert action_matches(pattern, action) is expected


# -- the evaluation --------------------------------------------------------------------------------------


@given(required=st.lists(ANY_ACTION, max_size=6))
def test_star_grants_every_action(required: list[str]) -> None:
    assert missing_actions(required, [OWNER], []) == ()


@given(pattern=PATTERNS, action=ACTIONS, not_actions=st.lists(PATTERNS, max_size=2))
def test_a_pattern_never_grants_an_action_it_does_not_match(pattern: str, action: str, not_actions: list[str]) -> None:
    granted = [Permission(actions=(pattern,), not_actions=tuple(not_actions))]
    if not reference_match(pattern, action):
        assert missing_actions([action], granted, []) == (action,)
    elif not any(reference_match(n, action) for n in not_actions):
        assert missing_actions([action], granted, []) == ()


@given(required=st.lists(ANY_ACTION, max_size=6), granted=st.lists(PERMISSIONS, max_size=3),
       extra=st.lists(st.one_of(PATTERNS, REAL_ACTIONS), min_size=1, max_size=3), index=st.integers(min_value=0))
def test_not_actions_only_ever_remove(required: list[str], granted: list[Permission], extra: list[str],
                                      index: int) -> None:
    before = set(missing_actions(required, granted, []))
    if granted:
        i = index % len(granted)
        narrower = Permission(granted[i].actions, granted[i].not_actions + tuple(extra))
        granted = [*granted[:i], narrower, *granted[i + 1:]]
    assert before <= set(missing_actions(required, granted, []))


@given(required=st.lists(ANY_ACTION, max_size=6), granted=st.lists(PERMISSIONS, max_size=3),
       more=PERMISSIONS)
def test_another_role_only_ever_adds(required: list[str], granted: list[Permission], more: Permission) -> None:
    """A role's notActions never take away what another role grants."""
    assert set(missing_actions(required, [*granted, more], [])) <= set(missing_actions(required, granted, []))


@given(required=st.lists(ANY_ACTION, max_size=6), granted=st.lists(PERMISSIONS, max_size=3),
       denies=st.lists(PERMISSIONS, max_size=2), deny=PERMISSIONS)
def test_deny_assignments_only_ever_remove(required: list[str], granted: list[Permission], denies: list[Permission],
                                           deny: Permission) -> None:
    assert set(missing_actions(required, granted, denies)) <= set(missing_actions(required, granted, [*denies, deny]))
    assert set(missing_actions(required, granted, [])) <= set(missing_actions(required, granted, denies))


@given(action=ANY_ACTION, not_actions=st.lists(PATTERNS, max_size=2))
def test_a_deny_wins_over_any_grant_unless_its_not_actions_spare_the_action(action: str,
                                                                             not_actions: list[str]) -> None:
    deny = Permission(actions=("*",), not_actions=tuple(not_actions), source="deny assignment 'x'")
    spared = any(reference_match(n, action) for n in not_actions)
    assert missing_actions([action], [OWNER], [deny]) == (() if spared else (action,))
    assert denying(action, [deny]) == (() if spared else (deny,))


@given(required=st.lists(ANY_ACTION, min_size=1, max_size=4))
def test_data_actions_are_a_namespace_of_their_own(required: list[str]) -> None:
    unique = tuple(dict.fromkeys(a.casefold() for a in required))
    assert len(missing_data_actions(required, [OWNER], [])) == len(unique)  # "*" in actions grants no data action
    data_owner = Permission(data_actions=("*",))
    assert missing_data_actions(required, [data_owner], []) == ()
    assert len(missing_actions(required, [data_owner], [])) == len(unique)
    assert missing_actions(required, [OWNER], [Permission(data_actions=("*",))]) == ()
    assert len(missing_data_actions(required, [data_owner], [Permission(data_actions=("*",))])) == len(unique)
    spared = Permission(data_actions=("*",), not_data_actions=("*",))
    assert missing_data_actions(required, [data_owner], [spared]) == ()


def test_results_keep_order_and_drop_repeats_ignoring_case() -> None:
    required = ["b/write", "a/read", "B/WRITE", "c/read", "a/read"]
    assert missing_actions(required, [READER], []) == ("b/write",)
    assert missing_actions(required, [], []) == ("b/write", "a/read", "c/read")


def test_built_in_roles_as_azure_defines_them() -> None:
    assert is_granted("Microsoft.Compute/virtualMachines/write", [CONTRIBUTOR])
    assert not is_granted("Microsoft.Authorization/roleAssignments/write", [CONTRIBUTOR])
    assert not is_granted("Microsoft.Authorization/roleAssignments/delete", [CONTRIBUTOR])
    assert is_granted("Microsoft.Authorization/roleAssignments/read", [CONTRIBUTOR])
    assert is_granted("Microsoft.Authorization/roleAssignments/write", [CONTRIBUTOR, OWNER])
    assert is_granted("Microsoft.Network/virtualNetworks/read", [READER])
    assert not is_granted("Microsoft.Storage/storageAccounts/listKeys/action", [READER])


# -- the published data ---------------------------------------------------------------------------------

_ACTION = re.compile(r"[A-Za-z][A-Za-z0-9.]*/[A-Za-z0-9.\-/]+")


@pytest.mark.parametrize("path", sorted(ROLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_each_role_file_is_published_data_with_its_source(path: Path) -> None:
    raw = json.loads(path.read_text())
    role = published_role(path.stem)
    assert role.key == path.stem == raw["key"]
    assert role.role_name.startswith("Palette ") and role.description
    assert role.source.repository == "spectrocloud/librarium"
    assert role.source.path == f"_partials/permissions/_{path.stem}.mdx"
    assert re.fullmatch(r"[0-9a-f]{40}", role.source.commit)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", role.source.read)
    assert role.source.last_update and re.fullmatch(r"\d{4}-\d{2}-\d{2}", role.source.last_update)
    assert role.actions and all(_ACTION.fullmatch(a) for a in role.actions + role.data_actions)
    assert role.not_actions == () and role.not_data_actions == ()
    # A role granted exactly as published lacks nothing it lists.
    own = Permission(role.actions, role.not_actions, role.data_actions, role.not_data_actions)
    assert missing_actions(role.actions, [own], []) == ()
    assert missing_data_actions(role.data_actions, [own], []) == ()


def test_lists_are_kept_exactly_as_published() -> None:
    static = published_role("azure-aks-static-rg-sub-role")
    assert len(static.actions) == 105 and len(static.data_actions) == 342  # repeats included, as published
    assert len(set(static.data_actions)) < len(static.data_actions)
    assert static.actions[0] == "Microsoft.Authorization/classicAdministrators/operationstatuses/read"
    assert "Microsoft.Authorization/roleAssignments/write" in static.actions
    assert len(published_role("azure-iaas-static-rg-sub-role").actions) == 59
    assert len(published_role("azure-aks-static-vnet-role").actions) == 3


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_every_profile_and_placement_has_its_roles(profile: str, placement: str) -> None:
    needed = requirements(profile, placement)
    assert needed
    assert all(r.role.key.startswith(f"azure-{profile}-{placement}-") for r in needed)
    assert sum(r.scope is ScopeKind.TARGET for r in needed) == 1
    for r in needed:
        expected = {"rg-sub": ScopeKind.TARGET, "sub": ScopeKind.SUBSCRIPTION, "vnet": ScopeKind.VIRTUAL_NETWORK}
        assert r.scope is expected[r.role.key.removeprefix(f"azure-{profile}-{placement}-").removesuffix("-role")]


def test_the_requirements_as_the_page_assigns_them() -> None:
    table = {(p, q): [(r.role.key, r.scope.value) for r in requirements(p, q)] for p in PROFILES for q in PLACEMENTS}
    assert table == {
        ("iaas", "static"): [("azure-iaas-static-rg-sub-role", "target"), ("azure-iaas-static-vnet-role",
                                                                           "virtualNetwork")],
        ("iaas", "dynamic"): [("azure-iaas-dynamic-rg-sub-role", "target")],
        ("aks", "static"): [("azure-aks-static-vnet-role", "virtualNetwork"), ("azure-aks-static-sub-role",
                                                                               "subscription"),
                            ("azure-aks-static-rg-sub-role", "target")],
        ("aks", "dynamic"): [("azure-aks-dynamic-sub-role", "subscription"), ("azure-aks-dynamic-rg-sub-role",
                                                                              "target")],
    }
    with pytest.raises(KeyError, match="profile 'eks'"):
        requirements("eks", "static")
    with pytest.raises(KeyError):
        published_role("../requirements")


def test_contributor_lacks_what_aks_static_needs_of_authorization() -> None:
    """Palette's own advice: Contributor is broader than needed, yet not enough for AKS static
    placement, whose rg/sub role writes role assignments."""
    role = published_role("azure-aks-static-rg-sub-role")
    assert missing_actions(role.actions, [CONTRIBUTOR], []) == ("Microsoft.Authorization/roleAssignments/write",)
    assert missing_data_actions(role.data_actions, [CONTRIBUTOR], [])  # Contributor has no data actions
    assert missing_actions(published_role("azure-iaas-dynamic-rg-sub-role").actions, [CONTRIBUTOR], []) == ()
