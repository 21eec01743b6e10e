"""Conformance of the Resource Manager stand-in, driven through the real ``azure-mgmt-authorization``.

The SDK (4.0.0, API version 2022-04-01) is the judge: it lists, pages, gets and creates role
assignments, reads role definitions by id in both forms, lists deny assignments, and gets the
azure-core exceptions ARM's answers cause. Raw HTTPS only where the SDK hides the wire (the 401
challenge, api-version checks, malformed input, the admin API).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import Permission, RoleAssignmentCreateParameters, RoleDefinition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.arm import EVERYONE, create_app
from devstack.arm.models import Scope, parse_scope
from devstack.httpbase import HttpError, RunningServer
from devstack.tls import make_loopback_certificate
from tests.credentials import StandInCredential

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.tls import LoopbackCertificate

TENANT = "72f988bf-0000-4000-8000-00000000a4a4"
OTHER_TENANT = "72f988bf-0000-4000-8000-00000000b5b5"
AUTHORITY = "https://127.0.0.1:44321"  # the identity stand-in's address; never contacted here
ARM_SCOPE = "https://management.azure.com/.default"
SUB = "3f1e1d2c-0000-4000-8000-000000000001"
SUB2 = "3f1e1d2c-0000-4000-8000-000000000002"
CALLER = "c0ffee00-0000-4000-8000-000000000001"  # the token's oid: the product's identity
P = "5e1ec7ed-0000-4000-8000-000000000001"  # the onboarded principal
P2 = "5e1ec7ed-0000-4000-8000-000000000002"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
RG1 = f"/subscriptions/{SUB}/resourceGroups/rg-one"
RG2 = f"/subscriptions/{SUB}/resourceGroups/rg-two"
VNET = f"{RG1}/providers/Microsoft.Network/virtualNetworks/vnet-one"


def stand_in_credential(*, audience: str | None = None, tenant: str = TENANT, subject: str = CALLER,
                        ) -> StandInCredential:
    return StandInCredential(tenant=tenant, subject=subject, audience=audience)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return make_loopback_certificate(tmp_path_factory.mktemp("arm-tls"))


@pytest.fixture(scope="module")
def ca_path(cert: LoopbackCertificate) -> str:
    return str(cert.ca_path)


@pytest.fixture(scope="module")
def server(cert: LoopbackCertificate) -> Iterator[RunningServer]:
    running = RunningServer(create_app(authority=AUTHORITY, tenant_id=TENANT), tls=cert.server_context())
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _fresh(server: RunningServer) -> None:
    server.reset()


@pytest.fixture
def admin(server: RunningServer, ca_path: str) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE from the environment would beat session.verify
    session.verify = ca_path
    yield session
    session.close()


def seed(admin: requests.Session, server: RunningServer, what: str, **body: Any) -> dict[str, Any]:
    response = admin.post(f"{server.url}/_devstack/{what}", json=body, timeout=10)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def client(server: RunningServer, ca_path: str, credential: StandInCredential | None = None,
           **kwargs: Any) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(credential or stand_in_credential(), SUB, base_url=server.url,
                                         credential_scopes=[ARM_SCOPE], connection_verify=ca_path,
                                         retry_backoff_factor=0.01, **kwargs)


@pytest.fixture
def arm(server: RunningServer, ca_path: str) -> Iterator[AuthorizationManagementClient]:
    with client(server, ca_path) as sdk:
        yield sdk


def raw(server: RunningServer, ca_path: str, method: str, path: str, *, token: str | None = None,
        **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{server.url}{path}", headers=headers, verify=ca_path, timeout=10, **kwargs)


def arm_token(**kwargs: Any) -> str:
    return stand_in_credential(**kwargs).get_token(ARM_SCOPE).token


# -- role assignments --------------------------------------------------------------------------------------


def test_list_for_scope_covers_above_and_below_and_filters_as_arm(arm: AuthorizationManagementClient,
                                                                   admin: requests.Session,
                                                                   server: RunningServer) -> None:
    made = {}
    for scope, principal in ((f"/subscriptions/{SUB}", P), (RG1, P), (VNET, P), (RG2, P), (RG1, P2)):
        made[(scope, principal)] = seed(admin, server, "roleAssignments", scope=scope, principalId=principal,
                                        roleName="Reader")["name"]

    def listed(filter: str | None = None) -> set[tuple[str, str]]:
        return {(a.scope, a.principal_id) for a in arm.role_assignments.list_for_scope(RG1, filter=filter)}

    assert listed() == {(f"/subscriptions/{SUB}", P), (RG1, P), (VNET, P), (RG1, P2)}
    assert listed("atScope()") == {(f"/subscriptions/{SUB}", P), (RG1, P), (RG1, P2)}
    assert listed(f"assignedTo('{P}')") == listed(f"principalId eq '{P}'") == {
        (f"/subscriptions/{SUB}", P), (RG1, P), (VNET, P)}
    assert listed(f"atScope() and assignedTo('{P}')") == {(f"/subscriptions/{SUB}", P), (RG1, P)}
    assert listed(f"assignedTo('{P2}') and atScope()") == {(RG1, P2)}

    first = next(iter(arm.role_assignments.list_for_scope(RG1, filter=f"atScope() and assignedTo('{P2}')")))
    assert first.id == f"{RG1}/providers/Microsoft.Authorization/roleAssignments/{made[(RG1, P2)]}"
    reader_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    assert first.role_definition_id == reader_id
    assert first.principal_type == "ServicePrincipal" and first.type == "Microsoft.Authorization/roleAssignments"
    assert first.created_on is not None


@pytest.mark.parametrize("bad", ["atScope() and principalId eq '{P}'", "principalId eq {P}", "principalId eq ''",
                                 "roleName eq 'Reader'", "atScope() or assignedTo('{P}')"])
def test_filters_arm_refuses(arm: AuthorizationManagementClient, admin: requests.Session, server: RunningServer,
                             bad: str) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB, resourceGroups=["rg-one"])
    text = bad.format(P=P)
    with pytest.raises(HttpResponseError) as caught:
        list(arm.role_assignments.list_for_scope(RG1, filter=text))
    assert caught.value.status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "UnsupportedQuery"
    assert caught.value.error.message == (
        f"The filter '{text}' is not supported. Supported filters are either 'atScope()' or "
        "'principalId eq '{value}' or assignedTo('{value}')'.")


def test_lists_page_with_an_absolute_next_link(arm: AuthorizationManagementClient, admin: requests.Session,
                                               server: RunningServer) -> None:
    assert admin.post(f"{server.url}/_devstack/config", json={"pageSize": 2}, timeout=5).json()["pageSize"] == 2
    principals = [str(uuid.uuid4()) for _ in range(5)]
    for principal in principals:
        seed(admin, server, "roleAssignments", scope=RG1, principalId=principal, roleName="Reader")
    assert sorted(a.principal_id for a in arm.role_assignments.list_for_scope(RG1, filter="atScope()")) == sorted(
        principals)
    calls = [r for r in server.requests if r.path.endswith("/roleAssignments")]
    assert len(calls) == 3
    assert [("$skipToken" in r.query) for r in calls] == [False, True, True]
    assert all(r.query["$filter"] == ["atScope()"] and r.query["api-version"] == ["2022-04-01"] for r in calls)
    first = requests.get(f"{server.url}{RG1}/providers/Microsoft.Authorization/roleAssignments",
                         params={"api-version": "2022-04-01"}, headers={"Authorization": f"Bearer {arm_token()}"},
                         verify=admin.verify, timeout=10).json()
    assert len(first["value"]) == 2 and urlsplit(first["nextLink"]).netloc == urlsplit(server.url).netloc
    assert first["nextLink"].startswith("https://")


def test_create_get_and_delete_a_role_assignment(arm: AuthorizationManagementClient, admin: requests.Session,
                                                 server: RunningServer) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB, resourceGroups=["rg-one"])
    name = str(uuid.uuid4())
    reader_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    params = RoleAssignmentCreateParameters(role_definition_id=reader_id, principal_id=P,
                                            principal_type="ServicePrincipal", description="palette")
    created = arm.role_assignments.create(RG1, name, params)
    assert (created.name, created.scope, created.principal_id, created.description) == (name, RG1, P, "palette")
    assert arm.role_assignments.create(RG1, name, params).name == name  # the same PUT again
    assert arm.role_assignments.get(RG1, name).role_definition_id == reader_id
    assert arm.role_assignments.get_by_id(created.id).principal_id == P
    with pytest.raises(ResourceExistsError) as exists:
        arm.role_assignments.create(RG1, str(uuid.uuid4()), params)
    assert exists.value.error is not None and exists.value.error.code == "RoleAssignmentExists"
    with pytest.raises(HttpResponseError) as changed:
        arm.role_assignments.create(RG1, name, RoleAssignmentCreateParameters(role_definition_id=reader_id,
                                                                              principal_id=P2))
    assert changed.value.status_code == 400
    missing_role = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}"
    with pytest.raises(HttpResponseError) as unknown_role:
        arm.role_assignments.create(RG1, str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=missing_role, principal_id=P))
    assert unknown_role.value.status_code == 400
    assert unknown_role.value.error is not None and unknown_role.value.error.code == "RoleDefinitionDoesNotExist"
    with pytest.raises(HttpResponseError) as not_guid:
        arm.role_assignments.create(RG1, "not-a-guid", params)
    assert not_guid.value.error is not None and not_guid.value.error.code == "InvalidRoleAssignmentId"

    assert arm.role_assignments.delete(RG1, name).name == name  # type: ignore[union-attr]
    assert arm.role_assignments.delete(RG1, name) is None  # 204: already gone
    with pytest.raises(ResourceNotFoundError) as gone:
        arm.role_assignments.get(RG1, name)
    assert gone.value.error is not None and gone.value.error.code == "RoleAssignmentNotFound"


def test_missing_and_malformed_scopes(arm: AuthorizationManagementClient, admin: requests.Session,
                                      server: RunningServer) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB)
    for scope, code in ((f"/subscriptions/{SUB2}", "SubscriptionNotFound"), (RG1, "ResourceGroupNotFound"),
                        (f"{RG1}/providers/Microsoft.Network/virtualNetworks/v", "ResourceGroupNotFound")):
        with pytest.raises(ResourceNotFoundError) as caught:
            list(arm.role_assignments.list_for_scope(scope))
        assert caught.value.error is not None and caught.value.error.code == code
        assert (SUB2 if code == "SubscriptionNotFound" else "rg-one") in caught.value.error.message
    with pytest.raises(HttpResponseError) as malformed:
        list(arm.role_assignments.list_for_scope("/subscriptions/not-a-guid"))
    assert malformed.value.status_code == 400
    assert malformed.value.error is not None and malformed.value.error.code == "InvalidSubscriptionId"


# -- role definitions --------------------------------------------------------------------------------------


def test_built_in_role_definitions_by_id_in_both_forms(arm: AuthorizationManagementClient, admin: requests.Session,
                                                       server: RunningServer) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB, resourceGroups=["rg-one"])
    tenant_form = arm.role_definitions.get_by_id(f"/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}")
    assert tenant_form.id == f"/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}"
    assert tenant_form.role_name == "Contributor" and tenant_form.role_type == "BuiltInRole"
    assert tenant_form.permissions[0].actions == ["*"]  # type: ignore[index]
    assert "Microsoft.Authorization/*/Write" in tenant_form.permissions[0].not_actions  # type: ignore[index]
    assert len(tenant_form.permissions[0].not_actions) == 11  # type: ignore[index]
    sub_form = arm.role_definitions.get_by_id(f"/subscriptions/{SUB}/providers/Microsoft.Authorization/"
                                              f"roleDefinitions/{READER}")
    assert sub_form.id == f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    assert sub_form.permissions[0].actions == ["*/read"]  # type: ignore[index]
    at_group = arm.role_definitions.get(RG1, OWNER)
    assert at_group.id == f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"
    assert at_group.assignable_scopes == ["/"]
    assert [d.role_name for d in arm.role_definitions.list(RG1, filter="roleName eq 'Contributor'")] == ["Contributor"]
    assert {d.role_name for d in arm.role_definitions.list(RG1, filter="type eq 'BuiltInRole'")} == {
        "Owner", "Contributor", "Reader"}
    with pytest.raises(ResourceNotFoundError) as missing:
        arm.role_definitions.get_by_id(f"/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}")
    assert missing.value.error is not None and missing.value.error.code == "RoleDefinitionDoesNotExist"
    with pytest.raises(HttpResponseError) as refused:
        list(arm.role_definitions.list(RG1, filter="roleName = 'x'"))
    assert refused.value.status_code == 400


def test_custom_role_definitions_by_put_and_where_they_show(arm: AuthorizationManagementClient,
                                                            admin: requests.Session, server: RunningServer) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB, resourceGroups=["rg-one"])
    seed(admin, server, "subscriptions", subscriptionId=SUB2)
    name = str(uuid.uuid4())
    role = RoleDefinition(role_name="Palette Test Deployer", description="test", role_type="CustomRole",
                          permissions=[Permission(actions=["Microsoft.Compute/*"], not_actions=["*/delete"],
                                                  data_actions=["Microsoft.Storage/*/read"])],
                          assignable_scopes=[f"/subscriptions/{SUB}"])
    created = arm.role_definitions.create_or_update(f"/subscriptions/{SUB}", name, role)
    assert (created.name, created.role_type, created.role_name) == (name, "CustomRole", "Palette Test Deployer")
    assert created.permissions[0].data_actions == ["Microsoft.Storage/*/read"]  # type: ignore[index]
    role.description = "changed"
    assert arm.role_definitions.create_or_update(f"/subscriptions/{SUB}", name, role).description == "changed"
    assert [d.name for d in arm.role_definitions.list(RG1, filter="roleName eq 'Palette Test Deployer'")] == [name]
    assert not list(arm.role_definitions.list(f"/subscriptions/{SUB2}", filter="type eq 'CustomRole'"))
    with pytest.raises(ResourceExistsError) as clash:
        arm.role_definitions.create_or_update(f"/subscriptions/{SUB}", str(uuid.uuid4()), role)
    assert clash.value.error is not None and clash.value.error.code == "RoleDefinitionWithSameNameExists"
    assigned = arm.role_assignments.create(RG1, str(uuid.uuid4()), RoleAssignmentCreateParameters(
        role_definition_id=created.id, principal_id=P))
    assert assigned.role_definition_id == created.id


# -- deny assignments --------------------------------------------------------------------------------------


def test_deny_assignments_list_at_scope_with_every_filter(arm: AuthorizationManagementClient,
                                                          admin: requests.Session, server: RunningServer) -> None:
    everyone = seed(admin, server, "denyAssignments", scope=f"/subscriptions/{SUB}", denyAssignmentName="blueprint",
                    principals=[EVERYONE], excludePrincipals=[P2], actions=["*/delete"],
                    notActions=["Microsoft.Compute/disks/delete"])
    own_scope = seed(admin, server, "denyAssignments", scope=f"/subscriptions/{SUB}", denyAssignmentName="stack",
                     principals=[{"id": P, "type": "ServicePrincipal"}], doNotApplyToChildScopes=True,
                     permissions=[{"actions": ["Microsoft.Network/*/write"], "dataActions": ["*"]}])
    seed(admin, server, "denyAssignments", scope=RG2, denyAssignmentName="managed-app", principals=[P],
         actions=["*"])
    seed(admin, server, "subscriptions", subscriptionId=SUB, resourceGroups=["rg-one"])

    def names(scope: str, filter: str | None = None) -> set[str]:
        return {d.deny_assignment_name for d in arm.deny_assignments.list_for_scope(scope, filter=filter)}

    assert names(RG1, "atScope()") == {"blueprint", "stack"}  # listed; that "stack" stops at its scope is ours
    assert names(f"/subscriptions/{SUB}") == {"blueprint", "stack", "managed-app"}
    assert names(f"/subscriptions/{SUB}", f"principalId eq '{P}'") == {"stack", "managed-app"}
    assert names(RG1, "denyAssignmentName eq 'blueprint'") == {"blueprint"}
    gdpr = list(arm.deny_assignments.list_for_scope(f"/subscriptions/{SUB}", filter=f"gdprExportPrincipalId eq '{P2}'"))
    assert [d.deny_assignment_name for d in gdpr] == ["blueprint"] and gdpr[0].permissions is None

    blueprint = arm.deny_assignments.get_by_id(everyone["id"])
    assert blueprint.principals[0].id == EVERYONE and blueprint.principals[0].type == "SystemDefined"  # type: ignore[index]
    assert blueprint.exclude_principals[0].id == P2  # type: ignore[index]
    assert blueprint.permissions[0].not_actions == ["Microsoft.Compute/disks/delete"]  # type: ignore[index]
    assert blueprint.is_system_protected is True and blueprint.do_not_apply_to_child_scopes is False
    stack = arm.deny_assignments.get(f"/subscriptions/{SUB}", own_scope["name"])
    assert stack.do_not_apply_to_child_scopes is True and stack.permissions[0].data_actions == ["*"]  # type: ignore[index]
    with pytest.raises(HttpResponseError) as refused:
        list(arm.deny_assignments.list_for_scope(RG1, filter="atScope() and principalId eq 'x'"))
    assert refused.value.status_code == 400


# -- the wire: authentication, api-version, the caller's own rights -----------------------------------------


def test_authentication_as_arm_answers_it(server: RunningServer, ca_path: str, admin: requests.Session) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB)
    path = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01"
    bare = raw(server, ca_path, "GET", path)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "AuthenticationFailed"
    challenge = bare.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer authorization_uri="{AUTHORITY}/"') and 'error="invalid_token"' in challenge
    cases = {
        arm_token(audience="https://vault.azure.net"): "InvalidAuthenticationTokenAudience",
        "not-a-jwt": "InvalidAuthenticationToken",
        arm_token(tenant=OTHER_TENANT): "InvalidAuthenticationTokenTenant",
    }
    for token, code in cases.items():
        answer = raw(server, ca_path, "GET", path, token=token)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == code, answer.text
        assert token not in answer.text
    for audience in ("https://management.azure.com", "https://management.core.windows.net/"):
        assert raw(server, ca_path, "GET", path, token=arm_token(audience=audience)).status_code == 200
    credential = stand_in_credential(audience="https://vault.azure.net")
    with client(server, ca_path, credential) as wrong, pytest.raises(ClientAuthenticationError):
        list(wrong.role_assignments.list_for_scope(f"/subscriptions/{SUB}"))
    assert credential.scopes and all(s == (ARM_SCOPE,) for s in credential.scopes)


def test_api_version_is_required_and_checked(server: RunningServer, ca_path: str, admin: requests.Session) -> None:
    seed(admin, server, "subscriptions", subscriptionId=SUB)
    base = f"/subscriptions/{SUB}/providers/Microsoft.Authorization"
    missing = raw(server, ca_path, "GET", f"{base}/roleAssignments", token=arm_token())
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"
    wrong = raw(server, ca_path, "GET", f"{base}/denyAssignments?api-version=2015-07-01", token=arm_token())
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert "'2018-07-01-preview', '2022-04-01'" in wrong.json()["error"]["message"]
    lower = raw(server, ca_path, "GET", f"/SUBSCRIPTIONS/{SUB}/PROVIDERS/microsoft.authorization/ROLEASSIGNMENTS"
                                        "?api-version=2022-04-01", token=arm_token())
    assert lower.status_code == 200 and lower.headers["x-ms-request-id"]


def test_callers_need_their_own_rights_with_rbac_on(server: RunningServer, ca_path: str,
                                                    admin: requests.Session) -> None:
    seed(admin, server, "roleAssignments", scope=RG1, principalId=P, roleName="Reader")
    assert admin.post(f"{server.url}/_devstack/config", json={"callerAccess": "rbac"}, timeout=5).status_code == 200
    with client(server, ca_path) as sdk:
        with pytest.raises(HttpResponseError) as refused:
            list(sdk.role_assignments.list_for_scope(RG1))
        assert refused.value.status_code == 403
        assert refused.value.error is not None and refused.value.error.code == "AuthorizationFailed"
        assert refused.value.error.message == (
            f"The client '{CALLER}' with object id '{CALLER}' does not have authorization to perform action "
            f"'Microsoft.Authorization/roleAssignments/read' over scope '{RG1}/providers/Microsoft.Authorization' "
            "or the scope is invalid. If access was recently granted, please refresh your credentials.")
        seed(admin, server, "roleAssignments", scope=f"/subscriptions/{SUB}", principalId=CALLER,
             roleName="Contributor")
        assert len(list(sdk.role_assignments.list_for_scope(RG1))) == 2  # inherited from the subscription
        with pytest.raises(HttpResponseError) as write:
            sdk.role_assignments.create(RG1, str(uuid.uuid4()), RoleAssignmentCreateParameters(
                role_definition_id=f"/providers/Microsoft.Authorization/roleDefinitions/{READER}", principal_id=P2))
        assert write.value.status_code == 403  # Contributor's notActions: Microsoft.Authorization/*/Write
        seed(admin, server, "denyAssignments", scope=RG1, denyAssignmentName="no-reading", principals=[EVERYONE],
             actions=["Microsoft.Authorization/*/read"])
        with pytest.raises(HttpResponseError) as denied:
            list(sdk.deny_assignments.list_for_scope(RG1))
        assert denied.value.status_code == 403
        assert len(list(sdk.role_assignments.list_for_scope(f"/subscriptions/{SUB}", filter="atScope()"))) == 1


def test_an_injected_server_error_is_retried_by_the_sdk(arm: AuthorizationManagementClient, server: RunningServer,
                                                        admin: requests.Session) -> None:
    seed(admin, server, "roleAssignments", scope=RG1, principalId=P, roleName="Reader")
    fault = {"path": "/roleAssignments$", "status": 503, "times": 1}
    assert admin.post(f"{server.url}/_devstack/faults", json=fault, timeout=5).status_code == 201
    assert len(list(arm.role_assignments.list_for_scope(RG1))) == 1
    assert [r.status for r in server.requests if r.path.endswith("/roleAssignments")] == [503, 200]


# -- the admin API -------------------------------------------------------------------------------------------


def test_admin_api_seeds_state_and_reset_restores_the_built_ins(server: RunningServer, admin: requests.Session,
                                                                arm: AuthorizationManagementClient) -> None:
    url = server.url
    assert admin.get(f"{url}/_devstack/config", timeout=5).json() == {"pageSize": 100, "callerAccess": "open"}
    made = seed(admin, server, "subscriptions", subscriptionId=SUB, displayName="prod", resourceGroups=["a", "A", "b"])
    assert made["resourceGroups"] == ["a", "b"] and made["tenantId"] == TENANT
    custom = seed(admin, server, "roleDefinitions", roleName="Palette Flat", actions=["Microsoft.Compute/*/read"])
    assert custom["properties"]["assignableScopes"] == [f"/subscriptions/{SUB}"]
    by_id = seed(admin, server, "roleAssignments", scope=f"/subscriptions/{SUB}/resourceGroups/a", principalId=P,
                 roleDefinitionId=custom["id"])
    inline = seed(admin, server, "roleAssignments", scope=VNET, principalId=P, roleDefinition={
        "roleName": "Palette Inline", "permissions": [{"actions": ["Microsoft.Network/*"], "notActions": []}]})
    assert inline["properties"]["scope"] == VNET
    inline_role = arm.role_definitions.get_by_id(inline["properties"]["roleDefinitionId"])
    assert inline_role.role_name == "Palette Inline" and inline_role.assignable_scopes == [f"/subscriptions/{SUB}"]
    assert {a.name for a in arm.role_assignments.list_for_scope(f"/subscriptions/{SUB}")} == {
        by_id["name"], inline["name"]}
    for bad in ({"scope": RG1, "principalId": P}, {"scope": RG1, "principalId": P, "roleName": "Reader",
                                                   "roleDefinitionId": READER},
                {"scope": "/nowhere", "principalId": P, "roleName": "Reader"},
                {"scope": RG1, "principalId": "x", "roleName": "Reader"}):
        assert admin.post(f"{url}/_devstack/roleAssignments", json=bad, timeout=5).status_code == 400, bad
    assert admin.post(f"{url}/_devstack/roleAssignments", json={"scope": RG1, "principalId": P, "roleName": "Nope"},
                      timeout=5).status_code == 404
    assert admin.post(f"{url}/_devstack/denyAssignments", json={"scope": RG1, "denyAssignmentName": "x",
                                                                "principals": []}, timeout=5).status_code == 400
    for bad_config in ({"pageSize": 0}, {"pageSize": True}, {"callerAccess": "x"}, {"other": 1}):
        assert admin.post(f"{url}/_devstack/config", json=bad_config, timeout=5).status_code == 400
    state = admin.get(f"{url}/_devstack/state", timeout=5).json()
    assert len(state["roleAssignments"]) == 2 and {d["roleName"] for d in state["roleDefinitions"]} >= {
        "Palette Flat", "Palette Inline", "Owner"}
    assert admin.post(f"{url}/_devstack/reset", timeout=5).status_code == 204
    state = admin.get(f"{url}/_devstack/state", timeout=5).json()
    assert state["subscriptions"] == state["roleAssignments"] == state["denyAssignments"] == []
    assert sorted(d["roleName"] for d in state["roleDefinitions"]) == ["Contributor", "Owner", "Reader"]
    recorded = admin.get(f"{url}/_devstack/requests", timeout=5).json()["items"]
    assert recorded == []


def test_scopes_parse_as_arm_writes_them() -> None:
    assert parse_scope("/") == parse_scope("") == Scope("/")
    assert parse_scope(f"/subscriptions/{SUB}/").subscription_id == SUB
    group = parse_scope(f"/SUBSCRIPTIONS/{SUB}/resourcegroups/My-RG")
    assert (group.resource_group, group.text) == ("My-RG", f"/SUBSCRIPTIONS/{SUB}/resourcegroups/My-RG")
    vnet = parse_scope(VNET + "/subnets/default")
    assert vnet.resource_group == "rg-one" and parse_scope(RG1).covers(vnet) and not vnet.covers(parse_scope(RG1))
    assert parse_scope("/").covers(vnet) and not parse_scope(RG1).covers(parse_scope(RG1 + "x"))
    for bad in ("/subscriptions", "/resourceGroups/x", f"/subscriptions/{SUB}/resourceGroups",
                f"{RG1}/providers/Microsoft.Network/virtualNetworks", f"{RG1}/foo/bar",
                "/providers/Microsoft.Management/managementGroups/root"):
        with pytest.raises(HttpError) as caught:
            parse_scope(bad)
        assert caught.value.status == 400


# -- robustness ----------------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?%"), max_size=20)
_PATHS = st.one_of(
    st.sampled_from([f"/subscriptions/{SUB}", RG1, VNET, "", "/x", f"/subscriptions/{SUB}/resourceGroups"]).flatmap(
        lambda scope: st.sampled_from(["roleAssignments", "roleDefinitions", "denyAssignments"]).flatmap(
            lambda kind: st.one_of(st.just(f"{scope}/providers/Microsoft.Authorization/{kind}"),
                                   _TEXT.map(lambda s: f"{scope}/providers/Microsoft.Authorization/{kind}/{s}")))),
    _TEXT.map(lambda s: "/" + s),
    st.sampled_from(["/_devstack/roleAssignments", "/_devstack/denyAssignments", "/_devstack/roleDefinitions",
                     "/_devstack/subscriptions", "/_devstack/config"]),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
_BODIES = st.one_of(_JSON, st.fixed_dictionaries({}, optional={
    "scope": st.sampled_from([RG1, VNET, "/", "x", ""]), "principalId": st.sampled_from([P, "x", EVERYONE]),
    "roleName": st.sampled_from(["Reader", "x"]), "roleDefinition": _JSON, "principals": _JSON,
    "permissions": _JSON, "actions": _JSON, "denyAssignmentName": _JSON, "properties": _JSON,
    "pageSize": _JSON, "callerAccess": _JSON, "subscriptionId": st.sampled_from([SUB, "x"]),
}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]), path=_PATHS, body=_BODIES,
       filter=st.one_of(st.none(), _TEXT, st.sampled_from(["atScope()", f"assignedTo('{P}')", "roleName eq 'x'"])),
       version=st.sampled_from([None, "2022-04-01", "2015-07-01", "x"]), authorised=st.booleans())
def test_malformed_requests_never_break_the_server(server: RunningServer, ca_path: str, method: str, path: str,
                                                   body: Any, filter: str | None, version: str | None,
                                                   authorised: bool) -> None:
    params = {k: v for k, v in (("api-version", version), ("$filter", filter)) if v is not None}
    response = raw(server, ca_path, method, path, token=arm_token() if authorised else None, params=params, json=body)
    assert response.status_code < 500, (method, path, body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    server.reset()
    seed_response = requests.post(f"{server.url}/_devstack/roleAssignments", verify=ca_path, timeout=10,
                                  json={"scope": RG1, "principalId": P, "roleName": "Reader"})
    assert seed_response.status_code == 201
    with client(server, ca_path) as sdk:
        assert [a.principal_id for a in sdk.role_assignments.list_for_scope(RG1, filter="atScope()")] == [P]
