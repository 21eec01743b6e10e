"""AuthorizationReader through the real azure-mgmt-authorization SDK against the Resource Manager
stand-in, over HTTPS with the stand-in's loopback CA; then the published roles evaluated on what
it read."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from devstack.arm import EVERYONE, create_app
from devstack.httpbase import RunningServer
from devstack.tls import make_loopback_certificate
from shared.clients.authorization import AuthorizationReader, ScopePermissions
from shared.engine.failures import FailureKind, classify
from shared.permissions.catalog import published_role
from shared.permissions.evaluate import missing_actions, missing_data_actions
from tests.credentials import StandInCredential

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.tls import LoopbackCertificate

TENANT = "72f988bf-0000-4000-8000-00000000c1c1"
ARM_SCOPE = "https://management.azure.com/.default"
PRODUCT = "c0ffee00-0000-4000-8000-0000000000aa"  # the product's managed identity (the token's oid)
SUB = "4a4a4a4a-0000-4000-8000-000000000001"
SP = "5e1ec7ed-0000-4000-8000-0000000000aa"  # the onboarded app's service principal
OTHER = "5e1ec7ed-0000-4000-8000-0000000000bb"
SUB_SCOPE = f"/subscriptions/{SUB}"
RG = f"{SUB_SCOPE}/resourceGroups/palette-clusters"
RG_ELSEWHERE = f"{SUB_SCOPE}/resourceGroups/elsewhere"
VNET = f"{RG}/providers/Microsoft.Network/virtualNetworks/palette-vnet"


def stand_in_credential() -> StandInCredential:
    return StandInCredential(tenant=TENANT, subject=PRODUCT)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return make_loopback_certificate(tmp_path_factory.mktemp("authorization-tls"))


@pytest.fixture(scope="module")
def server(cert: LoopbackCertificate) -> Iterator[RunningServer]:
    running = RunningServer(create_app(authority="https://127.0.0.1:44321", tenant_id=TENANT),
                            tls=cert.server_context())
    yield running
    running.stop()


@pytest.fixture
def admin(server: RunningServer, cert: LoopbackCertificate) -> Iterator[requests.Session]:
    server.reset()
    session = requests.Session()
    session.trust_env = False
    session.verify = str(cert.ca_path)
    yield session
    session.close()


@pytest.fixture
def credential() -> StandInCredential:
    return stand_in_credential()


@pytest.fixture
def reader(server: RunningServer, cert: LoopbackCertificate,
           credential: StandInCredential) -> Iterator[AuthorizationReader]:
    with AuthorizationReader(server.url, credential, scope=ARM_SCOPE, connection_verify=str(cert.ca_path)) as built:
        yield built


def seed(admin: requests.Session, server: RunningServer, what: str, **body: Any) -> dict[str, Any]:
    response = admin.post(f"{server.url}/_devstack/{what}", json=body, timeout=10)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def published(key: str) -> dict[str, Any]:
    role = published_role(key)
    return {"roleName": role.role_name, "actions": list(role.actions), "dataActions": list(role.data_actions)}


def test_grants_are_the_principals_at_the_scope_and_above_resolved_to_their_roles(
        reader: AuthorizationReader, admin: requests.Session, server: RunningServer,
        credential: StandInCredential) -> None:
    reader_at_sub = seed(admin, server, "roleAssignments", scope=SUB_SCOPE, principalId=SP, roleName="Reader")
    custom_at_rg = seed(admin, server, "roleAssignments", scope=RG, principalId=SP.upper(), roleDefinition={
        "roleName": "Palette Disks", "actions": ["Microsoft.Compute/disks/*"], "notActions": ["*/delete"]})
    seed(admin, server, "roleAssignments", scope=RG_ELSEWHERE, principalId=SP, roleName="Contributor")
    seed(admin, server, "roleAssignments", scope=VNET, principalId=SP, roleName="Owner")  # below: not inherited
    seed(admin, server, "roleAssignments", scope=RG, principalId=OTHER, roleName="Owner")

    result = reader.permissions_at(SP.upper(), RG)
    assert isinstance(result, ScopePermissions) and (result.principal_id, result.scope) == (SP, RG)
    assert {(g.scope, g.role_name) for g in result.grants} == {(SUB_SCOPE, "Reader"), (RG, "Palette Disks")}
    assert {g.assignment_id for g in result.grants} == {reader_at_sub["id"], custom_at_rg["id"]}
    assert all(g.principal_id == SP for g in result.grants)
    assert result.denies == ()
    assert {(p.actions, p.not_actions) for p in result.granted} == {
        (("*/read",), ()), (("Microsoft.Compute/disks/*",), ("*/delete",))}
    assert {p.source for p in result.granted} == {f"role 'Reader' at {SUB_SCOPE}", f"role 'Palette Disks' at {RG}"}
    assert missing_actions(["Microsoft.Compute/disks/write", "Microsoft.Compute/disks/delete",
                            "Microsoft.Network/virtualNetworks/read"], result.granted, result.denied) == (
        "Microsoft.Compute/disks/delete",)

    calls = [r for r in server.requests if "/providers/Microsoft.Authorization/" in r.path]
    listing = next(r for r in calls if r.path.endswith("/roleAssignments"))
    assert listing.query["$filter"] == [f"atScope() and assignedTo('{SP}')"]
    assert sum(r.path.endswith("/roleDefinitions/" + g.role_definition_id.rsplit("/", 1)[-1]) for r in calls
               for g in result.grants) == 2  # one read per role
    assert credential.scopes and all(s == (ARM_SCOPE,) for s in credential.scopes)


def test_deny_assignments_that_apply_directly_through_everyone_and_not_excluded(
        reader: AuthorizationReader, admin: requests.Session, server: RunningServer) -> None:
    seed(admin, server, "roleAssignments", scope=SUB_SCOPE, principalId=SP, roleName="Owner")
    seed(admin, server, "denyAssignments", scope=SUB_SCOPE, denyAssignmentName="everyone-but-other",
         principals=[EVERYONE], excludePrincipals=[OTHER], actions=["Microsoft.Network/*/delete"])
    seed(admin, server, "denyAssignments", scope=RG, denyAssignmentName="sp-only", principals=[SP],
         actions=["*"], notActions=["*/read"], dataActions=["*"])
    seed(admin, server, "denyAssignments", scope=SUB_SCOPE, denyAssignmentName="subscription-only",
         principals=[SP], doNotApplyToChildScopes=True, actions=["Microsoft.Resources/*"])
    seed(admin, server, "denyAssignments", scope=RG_ELSEWHERE, denyAssignmentName="elsewhere", principals=[EVERYONE],
         actions=["*"])
    seed(admin, server, "denyAssignments", scope=RG, denyAssignmentName="other-only", principals=[OTHER],
         actions=["*"])

    at_rg = reader.permissions_at(SP, RG)
    assert {d.name for d in at_rg.denies} == {"everyone-but-other", "sp-only"}
    assert missing_actions(["Microsoft.Network/virtualNetworks/delete", "Microsoft.Network/virtualNetworks/read",
                            "Microsoft.Compute/disks/write"], at_rg.granted, at_rg.denied) == (
        "Microsoft.Network/virtualNetworks/delete", "Microsoft.Compute/disks/write")
    assert {p.source for p in at_rg.denied} == {"deny assignment 'everyone-but-other'", "deny assignment 'sp-only'"}
    assert {d.name for d in reader.permissions_at(SP, SUB_SCOPE).denies} == {"everyone-but-other",
                                                                             "subscription-only"}
    assert {d.name for d in reader.permissions_at(OTHER, RG).denies} == {"other-only"}


def test_published_roles_evaluated_on_what_was_read(reader: AuthorizationReader, admin: requests.Session,
                                                    server: RunningServer) -> None:
    """The check's question end to end: the role as Palette publishes it, assigned as the page says,
    lacks nothing; a deny assignment or a narrower role is named action by action."""
    seed(admin, server, "roleAssignments", scope=RG, principalId=SP,
         roleDefinition=published("azure-iaas-static-rg-sub-role"))
    seed(admin, server, "roleAssignments", scope=VNET, principalId=SP,
         roleDefinition=published("azure-iaas-static-vnet-role"))
    at_rg, at_vnet = reader.permissions_at(SP, RG), reader.permissions_at(SP, VNET)
    rg_role, vnet_role = published_role("azure-iaas-static-rg-sub-role"), published_role("azure-iaas-static-vnet-role")
    assert missing_actions(rg_role.actions, at_rg.granted, at_rg.denied) == ()
    assert missing_actions(vnet_role.actions, at_vnet.granted, at_vnet.denied) == ()
    assert missing_actions(vnet_role.actions, at_rg.granted, at_rg.denied)  # assigned on the vnet, not above it

    seed(admin, server, "denyAssignments", scope=RG, denyAssignmentName="no-run-command", principals=[EVERYONE],
         actions=["Microsoft.Compute/virtualMachines/runCommand/action"])
    at_rg = reader.permissions_at(SP, RG)
    assert missing_actions(rg_role.actions, at_rg.granted, at_rg.denied) == (
        "Microsoft.Compute/virtualMachines/runCommand/action",)

    aks = published_role("azure-aks-static-rg-sub-role")
    seed(admin, server, "roleAssignments", scope=SUB_SCOPE, principalId=OTHER, roleName="Contributor")
    contributor = reader.permissions_at(OTHER, RG)
    assert missing_actions(aks.actions, contributor.granted, contributor.denied) == (
        "Microsoft.Authorization/roleAssignments/write",)
    assert len(missing_data_actions(aks.data_actions, contributor.granted, contributor.denied)) == len(
        {a.casefold() for a in aks.data_actions})


def test_a_role_that_no_longer_exists_grants_nothing(reader: AuthorizationReader, admin: requests.Session,
                                                     server: RunningServer) -> None:
    seed(admin, server, "roleAssignments", scope=RG, principalId=SP, roleName="Reader")
    gone = {"error": {"code": "RoleDefinitionDoesNotExist", "message": "The specified role definition does not exist."}}
    admin.post(f"{server.url}/_devstack/faults", json={"path": "/roleDefinitions/", "status": 404, "body": gone},
               timeout=5).raise_for_status()
    result = reader.permissions_at(SP, RG)
    assert [(g.role_name, g.permissions) for g in result.grants] == [(None, ())]
    assert missing_actions(["Microsoft.Network/virtualNetworks/read"], result.granted, result.denied)


def test_a_missing_scope_is_permanent_and_named(reader: AuthorizationReader, admin: requests.Session,
                                                server: RunningServer, credential: StandInCredential) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB)
    for scope, code in ((f"/subscriptions/{uuid.uuid4()}", "SubscriptionNotFound"), (RG, "ResourceGroupNotFound")):
        with pytest.raises(ResourceNotFoundError) as caught:
            reader.permissions_at(principal_id=SP, scope=scope)
        assert caught.value.service == "Resource Manager" and caught.value.scope == scope  # type: ignore[attr-defined]
        assert caught.value.error is not None and caught.value.error.code == code
        failure = classify(caught.value)
        assert (failure.kind, failure.reason) == (FailureKind.PERMANENT, "permissions_scope_not_found")
        assert scope in failure.message
        assert not any(token in failure.message for token in credential.tokens)


def test_no_right_to_read_is_permanent_and_names_the_scope(reader: AuthorizationReader, admin: requests.Session,
                                                           server: RunningServer,
                                                           credential: StandInCredential) -> None:
    seed(admin, server, "roleAssignments", scope=RG, principalId=SP, roleName="Reader")
    admin.post(f"{server.url}/_devstack/config", json={"callerAccess": "rbac"}, timeout=5).raise_for_status()
    with pytest.raises(HttpResponseError) as caught:
        reader.permissions_at(SP, RG)
    assert caught.value.status_code == 403
    failure = classify(caught.value)
    assert (failure.kind, failure.reason) == (FailureKind.PERMANENT, "permissions_unreadable")
    assert failure.message.startswith(f"The product's identity may not read role assignments at {RG} ")
    assert PRODUCT in failure.message  # ARM names the identity, which is no secret
    assert not any(token in failure.message or token in str(caught.value) for token in credential.tokens)

    # Reader for the product's identity at the subscription is all it needs.
    seed(admin, server, "roleAssignments", scope=SUB_SCOPE, principalId=PRODUCT, roleName="Reader")
    assert [g.role_name for g in reader.permissions_at(SP, RG).grants] == ["Reader"]


def test_server_errors_and_lost_connections_are_transient(server: RunningServer, cert: LoopbackCertificate,
                                                          admin: requests.Session) -> None:
    from azure.mgmt.authorization import AuthorizationManagementClient

    seed(admin, server, "roleAssignments", scope=RG, principalId=SP, roleName="Reader")
    sdk = AuthorizationManagementClient(stand_in_credential(), SUB, base_url=server.url, credential_scopes=[ARM_SCOPE],
                                        connection_verify=str(cert.ca_path), retry_total=1, retry_backoff_factor=0.01)
    with AuthorizationReader(server.url, stand_in_credential(), client=sdk) as quick:
        for fault, raised in (({"status": 503}, HttpResponseError), ({"status": 429, "headers": {"Retry-After": "0"}},
                                                                     HttpResponseError),
                              ({"drop": True}, (ServiceRequestError, ServiceResponseError))):
            admin.post(f"{server.url}/_devstack/faults", json={"path": "/denyAssignments$", **fault},
                       timeout=5).raise_for_status()
            with pytest.raises(raised) as caught:  # type: ignore[call-overload]
                quick.permissions_at(SP, RG)
            assert caught.value.service == "Resource Manager"  # type: ignore[attr-defined]
            assert classify(caught.value).kind is FailureKind.TRANSIENT
            admin.delete(f"{server.url}/_devstack/faults", timeout=5).raise_for_status()
        assert [g.role_name for g in quick.permissions_at(SP, RG).grants] == ["Reader"]
    sdk.close()


def test_arguments_are_checked_before_any_call(reader: AuthorizationReader, server: RunningServer,
                                               admin: requests.Session) -> None:
    for principal, scope in ((SP, "/providers/Microsoft.Management/managementGroups/x"), (SP, "/"),
                             (SP, "subscriptions/x"), ("palette-app", RG), ("", RG)):
        with pytest.raises(ValueError):
            reader.permissions_at(principal, scope)
    assert server.requests == []


def test_defaults_follow_the_endpoint(cert: LoopbackCertificate, server: RunningServer,
                                      admin: requests.Session) -> None:
    """Built from (endpoint, credential) alone, the token scope is ``<endpoint>/.default``, as in Azure."""
    credential = stand_in_credential()
    seed(admin, server, "subscriptions", subscriptionId=SUB, resourceGroups=["palette-clusters"])
    with AuthorizationReader(server.url + "/", credential, connection_verify=str(cert.ca_path)) as built:
        assert built.endpoint == server.url and repr(built) == f"AuthorizationReader(endpoint={server.url!r})"
        with pytest.raises(ClientAuthenticationError) as refused:  # the stand-in takes only ARM's audience
            built.permissions_at(SP, RG)
    assert credential.scopes[0] == (f"{server.url}/.default",)
    assert refused.value.status_code == 401 and refused.value.service == "Resource Manager"  # type: ignore[attr-defined]
    assert classify(refused.value).kind is FailureKind.TRANSIENT  # our own token: an operator's fix
    with pytest.raises(ValueError, match="endpoint"):
        AuthorizationReader("", credential)
