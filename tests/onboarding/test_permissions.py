"""``azure.permissions``: the service principal's Azure role and deny assignments checked against
the roles Palette publishes, before anything is made, through the real azure-mgmt-authorization
client against the Resource Manager stand-in; and checked again by the drift pass.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import requests

from shared.engine import OutcomeKind
from shared.permissions.catalog import published_role
from shared.rotation.drift import drift_pass

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

SUBSCRIPTION = "/subscriptions/6d7e8f90-0000-4000-8000-00000000aa01"
EVERYONE = "00000000-0000-0000-0000-000000000000"
#: The one role Palette publishes for IaaS clusters with dynamic placement, at the resource group.
IAAS_DYNAMIC = published_role("azure-iaas-dynamic-rg-sub-role")


def _arm(world: World, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(f"{world.stack.settings['RESOURCE_MANAGER_ENDPOINT']}/_devstack/{path}", json=body,
                           verify=world.verify, timeout=10)
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, Any] = answer.json()
    return result


def _principal(world: World, client_id: str) -> str:
    assert world.deps.clients.graph is not None
    return world.deps.clients.graph.service_principal_id(client_id)


def _grant(world: World, principal: str, scope: str, actions: list[str], name: str = "palette-iaas") -> None:
    _arm(world, "roleAssignments", {"scope": scope, "principalId": principal,
                                    "roleDefinition": {"roleName": f"{name}-{uuid.uuid4().hex[:6]}",
                                                       "actions": actions}})


def _request(world: World, **permissions: Any) -> tuple[dict[str, Any], str, str]:
    """A request asking for the check at a fresh resource group: (body, principal id, the scope)."""
    body = world.request()
    group = f"rg-{uuid.uuid4().hex[:8]}"
    _arm(world, "subscriptions", {"subscriptionId": SUBSCRIPTION.rsplit("/", 1)[1], "resourceGroups": [group]})
    scope = f"{SUBSCRIPTION}/resourceGroups/{group}"
    body["azure"]["permissions"] = {"profile": "iaas", "placement": "dynamic", "scopes": [scope], **permissions}
    return body, _principal(world, body["azure"]["clientId"]), scope


def _failed_field(world: World) -> str:
    [failed] = [e for e in world.events() if e["type"] == "palette.onboarding.failed"]
    return str(failed["data"].get("field"))


def _nothing_made(world: World, body: dict[str, Any]) -> None:
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    assert world.palette_accounts(body["accountName"]) == []


def test_a_principal_holding_palettes_role_is_onboarded_and_the_event_says_so(world: World) -> None:
    body, principal, scope = _request(world)
    _grant(world, principal, scope, list(IAAS_DYNAMIC.actions))

    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    [validated] = [e for e in world.events() if e["type"] == "palette.onboarding.validated"]
    [finding] = validated["data"]["permissions"]
    assert finding["scope"] == scope and finding["outcome"] == "ok" and finding["missingCount"] == 0
    assert finding["roles"] == [IAAS_DYNAMIC.role_name]


def test_a_role_inherited_from_the_subscription_counts_and_a_wildcard_grants(world: World) -> None:
    body, principal, _ = _request(world)
    _arm(world, "roleAssignments", {"scope": SUBSCRIPTION, "principalId": principal, "roleName": "Owner"})

    assert world.run(body).kind is OutcomeKind.SUCCEEDED


def test_missing_actions_fail_the_check_naming_each_before_anything_is_made(world: World) -> None:
    body, principal, scope = _request(world)
    kept = [a for a in IAAS_DYNAMIC.actions if not a.startswith("Microsoft.Network/")]
    _grant(world, principal, scope, kept)
    absent = [a for a in IAAS_DYNAMIC.actions if a.startswith("Microsoft.Network/")]

    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "permissions_missing", outcome.message
    assert scope in outcome.message and absent[0] in outcome.message
    assert _failed_field(world) == "azure.permissions"
    _nothing_made(world, body)


def test_not_actions_take_back_what_the_same_role_grants(world: World) -> None:
    body, principal, scope = _request(world)
    _arm(world, "roleAssignments", {"scope": scope, "principalId": principal, "roleDefinition": {
        "roleName": f"almost-{uuid.uuid4().hex[:6]}", "actions": ["*"],
        "notActions": ["Microsoft.Compute/virtualMachines/*"]}})

    outcome = world.run(body)
    assert outcome.reason == "permissions_missing", outcome.message
    assert "Microsoft.Compute/virtualMachines/" in outcome.message
    _nothing_made(world, body)


def test_a_deny_assignment_wins_over_a_grant_and_is_named_as_such(world: World) -> None:
    body, principal, scope = _request(world)
    _grant(world, principal, scope, list(IAAS_DYNAMIC.actions))
    denied = IAAS_DYNAMIC.actions[0]
    _arm(world, "denyAssignments", {"scope": SUBSCRIPTION, "denyAssignmentName": "locked",
                                    "principals": [EVERYONE], "actions": [denied]})

    outcome = world.run(body)
    assert outcome.reason == "permissions_missing", outcome.message
    assert f"denied by a deny assignment {denied}" in outcome.message
    _nothing_made(world, body)


def test_not_enforced_a_shortfall_is_reported_and_the_onboarding_goes_on(world: World) -> None:
    body, _, _ = _request(world, enforce=False)

    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    [validated] = [e for e in world.events() if e["type"] == "palette.onboarding.validated"]
    [finding] = validated["data"]["permissions"]
    assert finding["outcome"] == "missing" and finding["missingCount"] == len(IAAS_DYNAMIC.actions)
    assert len(finding["missing"]) < finding["missingCount"]  # bounded, the count says the rest


def test_a_subscription_of_another_tenant_cannot_be_read_and_says_why(world: World) -> None:
    other = "/subscriptions/6d7e8f90-0000-4000-8000-00000000bb02"
    _arm(world, "subscriptions", {"subscriptionId": other.rsplit("/", 1)[1], "tenantId": str(uuid.uuid4())})
    body = world.request()
    body["azure"]["permissions"] = {"profile": "iaas", "placement": "dynamic", "scopes": [other]}

    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "permissions_unreadable", outcome.message
    assert "another Entra tenant" in outcome.message and _failed_field(world) == "azure.permissions.scopes"
    _nothing_made(world, body)


def test_the_drift_pass_announces_a_needed_action_that_disappeared(world: World) -> None:
    body, principal, scope = _request(world)
    _grant(world, principal, scope, list(IAAS_DYNAMIC.actions))
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    world.events()
    config = world.deps.settings.pipeline.rotation
    drift_pass(world.deps.clients, world.deps.queue, config, whole=True)
    assert [e for e in world.events() if e["subject"] == body["accountName"]] == []

    lost = IAAS_DYNAMIC.actions[-1]
    _arm(world, "denyAssignments", {"scope": scope, "denyAssignmentName": "new-policy", "principals": [principal],
                                    "actions": [lost]})
    drift_pass(world.deps.clients, world.deps.queue, config, whole=True)
    [drifted] = [e for e in world.events() if e["subject"] == body["accountName"]]
    assert drifted["type"] == "palette.onboarding.account.permissions_drifted"
    assert drifted["data"]["permissions"][0]["denied"] == [lost]
    row = world.deps.clients.inventory.get(body["accountName"])
    assert row is not None and "permissions" in row.drift


def test_a_scope_that_does_not_exist_is_named(world: World) -> None:
    body = world.request()
    missing = f"{SUBSCRIPTION}/resourceGroups/no-such-group"
    body["azure"]["permissions"] = {"profile": "iaas", "placement": "dynamic", "scopes": [missing]}

    outcome = world.run(body)
    assert outcome.reason == "permissions_scope_not_found" and missing in outcome.message, outcome.message
    _nothing_made(world, body)
