"""The Easy Auth app-role check of the HTTP API (pure header logic, then through the routes)."""

from __future__ import annotations

import base64
import json

import azure.functions as func
import pytest

from functions.auth import ADMIN_ROLE, READ_ROLE, READERS, SUBMIT_ROLE, AuthorizationError, require_role, roles_of
from functions.http_api import (
    get_onboarding,
    offboard_account,
    reactivate_previous_api_key,
    rotate_account,
    submit_onboarding,
)


def principal(*roles: str, role_typ: str = "roles") -> str:
    claims = [{"typ": role_typ, "val": r} for r in roles] + [{"typ": "name", "val": "tool"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "role_typ": role_typ}).encode()).decode()


def test_no_principal_means_function_keys_only() -> None:
    assert roles_of({}) is None
    require_role({}, SUBMIT_ROLE)


@pytest.mark.parametrize("role_typ", ["roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"])
def test_roles_are_read_from_the_principal(role_typ: str) -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": principal(READ_ROLE, role_typ=role_typ)}
    assert roles_of(headers) == {READ_ROLE}
    require_role(headers, READ_ROLE, SUBMIT_ROLE)
    with pytest.raises(AuthorizationError) as denied:
        require_role(headers, SUBMIT_ROLE)
    assert denied.value.status == 403 and SUBMIT_ROLE in str(denied.value)


@pytest.mark.parametrize("garbage", [
    "not base64!", base64.b64encode(b"not json").decode(), base64.b64encode(b"[]").decode()])
def test_an_unreadable_principal_is_401(garbage: str) -> None:
    with pytest.raises(AuthorizationError) as denied:
        require_role({"x-ms-client-principal": garbage}, READ_ROLE)
    assert denied.value.status == 401


def test_routes_refuse_a_principal_without_the_role_before_doing_anything() -> None:
    """Checked before settings or clients are touched: no stack is needed to get the refusal."""
    reader = {"X-MS-CLIENT-PRINCIPAL": principal(READ_ROLE)}
    post = func.HttpRequest("POST", "https://app.example/api/onboardings", headers=reader, body=b"{}")
    refused = submit_onboarding.build().get_user_function()(post)
    assert refused.status_code == 403
    assert json.loads(refused.get_body())["title"] == "Forbidden"
    nobody = {"X-MS-CLIENT-PRINCIPAL": principal()}
    get = func.HttpRequest("GET", "https://app.example/api/onboardings/X", headers=nobody, body=b"",
                           route_params={"requestId": "X"})
    assert get_onboarding.build().get_user_function()(get).status_code == 403


def test_a_missing_principal_is_401_where_one_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Easy Auth letting anonymous callers through, a function key alone would skip the role
    check; REQUIRE_CLIENT_PRINCIPAL (on in Azure) closes that."""
    with pytest.raises(AuthorizationError) as denied:
        require_role({}, READ_ROLE, require_principal=True)
    assert denied.value.status == 401
    monkeypatch.setenv("REQUIRE_CLIENT_PRINCIPAL", "true")
    get = func.HttpRequest("GET", "https://app.example/api/onboardings/X", headers={}, body=b"",
                           route_params={"requestId": "X"})
    refused = get_onboarding.build().get_user_function()(get)
    assert refused.status_code == 401
    assert "principal" in json.loads(refused.get_body())["detail"]


@pytest.mark.parametrize(("route", "method", "path", "params"), [
    (rotate_account, "POST", "rotations/acme-one", {"accountName": "acme-one"}),
    (offboard_account, "DELETE", "accounts/acme-one", {"name": "acme-one"}),
    (reactivate_previous_api_key, "POST", "accounts/acme-one/previous-api-key/reactivate", {"name": "acme-one"}),
])
def test_what_changes_or_removes_what_is_in_place_needs_the_admin_role(route: object, method: str, path: str,
                                                                       params: dict[str, str]) -> None:
    """Rotating, offboarding and reactivating have a role of their own: a team that may submit
    onboardings may not take accounts away."""
    submitter = {"X-MS-CLIENT-PRINCIPAL": principal(SUBMIT_ROLE, READ_ROLE)}
    request = func.HttpRequest(method, f"https://app.example/api/{path}", headers=submitter, body=b"",
                               route_params=params)
    refused = route.build().get_user_function()(request)  # type: ignore[attr-defined]
    assert refused.status_code == 403
    assert ADMIN_ROLE in json.loads(refused.get_body())["detail"]


def test_every_role_may_read() -> None:
    for role in READERS:
        require_role({"X-MS-CLIENT-PRINCIPAL": principal(role)}, *READERS)
    assert ADMIN_ROLE in READERS
