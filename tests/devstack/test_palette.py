"""The Palette stand-in, driven over loopback HTTP with ``requests``.

It must refuse what the published spec refuses (and undeclared fields), keep Palette's scope,
paging, naming, auth and rate-limit rules, and answer only with bodies the spec allows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jsonschema
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.httpbase import Request, Response, RunningServer, ServiceApp
from devstack.palette import PaletteApp, create_app, entra_credential_validator
from devstack.palette.routes import RateLimiter
from devstack.palette.spec import PaletteSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "palette-api" / "palette-apis-spec.json"
ADMIN_KEY = "admin-key-for-tests"
GOOD_SECRET = "good-secret-value"
BAD_REASON = "AADSTS7000215: Invalid client secret provided."

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not SPEC_PATH.exists(), reason=f"Palette spec not found at {SPEC_PATH}"),
]

# What the brief asks the stand-in to serve; nothing more, nothing less.
EXPECTED_ROUTES = {
    ("POST", "/v1/clouds/azure/account/validate"),
    ("POST", "/v1/cloudaccounts/azure"), ("GET", "/v1/cloudaccounts/azure"),
    ("GET", "/v1/cloudaccounts/azure/{uid}"), ("PUT", "/v1/cloudaccounts/azure/{uid}"),
    ("DELETE", "/v1/cloudaccounts/azure/{uid}"), ("GET", "/v1/cloudaccounts/summary"),
    ("POST", "/v1/users/assets/sshkeys"), ("GET", "/v1/users/assets/sshkeys"),
    ("GET", "/v1/users/assets/sshkeys/{uid}"), ("PUT", "/v1/users/assets/sshkeys/{uid}"),
    ("DELETE", "/v1/users/assets/sshkeys/{uid}"),
    ("GET", "/v1/users/assets/locations"), ("POST", "/v1/users/assets/locations/azure"),
    ("GET", "/v1/users/assets/locations/azure/{uid}"), ("PUT", "/v1/users/assets/locations/azure/{uid}"),
    ("DELETE", "/v1/users/assets/locations/{uid}"),
    ("POST", "/v1/apiKeys"), ("GET", "/v1/apiKeys"), ("GET", "/v1/apiKeys/{uid}"),
    ("PUT", "/v1/apiKeys/{uid}"), ("PATCH", "/v1/apiKeys/{uid}"), ("DELETE", "/v1/apiKeys/{uid}"),
    ("PUT", "/v1/apiKeys/{uid}/state"),
    ("GET", "/v1/users"), ("POST", "/v1/users/summary"), ("GET", "/v1/users/info"),
    ("GET", "/v1/dashboard/projects/metadata"), ("GET", "/v1/overlords"), ("GET", "/v1/overlords/{uid}"),
    ("POST", "/v1/dashboard/spectroclusters/search"),
    ("GET", "/v1/tenants/{tenantUid}/resourceLimits"), ("PATCH", "/v1/tenants/{tenantUid}/resourceLimits"),
}


class FakeAzure:
    """A credential validator: secrets starting with ``good`` work; it remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def __call__(self, environment: str, tenant_id: str, client_id: str, secret: str) -> str | None:
        self.calls.append((environment, tenant_id, client_id, secret))
        return None if secret.startswith("good") else BAD_REASON


@pytest.fixture(scope="module")
def azure() -> FakeAzure:
    return FakeAzure()


@pytest.fixture(scope="module")
def server(azure: FakeAzure) -> Iterator[RunningServer]:
    app = create_app(spec_path=SPEC_PATH, api_key=ADMIN_KEY, credential_validator=azure, rate_per_second=0)
    running = RunningServer(app)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        server = request.getfixturevalue("server")
        assert requests.post(f"{server.url}/_devstack/reset", timeout=5).status_code == 204
        request.getfixturevalue("azure").calls.clear()


@pytest.fixture
def api(server: RunningServer) -> Iterator[Api]:
    with Api(server.url, ADMIN_KEY) as client:
        yield client


@pytest.fixture
def app(server: RunningServer) -> PaletteApp:
    assert isinstance(server.app, PaletteApp)
    return server.app


class Api:
    """A thin ``requests`` session: base URL, ``ApiKey`` and optional ``ProjectUid``."""

    def __init__(self, base: str, key: str | None, project_uid: str | None = None) -> None:
        self.base = base
        self.session = requests.Session()
        if key is not None:
            self.session.headers["ApiKey"] = key
        if project_uid is not None:
            self.session.headers["ProjectUid"] = project_uid

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def scoped(self, project_uid: str | None) -> Api:
        return Api(self.base, self.session.headers.get("ApiKey"), project_uid)  # type: ignore[arg-type]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("DELETE", path, **kwargs)


def azure_spec(secret: str = GOOD_SECRET, **extra: Any) -> dict[str, Any]:
    return {"tenantId": "11111111-2222-3333-4444-555555555555", "clientId": "66666666-7777-8888-9999-000000000000",
            "clientSecret": secret, "azureEnvironment": "AzurePublicCloud", "tenantName": "",
            "settings": {"disablePropertiesRequest": False}, **extra}


def account_body(name: str, *, secret: str = GOOD_SECRET, annotations: dict[str, str] | None = None,
                 **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": azure_spec(secret, **spec)}


def ssh_public_key(comment: str = "user@example.com", key_type: str = "ssh-rsa") -> str:
    blob = len(key_type).to_bytes(4, "big") + key_type.encode() + b"\x00\x00\x00\x03\x01\x00\x01"
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}"


def expect_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details", "ref"}, body
    assert body["code"] == code, body
    assert isinstance(body["details"], dict) and body["ref"]
    return body


def violations(response: requests.Response) -> list[dict[str, str]]:
    body = expect_error(response, 400, "InvalidRequest")
    found: list[dict[str, str]] = body["details"]["violations"]
    return found


def project_uid(api: Api, name: str) -> str:
    items = api.get("/v1/dashboard/projects/metadata", params={"name": name}).json()["items"]
    assert len(items) == 1
    uid: str = items[0]["metadata"]["uid"]
    return uid


def overlord_uid(api: Api, name: str) -> str:
    items = api.get("/v1/overlords", params={"name": name}).json()["items"]
    assert len(items) == 1
    uid: str = items[0]["metadata"]["uid"]
    return uid


def user_uid(api: Api, email: str) -> str:
    body = {"filter": {"emailId": {"eq": email}}}
    items = api.post("/v1/users/summary", json=body).json()["items"]
    assert len(items) == 1
    uid: str = items[0]["metadata"]["uid"]
    return uid


def location_body(name: str, *, secret: str = GOOD_SECRET, annotations: dict[str, str] | None = None,
                  **spec: Any) -> dict[str, Any]:
    """A ``v1UserAssetsLocationAzure`` as Terraform's backup storage location sends it."""
    metadata: dict[str, Any] = {"name": name}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {
        "config": {"containerName": "velero", "storageName": "backups", "resourceGroup": "rg", "sku": "Standard_LRS",
                   "credentials": {"tenantId": "t-1", "clientId": "c-1", "clientSecret": secret,
                                   "subscriptionId": "s-1", "clientCloud": "public"}},
        "isDefault": False, "type": "azure", **spec}}


def create_account(api: Api, name: str, **kwargs: Any) -> str:
    response = api.post("/v1/cloudaccounts/azure", json=account_body(name, **kwargs))
    assert response.status_code == 201, response.text
    uid: str = response.json()["uid"]
    return uid


def future(days: int = 30) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + days * 86400))


# ------------------------------------------------------------------------------------ the spec itself


def test_every_served_route_is_an_operation_of_the_published_spec(app: PaletteApp) -> None:
    with open(SPEC_PATH, encoding="utf-8") as handle:
        document = json.load(handle)
    served = {(op.method, op.path) for op in app.operations}
    assert served == EXPECTED_ROUTES
    for op in app.operations:
        declared = document["paths"][op.path][op.method.lower()]
        assert declared["operationId"] == op.operation_id


def test_an_operation_missing_from_the_spec_cannot_be_registered(app: PaletteApp) -> None:
    with pytest.raises(Exception, match="no operation"):
        app._serve("POST", "/v1/cloudaccounts/azure/{uid}/rotate", lambda call: Response.empty())


def test_create_without_client_id_names_the_missing_field(api: Api) -> None:
    body = account_body("acct")
    del body["spec"]["clientId"]
    response = api.post("/v1/cloudaccounts/azure", json=body)
    found = violations(response)
    assert "spec.clientId" in response.json()["message"]
    assert {"in": "body", "path": "spec.clientId", "rule": "required",
            "message": "spec.clientId is required."} in found
    assert api.get("/v1/cloudaccounts/azure").json()["items"] == []


def test_a_wrong_type_an_unknown_property_and_a_bad_enum_are_each_named(api: Api) -> None:
    body = account_body("acct")
    body["spec"]["clientId"] = 42
    body["spec"]["clientSecrett"] = "typo"
    body["spec"]["azureEnvironment"] = "AzureMars"
    body["metadata"]["annotations"] = {"scope": 7}
    found = {(v["path"], v["rule"]) for v in violations(api.post("/v1/cloudaccounts/azure", json=body))}
    assert found == {("spec.clientId", "type"), ("spec.clientSecrett", "additionalProperties"),
                     ("spec.azureEnvironment", "enum"), ("metadata.annotations.scope", "type")}


def test_null_is_refused_unless_the_spec_marks_the_field_nullable(api: Api) -> None:
    body = account_body("acct")
    body["spec"]["tenantName"] = None
    assert ("spec.tenantName", "type") in {(v["path"], v["rule"]) for v in
                                          violations(api.post("/v1/cloudaccounts/azure", json=body))}
    # v1FilterString.eq is x-nullable
    response = api.post("/v1/users/summary", json={"filter": {"emailId": {"eq": None}}})
    assert response.status_code == 200, response.text


def test_query_parameters_are_checked_against_the_spec(api: Api) -> None:
    assert violations(api.get("/v1/cloudaccounts/azure", params={"limit": 51}))[0]["path"] == "limit"
    assert violations(api.get("/v1/cloudaccounts/azure", params={"limit": "ten"}))[0]["rule"] == "type"
    assert violations(api.get("/v1/cloudaccounts/azure", params={"limit": -1}))[0]["path"] == "limit"
    assert violations(api.get("/v1/cloudaccounts/azure", params={"offset": "1.5"}))[0]["rule"] == "type"
    unknown = violations(api.get("/v1/cloudaccounts/azure", params={"contiue": "x"}))
    assert unknown[0] == {"in": "query", "path": "contiue", "rule": "unknown", "message": unknown[0]["message"]}
    # SSH keys are not paged in the spec, so paging parameters are refused there
    assert violations(api.get("/v1/users/assets/sshkeys", params={"limit": 5}))[0]["path"] == "limit"
    assert violations(api.get("/v1/users", params=[("limit", 5), ("limit", 6)]))[0]["rule"] == "duplicate"


def test_bodies_must_be_json_sent_as_json(api: Api) -> None:
    expect_error(api.post("/v1/cloudaccounts/azure", data=b"{not json",
                          headers={"Content-Type": "application/json"}), 400, "InvalidRequest")
    expect_error(api.post("/v1/cloudaccounts/azure", data=json.dumps(account_body("a")),
                          headers={"Content-Type": "text/plain"}), 415, "UnsupportedMediaType")
    expect_error(api.post("/v1/cloudaccounts/azure", data=b'{"metadata": NaN}',
                          headers={"Content-Type": "application/json"}), 400, "InvalidRequest")
    assert violations(api.post("/v1/clouds/azure/account/validate"))[0]["rule"] == "required"
    assert violations(api.call("DELETE", "/v1/apiKeys/abc", json={}))[0]["rule"] == "absent"


def test_unknown_routes_and_methods_get_v1_errors(api: Api) -> None:
    expect_error(api.get("/v1/cloudaccounts/aws"), 404, "NotFound")
    expect_error(api.post("/v1/users/info"), 405, "MethodNotAllowed")


# ------------------------------------------------------------------------------------ cloud accounts


def test_account_create_get_update_list_delete(api: Api, azure: FakeAzure) -> None:
    created = api.post("/v1/cloudaccounts/azure", json=account_body("azure-onboarding"))
    assert created.status_code == 201 and created.headers["AuditUid"]
    uid = created.json()["uid"]
    assert len(uid) == 24 and int(uid, 16) >= 0

    got = api.get(f"/v1/cloudaccounts/azure/{uid}").json()
    assert got["metadata"]["name"] == "azure-onboarding" and got["metadata"]["uid"] == uid
    assert got["metadata"]["annotations"] == {"scope": "tenant"}
    assert got["spec"]["clientSecret"] == "********" and GOOD_SECRET not in json.dumps(got)
    assert got["spec"]["tenantId"] == azure_spec()["tenantId"]

    update = account_body("azure-onboarding", secret="good-rotated", tenantName="Contoso")
    update["metadata"]["uid"] = uid
    assert api.put(f"/v1/cloudaccounts/azure/{uid}", json=update).status_code == 204
    assert azure.calls[-1][3] == "good-rotated"  # a PUT validates the new secret too
    assert api.get(f"/v1/cloudaccounts/azure/{uid}").json()["spec"]["tenantName"] == "Contoso"

    update["metadata"]["uid"] = "0" * 24
    assert violations(api.put(f"/v1/cloudaccounts/azure/{uid}", json=update))[0]["path"] == "metadata.uid"
    del update["metadata"]["uid"]
    assert violations(api.put(f"/v1/cloudaccounts/azure/{uid}", json=update))[0]["path"] == "metadata.uid"

    listed = api.get("/v1/cloudaccounts/azure").json()
    assert [a["metadata"]["uid"] for a in listed["items"]] == [uid]
    assert listed["listmeta"] == {"continue": "", "count": 1, "limit": 50, "offset": 1}
    summary = api.get("/v1/cloudaccounts/summary").json()["items"]
    assert summary[0]["kind"] == "azure" and summary[0]["metadata"]["annotations"]["scope"] == "tenant"

    assert api.delete(f"/v1/cloudaccounts/azure/{uid}").status_code == 204
    expect_error(api.get(f"/v1/cloudaccounts/azure/{uid}"), 404, "ResourceNotFound")
    expect_error(api.delete(f"/v1/cloudaccounts/azure/{uid}"), 404, "ResourceNotFound")


def test_paging_through_120_accounts_with_continue(api: Api) -> None:
    made = [create_account(api, f"acct-{i:03d}") for i in range(120)]
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {}
    while True:
        body = api.get("/v1/cloudaccounts/azure", params=params).json()
        pages += 1
        seen += [item["metadata"]["uid"] for item in body["items"]]
        assert body["listmeta"]["count"] == 120 and body["listmeta"]["limit"] == 50
        if body["listmeta"]["continue"] == "":
            break
        params = {"continue": body["listmeta"]["continue"]}
        assert pages < 10
    assert pages == 3 and seen == made

    assert len(api.get("/v1/cloudaccounts/azure", params={"limit": 0}).json()["items"]) == 50
    tail = api.get("/v1/cloudaccounts/azure", params={"limit": 30, "offset": 100}).json()
    assert [i["metadata"]["name"] for i in tail["items"]] == [f"acct-{i:03d}" for i in range(100, 120)]
    assert tail["listmeta"]["continue"] == "" and tail["listmeta"]["offset"] == 120
    ordered = api.get("/v1/cloudaccounts/azure", params={"orderBy": "metadata.name=-1", "limit": 2}).json()
    assert [i["metadata"]["name"] for i in ordered["items"]] == ["acct-119", "acct-118"]
    only = api.get("/v1/cloudaccounts/azure", params={"filters": "metadata.name=acct-007"}).json()
    assert [i["metadata"]["uid"] for i in only["items"]] == [made[7]]

    token = api.get("/v1/cloudaccounts/azure").json()["listmeta"]["continue"]
    assert violations(api.get("/v1/cloudaccounts/azure", params={"continue": "garbage"}))[0]["path"] == "continue"
    # a token belongs to its list and scope
    assert violations(api.get("/v1/cloudaccounts/summary", params={"continue": token}))[0]["path"] == "continue"
    project = api.scoped(project_uid(api, "Default"))
    assert violations(project.get("/v1/cloudaccounts/azure", params={"continue": token}))[0]["path"] == "continue"


def test_tenant_and_project_scopes(api: Api) -> None:
    default_uid, team_uid = project_uid(api, "Default"), project_uid(api, "Team-A")
    default, team = api.scoped(default_uid), api.scoped(team_uid)
    tenant_acct = create_account(api, "shared")
    project_acct = create_account(default, "shared")  # same name, other scope: allowed
    create_account(default, "default-only", annotations={"scope": "project"})

    tenant_items = api.get("/v1/cloudaccounts/azure").json()["items"]
    assert [i["metadata"]["uid"] for i in tenant_items] == [tenant_acct]
    default_items = default.get("/v1/cloudaccounts/azure").json()["items"]
    assert {i["metadata"]["name"] for i in default_items} == {"shared", "default-only"} and len(default_items) == 3
    by_uid = {i["metadata"]["uid"]: i["metadata"]["annotations"] for i in default_items}
    assert by_uid[tenant_acct] == {"scope": "tenant"}
    assert by_uid[project_acct] == {"scope": "project", "projectUid": default_uid}
    team_items = team.get("/v1/cloudaccounts/azure").json()["items"]
    assert [i["metadata"]["uid"] for i in team_items] == [tenant_acct]

    expect_error(api.get(f"/v1/cloudaccounts/azure/{project_acct}"), 404, "ResourceNotFound")
    expect_error(team.get(f"/v1/cloudaccounts/azure/{project_acct}"), 404, "ResourceNotFound")
    assert default.get(f"/v1/cloudaccounts/azure/{tenant_acct}").status_code == 200
    expect_error(default.delete(f"/v1/cloudaccounts/azure/{tenant_acct}"), 403, "Forbidden")

    body = account_body("mismatch", annotations={"scope": "project"})
    assert violations(api.post("/v1/cloudaccounts/azure", json=body))[0]["path"] == "metadata.annotations.scope"
    expect_error(api.scoped("f" * 24).get("/v1/cloudaccounts/azure"), 403, "Forbidden")
    expect_error(api.scoped("").get("/v1/cloudaccounts/azure"), 400, "InvalidRequest")
    # API keys are tenant-wide: the header is ignored there
    assert api.scoped("f" * 24).get("/v1/apiKeys").status_code == 200


def test_clusters_are_searched_per_scope_and_hold_their_cloud_account(api: Api) -> None:
    default_uid, team_uid = project_uid(api, "Default"), project_uid(api, "Team-A")
    default, team = api.scoped(default_uid), api.scoped(team_uid)
    shared_account = create_account(api, "used-by-clusters")
    for name, project in (("east-1", default_uid), ("team-1", team_uid)):
        seeded = requests.post(f"{api.base}/_devstack/clusters", timeout=5, json={
            "name": name, "cloudAccountUid": shared_account, "projectUid": project})
        assert seeded.status_code == 201, seeded.text

    def names(scope: Api) -> set[str]:
        items = scope.post("/v1/dashboard/spectroclusters/search", json={"filter": {}, "sort": []}).json()["items"]
        return {i["metadata"]["name"] for i in items}

    assert names(default) == {"east-1"} and names(team) == {"team-1"}
    assert names(api) >= {"east-1", "team-1"}  # the tenant sees every project's clusters
    error = expect_error(api.delete(f"/v1/cloudaccounts/azure/{shared_account}"), 409, "CloudAccountInUse")
    assert "east-1" in error["message"] and "team-1" in error["message"]
    assert api.get(f"/v1/cloudaccounts/azure/{shared_account}").status_code == 200
    bad = requests.post(f"{api.base}/_devstack/clusters", json={"name": "x"}, timeout=5)
    assert bad.status_code == 400


def test_duplicate_names_conflict_per_scope(api: Api) -> None:
    first = create_account(api, "dup")
    expect_error(api.post("/v1/cloudaccounts/azure", json=account_body("dup")), 409, "CloudAccountAlreadyExists")
    other = create_account(api, "other")
    rename = account_body("dup")
    rename["metadata"]["uid"] = other
    expect_error(api.put(f"/v1/cloudaccounts/azure/{other}", json=rename), 409, "CloudAccountAlreadyExists")
    assert first != other

    key = {"metadata": {"name": "k"}, "spec": {"publicKey": ssh_public_key()}}
    assert api.post("/v1/users/assets/sshkeys", json=key).status_code == 201
    expect_error(api.post("/v1/users/assets/sshkeys", json=key), 409, "SshKeyAlreadyExists")

    api_key = {"metadata": {"name": "ci"}, "spec": {"expiry": future()}}
    assert api.post("/v1/apiKeys", json=api_key).status_code == 201
    expect_error(api.post("/v1/apiKeys", json=api_key), 409, "ApiKeyAlreadyExists")


def test_credentials_are_validated_and_the_reason_is_passed_on(api: Api, azure: FakeAzure) -> None:
    ok = api.post("/v1/clouds/azure/account/validate", json=azure_spec(azureEnvironment="AzureUSGovernmentCloud"))
    assert ok.status_code == 204 and ok.headers["AuditUid"] and ok.content == b""
    assert azure.calls[-1][0] == "AzureUSGovernmentCloud"

    bad = api.post("/v1/clouds/azure/account/validate", json=azure_spec("wrong-secret"))
    body = expect_error(bad, 400, "CloudAccountValidationFailed")
    assert BAD_REASON in body["message"] and "wrong-secret" not in bad.text

    expect_error(api.post("/v1/cloudaccounts/azure", json=account_body("a", secret="wrong-secret")),
                 400, "CloudAccountValidationFailed")
    assert api.get("/v1/cloudaccounts/azure").json()["items"] == []
    assert violations(api.post("/v1/clouds/azure/account/validate", json=azure_spec("")))[0]["path"] == "clientSecret"


def test_without_a_validator_any_non_empty_secret_is_accepted() -> None:
    running = RunningServer(create_app(spec_path=SPEC_PATH, api_key=ADMIN_KEY))
    try:
        with Api(running.url, ADMIN_KEY) as api:
            assert api.post("/v1/clouds/azure/account/validate", json=azure_spec("anything")).status_code == 204
            assert violations(api.post("/v1/clouds/azure/account/validate", json=azure_spec("  ")))
    finally:
        running.stop()


class _FakeEntra(ServiceApp):
    """Entra's token endpoint, enough for :func:`entra_credential_validator`."""

    name = "fake-entra"

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, list[str]]] = []
        self.router.add("POST", "/{tenant}/oauth2/v2.0/token", self._token)

    def _token(self, request: Request) -> Response:
        from urllib.parse import parse_qs

        form = parse_qs(request.body.decode())
        self.forms.append(form)
        secret = form["client_secret"][0]
        if secret == "right":
            return Response.json(200, {"access_token": "t", "token_type": "Bearer", "expires_in": 3599})
        return Response.json(401, {"error": "invalid_client",
                                   "error_description": f"AADSTS7000215: Invalid client secret {secret}."})


def test_entra_credential_validator_asks_the_token_endpoint() -> None:
    entra = _FakeEntra()
    running = RunningServer(entra)
    try:
        validate = entra_credential_validator(running.url + "/")
        assert validate("AzurePublicCloud", "tenant-1", "client-1", "right") is None
        form = entra.forms[-1]
        assert form["grant_type"] == ["client_credentials"] and form["client_id"] == ["client-1"]
        assert form["scope"] == ["https://management.azure.com/.default"]
        reason = validate("AzurePublicCloud", "tenant-1", "client-1", "wrong-secret-xyz")
        assert reason is not None and reason.startswith("AADSTS7000215") and "wrong-secret-xyz" not in reason
    finally:
        running.stop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = entra_credential_validator(f"http://127.0.0.1:{closed_port}")
    assert "could not be reached" in (unreachable("AzurePublicCloud", "t", "c", "s") or "")


def test_a_gateway_must_exist_and_be_running(api: Api) -> None:
    east, west = overlord_uid(api, "pcg-east"), overlord_uid(api, "pcg-west")
    assert api.get(f"/v1/overlords/{west}").json()["status"]["state"] != "Running"
    body = expect_error(api.post("/v1/cloudaccounts/azure", json=account_body("a", annotations={"overlordUid": west})),
                        400, "PrivateCloudGatewayNotRunning")
    assert "pcg-west" in body["message"]
    expect_error(api.post("/v1/cloudaccounts/azure", json=account_body("a", annotations={"overlordUid": "0" * 24})),
                 400, "PrivateCloudGatewayNotFound")
    uid = create_account(api, "a", annotations={"overlordUid": east, "scope": "tenant"})
    assert api.get(f"/v1/cloudaccounts/azure/{uid}").json()["metadata"]["annotations"] == {
        "overlordUid": east, "scope": "tenant"}
    # the admin surface can bring a gateway up
    assert requests.post(f"{api.base}/_devstack/overlords", json={"name": "pcg-west", "state": "Running"},
                         timeout=5).status_code == 200
    create_account(api, "b", annotations={"overlordUid": west})
    expect_error(api.get(f"/v1/overlords/{'0' * 24}"), 404, "ResourceNotFound")


# ------------------------------------------------------------------------------------ SSH and API keys


def test_ssh_key_crud_in_a_project(api: Api) -> None:
    default = api.scoped(project_uid(api, "Default"))
    created = default.post("/v1/users/assets/sshkeys",
                           json={"metadata": {"name": "spacetastic"}, "spec": {"publicKey": ssh_public_key()}})
    assert created.status_code == 201 and created.headers["AuditUid"]
    uid = created.json()["uid"]
    listed = default.get("/v1/users/assets/sshkeys").json()
    assert [k["metadata"]["uid"] for k in listed["items"]] == [uid]
    assert listed["items"][0]["metadata"]["annotations"]["scope"] == "project"
    assert api.get("/v1/users/assets/sshkeys").json()["items"] == []  # not in the tenant scope
    expect_error(api.get(f"/v1/users/assets/sshkeys/{uid}"), 404, "ResourceNotFound")

    new_key = ssh_public_key("rotated", "ssh-ed25519")
    put = {"metadata": {"name": "spacetastic", "uid": uid}, "spec": {"publicKey": new_key}}
    assert default.put(f"/v1/users/assets/sshkeys/{uid}", json=put).status_code == 204
    assert default.get(f"/v1/users/assets/sshkeys/{uid}").json()["spec"]["publicKey"] == new_key

    bad = {"metadata": {"name": "bad"}, "spec": {"publicKey": "ssh-rsa not-base64!"}}
    assert violations(default.post("/v1/users/assets/sshkeys", json=bad))[0]["path"] == "spec.publicKey"
    # the create body's metadata is v1ObjectMetaInputEntity: no uid there
    with_uid = {"metadata": {"name": "x", "uid": "1"}, "spec": {"publicKey": ssh_public_key()}}
    assert violations(default.post("/v1/users/assets/sshkeys", json=with_uid))[0]["rule"] == "additionalProperties"

    assert default.delete(f"/v1/users/assets/sshkeys/{uid}").status_code == 204
    expect_error(default.get(f"/v1/users/assets/sshkeys/{uid}"), 404, "ResourceNotFound")


def test_api_key_lifecycle_and_authentication(api: Api, app: PaletteApp, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = user_uid(api, "ALICE.OPS@example.com")  # the filter ignores case by default
    created = api.post("/v1/apiKeys", json={
        "metadata": {"name": "onboarding", "annotations": {"description": "for the pipeline"}},
        "spec": {"userUid": alice, "expiry": future()}})
    assert created.status_code == 201, created.text
    value, uid = created.json()["apiKey"], created.json()["uid"]

    with Api(api.base, value) as as_alice:
        assert as_alice.get("/v1/users/info").json()["userUid"] == alice
        got = api.get(f"/v1/apiKeys/{uid}").json()
        assert got["spec"]["user"] == {"uid": alice, "firstName": "Alice", "lastName": "Operator"}
        assert got["status"]["isActive"] is True and value not in json.dumps(got)
        assert value not in api.get("/v1/apiKeys").text

        assert api.put(f"/v1/apiKeys/{uid}/state", json={"isActive": False}).status_code == 204
        expect_error(as_alice.get("/v1/users/info"), 401, "Unauthorized")
        assert api.patch(f"/v1/apiKeys/{uid}", json={"isActive": True}).status_code == 204
        assert as_alice.get("/v1/users/info").status_code == 200

        update = {"metadata": {"name": "onboarding-2", "uid": uid}, "spec": {"expiry": future(60)}}
        assert api.put(f"/v1/apiKeys/{uid}", json=update).status_code == 204
        assert api.get(f"/v1/apiKeys/{uid}").json()["metadata"]["name"] == "onboarding-2"

        # once expired it no longer authenticates
        monkeypatch.setattr(app.backend, "clock", lambda: time.time() + 365 * 86400)
        expect_error(as_alice.get("/v1/users/info"), 401, "Unauthorized")
        monkeypatch.undo()

        assert api.delete(f"/v1/apiKeys/{uid}").status_code == 204
        expect_error(as_alice.get("/v1/users/info"), 401, "Unauthorized")

    past = {"metadata": {"name": "old"}, "spec": {"expiry": "2001-01-01T00:00:00Z"}}
    assert violations(api.post("/v1/apiKeys", json=past))[0]["path"] == "spec.expiry"
    expect_error(api.post("/v1/apiKeys", json={"metadata": {"name": "x"},
                                              "spec": {"userUid": "0" * 24, "expiry": future()}}),
                 400, "UserNotFound")
    assert violations(api.post("/v1/apiKeys", json={"metadata": {"name": "x"},
                                                    "spec": {"expiry": "tomorrow"}}))[0]["rule"] == "format"


def test_invalid_or_missing_api_key_is_401(server: RunningServer) -> None:
    for headers in ({}, {"ApiKey": "nope"}, {"Authorization": "Bearer x"}):
        expect_error(requests.get(f"{server.url}/v1/users", headers=headers, timeout=5), 401, "Unauthorized")
    # header names are case-insensitive
    assert requests.get(f"{server.url}/v1/users", headers={"apikey": ADMIN_KEY}, timeout=5).status_code == 200


# ------------------------------------------------------------------------------------ backup locations


def test_azure_location_create_get_update_list_delete(api: Api, azure: FakeAzure) -> None:
    created = api.post("/v1/users/assets/locations/azure",
                       json=location_body("velero", secret="bad-but-stored", annotations={"owner": "team-b"}))
    assert created.status_code == 201, created.text
    assert "AuditUid" in created.headers
    uid = created.json()["uid"]
    assert azure.calls == []  # Palette does not ask Azure on create (the client validates first)

    listed = api.get("/v1/users/assets/locations").json()["items"]
    assert [(i["metadata"]["uid"], i["metadata"]["name"]) for i in listed] == [(uid, "velero")]
    assert listed[0]["spec"] == {"isDefault": False, "storage": "azure", "type": "azure"}
    assert listed[0]["metadata"]["annotations"] == {"owner": "team-b", "scope": "tenant"}

    got = api.get(f"/v1/users/assets/locations/azure/{uid}").json()
    assert got["metadata"] == {"name": "velero", "annotations": {"owner": "team-b", "scope": "tenant"}}
    assert got["spec"]["config"]["credentials"] == {"tenantId": "t-1", "clientId": "c-1", "clientSecret": "********",
                                                    "subscriptionId": "s-1", "clientCloud": "public"}
    assert got["spec"]["config"]["sku"] == "Standard_LRS" and got["spec"]["type"] == "azure"

    got["spec"]["config"]["credentials"]["clientSecret"] = "bad-rotated"
    got["spec"]["isDefault"] = True
    assert api.put(f"/v1/users/assets/locations/azure/{uid}", json=got).status_code == 204
    assert azure.calls == []  # nor on PUT
    state = requests.get(f"{api.base}/_devstack/state", timeout=5)
    assert "bad-rotated" not in state.text and "bad-but-stored" not in state.text
    [stored] = state.json()["backupLocations"]
    assert stored["clientSecretSha256"] == hashlib.sha256(b"bad-rotated").hexdigest()
    assert stored["isDefault"] is True and stored["annotations"] == {"owner": "team-b"}
    assert stored["config"]["credentials"]["clientSecret"] == "********"

    # the body of a location has no metadata.uid: a PUT carrying one is refused, not ignored
    got["metadata"]["uid"] = uid
    assert violations(api.put(f"/v1/users/assets/locations/azure/{uid}", json=got))[0]["path"] == "metadata.uid"
    assert api.delete(f"/v1/users/assets/locations/{uid}").status_code == 204
    expect_error(api.delete(f"/v1/users/assets/locations/{uid}"), 404, "ResourceNotFound")
    expect_error(api.get(f"/v1/users/assets/locations/azure/{uid}"), 404, "ResourceNotFound")
    assert api.get("/v1/users/assets/locations").json() == {"items": []}


def test_azure_locations_keep_to_their_scope_and_names(api: Api) -> None:
    default = api.scoped(project_uid(api, "Default"))
    in_tenant = api.post("/v1/users/assets/locations/azure", json=location_body("same")).json()["uid"]
    in_project = default.post("/v1/users/assets/locations/azure", json=location_body("same")).json()["uid"]
    assert [i["metadata"]["uid"] for i in api.get("/v1/users/assets/locations").json()["items"]] == [in_tenant]
    assert [i["metadata"]["uid"] for i in default.get("/v1/users/assets/locations").json()["items"]] == [in_project]
    expect_error(default.get(f"/v1/users/assets/locations/azure/{in_tenant}"), 404, "ResourceNotFound")
    expect_error(default.delete(f"/v1/users/assets/locations/{in_tenant}"), 404, "ResourceNotFound")
    expect_error(api.post("/v1/users/assets/locations/azure", json=location_body("same")),
                 409, "BackupLocationAlreadyExists")
    wrong_scope = location_body("x", annotations={"scope": "project"})
    assert violations(api.post("/v1/users/assets/locations/azure", json=wrong_scope))[0]["path"] == \
        "metadata.annotations.scope"
    s3 = location_body("s3", type="s3")
    assert violations(api.post("/v1/users/assets/locations/azure", json=s3))[0]["path"] == "spec.type"
    no_spec = {"metadata": {"name": "nothing"}}
    assert violations(api.post("/v1/users/assets/locations/azure", json=no_spec))[0]["path"] == "spec"
    no_config = {"metadata": {"name": "nothing"}, "spec": {"type": "azure"}}
    assert violations(api.post("/v1/users/assets/locations/azure", json=no_config))[0]["path"] == "spec.config"
    expect_error(api.get("/v1/users/assets/locations", params={"type": "azure"}), 400, "InvalidRequest")
    named = api.get("/v1/users/assets/locations", params={"filters": "metadata.name=same"}).json()["items"]
    assert [i["metadata"]["uid"] for i in named] == [in_tenant]


def test_admin_seeds_another_teams_location(api: Api) -> None:
    team_a = project_uid(api, "Team-A")
    seeded = requests.post(f"{api.base}/_devstack/locations/azure", timeout=5, json={
        "name": "team-b", "tenantId": "t-1", "clientId": "c-1", "clientSecret": "their-secret", "projectUid": team_a})
    assert seeded.status_code == 201, seeded.text
    uid = seeded.json()["uid"]
    got = api.scoped(team_a).get(f"/v1/users/assets/locations/azure/{uid}").json()
    assert got["metadata"]["annotations"] == {"scope": "project", "projectUid": team_a}
    assert got["spec"]["config"]["credentials"]["clientId"] == "c-1"
    for bad in ({"name": "x"}, {"name": "x", "tenantId": "t", "clientId": "c", "clientSecret": "s", "zz": 1},
                {"name": "x", "tenantId": "t", "clientId": "c", "clientSecret": "s", "projectUid": "nope"},
                {"name": "x", "tenantId": "t", "clientId": "c", "clientSecret": "s", "clientCloud": "mars"}):
        expect_error(requests.post(f"{api.base}/_devstack/locations/azure", json=bad, timeout=5), 400, "InvalidRequest")


def test_admin_seeds_accounts_in_bulk_all_or_none(api: Api) -> None:
    mine = {"palette-onboarding/managed-by": "palette-onboarding"}
    accounts = [{"name": f"bulk-{i:03d}", "tenantId": "t-1", "clientId": f"c-{i}", "clientSecret": f"s-{i}",
                 "annotations": mine} for i in range(120)]
    accounts[7]["uid"] = "ab" * 12
    seeded = requests.post(f"{api.base}/_devstack/cloudaccounts/bulk", json={"accounts": accounts}, timeout=10)
    assert seeded.status_code == 201, seeded.text
    assert seeded.json()["count"] == 120 and seeded.json()["uids"][7] == "ab" * 12
    first = api.get("/v1/cloudaccounts/azure").json()
    assert len(first["items"]) == 50 and first["listmeta"]["count"] == 120
    got = api.get(f"/v1/cloudaccounts/azure/{'ab' * 12}").json()
    assert got["metadata"]["name"] == "bulk-007" and got["spec"]["clientSecret"] == "********"
    assert got["metadata"]["annotations"] == {**mine, "scope": "tenant"}
    named = api.get("/v1/cloudaccounts/azure", params={"filters": "metadata.name=bulk-119"}).json()["items"]
    assert [i["spec"]["clientId"] for i in named] == ["c-119"]
    clash = [{"name": "new-one", "tenantId": "t", "clientId": "c", "clientSecret": "s"},
             {"name": "bulk-000", "tenantId": "t", "clientId": "c", "clientSecret": "s"}]
    expect_error(requests.post(f"{api.base}/_devstack/cloudaccounts/bulk", json={"accounts": clash}, timeout=5),
                 409, "CloudAccountAlreadyExists")
    assert api.get("/v1/cloudaccounts/azure", params={"filters": "metadata.name=new-one"}).json()["items"] == []
    for bad in ({"accounts": []}, {"accounts": [{"name": "x"}]}, {"accounts": [{**clash[0], "uid": "nope"}]},
                {"accounts": [{**clash[0], "annotations": {"a": 1}}]}, {"accounts": [clash[0]], "zz": 1}):
        expect_error(requests.post(f"{api.base}/_devstack/cloudaccounts/bulk", json=bad, timeout=5), 400,
                     "InvalidRequest")


# ------------------------------------------------------------------------------------ users, projects


def test_users_projects_and_gateways(api: Api) -> None:
    users = api.get("/v1/users").json()
    emails = [u["spec"]["emailId"] for u in users["items"]]
    assert "admin@example.com" in emails and len(emails) == 3
    assert users["listmeta"]["continue"] == ""
    first = api.get("/v1/users", params={"limit": 2}).json()
    rest = api.get("/v1/users", params={"continue": first["listmeta"]["continue"]}).json()
    assert [u["spec"]["emailId"] for u in first["items"] + rest["items"]] == emails
    info = api.get("/v1/users/info").json()
    assert info["userUid"] == user_uid(api, "admin@example.com") and len(info["tenantUid"]) == 24
    named = api.post("/v1/users/summary", json={"filter": {"name": {"contains": "bob"}},
                                                "sort": [{"field": "name", "order": "desc"}]}).json()
    assert [u["spec"]["emailId"] for u in named["items"]] == ["bob.dev@example.com"]
    names = {p["metadata"]["name"] for p in api.get("/v1/dashboard/projects/metadata").json()["items"]}
    assert names == {"Default", "Team-A"}
    assert api.get("/v1/dashboard/projects/metadata", params={"name": "nope"}).json()["items"] == []
    assert len(api.get("/v1/overlords").json()["items"]) == 2


# ------------------------------------------------------------------------------------ rate limit


def test_token_bucket_allows_rate_times_burst_then_refills() -> None:
    now = [100.0]
    limiter = RateLimiter(10, 5, clock=lambda: now[0])
    assert all(limiter.allow("/v1/cloudaccounts") for _ in range(50))
    assert not limiter.allow("/v1/cloudaccounts")
    assert limiter.allow("/v1/users")  # another prefix has its own bucket
    now[0] += 0.1
    assert limiter.allow("/v1/cloudaccounts") and not limiter.allow("/v1/cloudaccounts")
    limiter.configure(0, 5)
    assert all(limiter.allow("/v1/cloudaccounts") for _ in range(500))


def test_429_after_the_burst_then_recovery(api: Api) -> None:
    admin = f"{api.base}/_devstack"
    assert requests.post(f"{admin}/config", json={"ratePerSecond": 1, "burst": 3}, timeout=5).json()["capacity"] == 3
    limited = None
    for _ in range(12):
        response = api.get("/v1/cloudaccounts/azure")
        if response.status_code == 429:
            limited = response
            break
        assert response.status_code == 200
    assert limited is not None
    body = expect_error(limited, 429, "TooManyRequests")
    assert "/v1/cloudaccounts" in body["message"] and "Retry-After" not in limited.headers
    assert api.get("/v1/users/info").status_code == 200  # its own prefix
    assert requests.get(f"{admin}/state", timeout=5).status_code == 200  # admin is never limited
    deadline = time.monotonic() + 15
    while api.get("/v1/cloudaccounts/azure").status_code == 429:
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.2)
    expect_error(requests.post(f"{admin}/config", json={"burst": 0}, timeout=5), 400, "InvalidRequest")


# ------------------------------------------------------------------------------------ resource limits


def limits_path(api: Api) -> str:
    return f"/v1/tenants/{api.get('/v1/users/info').json()['tenantUid']}/resourceLimits"


def set_limits(api: Api, **limits: int) -> None:
    response = api.patch(limits_path(api), json={"resources": [{"kind": k, "limit": v} for k, v in limits.items()]})
    assert response.status_code == 204, response.text


def limits_of(api: Api) -> dict[str, int]:
    return {item["kind"]: item["limit"] for item in api.get(limits_path(api)).json()["resources"]}


def test_resource_limits_start_at_palettes_defaults_and_a_patch_changes_only_what_it_lists(api: Api) -> None:
    body = api.get(limits_path(api)).json()
    kinds = {item["kind"]: item for item in body["resources"]}
    assert set(kinds) == {"user", "project", "apiKey", "team", "role", "cloudaccount", "clusterprofile", "workspace",
                          "registry", "privategateway", "location", "certificate", "macro", "sshkey", "alert",
                          "spectrocluster", "edgehost"}  # what v1TenantResourceLimitsEntity says is supported
    assert kinds["cloudaccount"] == {"kind": "cloudaccount", "label": "Cloud Accounts", "limit": 200, "maxLimit": 10000}
    assert (kinds["sshkey"]["limit"], kinds["apiKey"]["limit"]) == (300, 20)
    set_limits(api, cloudaccount=350, apiKey=25)
    after = limits_of(api)
    assert (after["cloudaccount"], after["apiKey"], after["sshkey"], after["user"]) == (350, 25, 300, 300)
    requests.post(f"{api.base}/_devstack/reset", timeout=5).raise_for_status()
    assert limits_of(api)["cloudaccount"] == 200


def test_a_resource_limits_patch_the_spec_or_palette_refuses_changes_nothing(api: Api) -> None:
    path = limits_path(api)
    assert violations(api.patch(path, json={"resources": [{"kind": "cloudaccounts", "limit": 5}]}))[0][
        "path"] == "resources[0].kind"  # not in v1ResourceLimitType
    assert violations(api.patch(path, json={"resources": [{"kind": "cloudaccount", "limit": "5"}]}))[0][
        "path"] == "resources[0].limit"
    assert violations(api.patch(path, json={"resources": [{"kind": "cloudaccount", "limit": 5, "label": "x"}]}))[0][
        "path"] == "resources[0].label"  # the entity has kind and limit only
    assert violations(api.patch(path, json={"limits": []}))[0]["path"] == "limits"
    refused = [
        ({"resources": [{"kind": "systemadmin", "limit": 5}]}, "resources[0].kind"),  # in the enum, not supported
        ({"resources": [{"kind": "cloudaccount", "limit": 0}]}, "resources[0].limit"),
        ({"resources": [{"kind": "cloudaccount", "limit": 10001}]}, "resources[0].limit"),
        ({"resources": [{"kind": "cloudaccount", "limit": 2.5}]}, "resources[0].limit"),
        ({"resources": [{"kind": "sshkey", "limit": 400}, {"kind": "sshkey", "limit": 500}]}, "resources[1].kind"),
        ({"resources": []}, "resources"),
        (None, "resources"),
    ]
    for body, field in refused:
        assert violations(api.patch(path, json=body))[0]["path"] == field, body
    assert limits_of(api)["sshkey"] == 300 and limits_of(api)["cloudaccount"] == 200
    other = "0" * 24
    expect_error(api.get(f"/v1/tenants/{other}/resourceLimits"), 403, "Forbidden")
    expect_error(api.patch(f"/v1/tenants/{other}/resourceLimits",
                           json={"resources": [{"kind": "cloudaccount", "limit": 5}]}), 403, "Forbidden")


def test_a_cloud_account_past_the_limit_is_refused_counting_every_scope(api: Api) -> None:
    project = api.scoped(project_uid(api, "Default"))
    set_limits(api, cloudaccount=2)
    create_account(api, "in-tenant")
    create_account(project, "in-project")
    body = expect_error(api.post("/v1/cloudaccounts/azure", json=account_body("third")), 400, "ResourceLimitExceeded")
    assert body["details"] == {"kind": "cloudaccount", "limit": 2, "count": 2}
    assert "cloudaccount" in body["message"] and "resourceLimits" in body["message"]
    expect_error(project.post("/v1/cloudaccounts/azure", json=account_body("third")), 400, "ResourceLimitExceeded")
    # The tenant's cross-cloud summary counts every scope's accounts, as the limit does.
    summary = api.get("/v1/cloudaccounts/summary", params={"limit": 1}).json()
    assert summary["listmeta"]["count"] == 2 and len(summary["items"]) == 1
    assert api.get("/v1/cloudaccounts/azure").json()["listmeta"]["count"] == 1  # the tenant's own list is unchanged
    set_limits(api, cloudaccount=3)
    create_account(api, "third")


def test_ssh_keys_past_the_limit_count_the_whole_tenant_and_api_keys_their_user(api: Api) -> None:
    default, team = api.scoped(project_uid(api, "Default")), api.scoped(project_uid(api, "Team-A"))
    set_limits(api, sshkey=2, apiKey=1)

    def upload(scoped: Api, name: str) -> requests.Response:
        return scoped.post("/v1/users/assets/sshkeys", json={"metadata": {"name": name},
                                                             "spec": {"publicKey": ssh_public_key(name)}})

    assert upload(default, "a").status_code == 201 and upload(team, "b").status_code == 201
    refused = expect_error(upload(default, "c"), 400, "ResourceLimitExceeded")
    assert refused["details"] == {"kind": "sshkey", "limit": 2, "count": 2}

    alice, bob = user_uid(api, "alice.ops@example.com"), user_uid(api, "bob.dev@example.com")

    def create_key(name: str, owner: str) -> requests.Response:
        return api.post("/v1/apiKeys", json={"metadata": {"name": name},
                                             "spec": {"userUid": owner, "expiry": future()}})

    assert create_key("alice-1", alice).status_code == 201
    refused = expect_error(create_key("alice-2", alice), 400, "ResourceLimitExceeded")
    assert refused["details"] == {"kind": "apiKey", "limit": 1, "count": 1} and alice in refused["message"]
    assert create_key("bob-1", bob).status_code == 201  # the limit is per user
    assert {k["metadata"]["name"] for k in api.get("/v1/apiKeys").json()["items"]} == {"alice-1", "bob-1"}


def test_an_admin_seed_is_not_refused_by_a_limit_but_counts_against_it(api: Api) -> None:
    set_limits(api, cloudaccount=3)
    seeded = requests.post(f"{api.base}/_devstack/cloudaccounts", json={"namePrefix": "other", "count": 5}, timeout=10)
    assert seeded.status_code == 201, seeded.text
    expect_error(api.post("/v1/cloudaccounts/azure", json=account_body("mine")), 400, "ResourceLimitExceeded")
    assert requests.get(f"{api.base}/_devstack/state", timeout=5).json()["resourceLimits"]["cloudaccount"] == 3
    # A benchmark's tenant may need more than Palette's maxLimit allows: the admin config sets any.
    config = requests.post(f"{api.base}/_devstack/config", json={"resourceLimits": {"cloudaccount": 20000}}, timeout=5)
    assert config.status_code == 200, config.text
    assert limits_of(api)["cloudaccount"] == 20000
    create_account(api, "mine")
    wrong: list[Any] = [{"nope": 3}, {"cloudaccount": 0}, {"cloudaccount": "many"}, []]
    for bad_limits in wrong:
        refused = requests.post(f"{api.base}/_devstack/config", json={"resourceLimits": bad_limits}, timeout=5)
        assert refused.status_code == 400, bad_limits
    assert limits_of(api)["cloudaccount"] == 20000


# ------------------------------------------------------------------------------------ admin surface


def test_admin_state_and_request_record_hide_secrets(api: Api) -> None:
    create_account(api, "secretive", secret="good-very-secret")
    key = api.post("/v1/apiKeys", json={"metadata": {"name": "k"}, "spec": {"expiry": future()}}).json()["apiKey"]
    state = requests.get(f"{api.base}/_devstack/state", timeout=5)
    assert "good-very-secret" not in state.text and key not in state.text
    snapshot = state.json()
    assert snapshot["cloudAccounts"][0]["spec"]["clientSecret"] == "********"
    assert {o["name"]: o["state"] for o in snapshot["overlords"]} == {"pcg-east": "Running", "pcg-west": "Pending"}
    assert snapshot["users"][0]["emailId"] == "admin@example.com" and snapshot["users"][0]["ownsAdminApiKey"]
    broken = b'{"spec": {"clientSecret": "good-in-broken-json"}'  # not JSON: recorded as text
    api.post("/v1/cloudaccounts/azure", data=broken, headers={"Content-Type": "application/json"})
    recorded = requests.get(f"{api.base}/_devstack/requests", timeout=5).text
    assert "good-in-broken-json" not in recorded
    assert "good-very-secret" not in recorded and key not in recorded and ADMIN_KEY not in recorded
    seeded = {p["name"]: p["uid"] for p in snapshot["projects"]}
    requests.post(f"{api.base}/_devstack/reset", timeout=5)
    after = requests.get(f"{api.base}/_devstack/state", timeout=5).json()
    assert after["cloudAccounts"] == [] and {p["name"]: p["uid"] for p in after["projects"]} == seeded


# ------------------------------------------------------------------------------------ responses vs spec


def test_every_response_matches_the_spec(api: Api, app: PaletteApp) -> None:
    """Drive every served operation once and check its answer two ways: with the stand-in's own
    validator and with jsonschema's draft-4 validator over the spec's definitions."""
    with open(SPEC_PATH, encoding="utf-8") as handle:
        definitions = json.load(handle)["definitions"]
    checked: set[str] = set()

    def check(method: str, path_template: str, response: requests.Response) -> requests.Response:
        operation = app.spec.operation(method, path_template)
        assert 200 <= response.status_code < 300, response.text
        body = response.json() if response.content else None
        assert app.spec.check_response(operation, response.status_code, body) == []
        schema = operation.responses[str(response.status_code)].get("schema")
        if schema is not None:
            jsonschema.Draft4Validator({**schema, "definitions": definitions}).validate(body)
        checked.add(operation.operation_id)
        return response

    default_uid = project_uid(api, "Default")
    project = api.scoped(default_uid)
    alice = user_uid(api, "alice.ops@example.com")
    east = overlord_uid(api, "pcg-east")

    check("POST", "/v1/clouds/azure/account/validate", api.post("/v1/clouds/azure/account/validate",
                                                                 json=azure_spec()))
    uid = check("POST", "/v1/cloudaccounts/azure", api.post("/v1/cloudaccounts/azure", json=account_body(
        "a", annotations={"overlordUid": east}, tls={"cert": "pem"}))).json()["uid"]
    in_project = create_account(project, "p")
    seeded = requests.post(f"{api.base}/_devstack/clusters", json={"name": "c1", "cloudAccountUid": in_project},
                           timeout=5)
    assert seeded.status_code == 201, seeded.text
    found = check("POST", "/v1/dashboard/spectroclusters/search", project.post(
        "/v1/dashboard/spectroclusters/search", params={"limit": 1}, json={"filter": {}, "sort": []})).json()
    assert found["items"][0]["specSummary"]["cloudAccountMeta"]["uid"] == in_project
    check("GET", "/v1/cloudaccounts/azure", project.get("/v1/cloudaccounts/azure", params={"limit": 1}))
    check("GET", "/v1/cloudaccounts/azure/{uid}", api.get(f"/v1/cloudaccounts/azure/{uid}"))
    put = account_body("a2")
    put["metadata"]["uid"] = uid
    check("PUT", "/v1/cloudaccounts/azure/{uid}", api.put(f"/v1/cloudaccounts/azure/{uid}", json=put))
    check("GET", "/v1/cloudaccounts/summary", project.get("/v1/cloudaccounts/summary"))
    check("DELETE", "/v1/cloudaccounts/azure/{uid}", api.delete(f"/v1/cloudaccounts/azure/{uid}"))

    key_uid = check("POST", "/v1/users/assets/sshkeys", project.post("/v1/users/assets/sshkeys", json={
        "metadata": {"name": "k", "labels": {"team": "a"}}, "spec": {"publicKey": ssh_public_key()}})).json()["uid"]
    check("GET", "/v1/users/assets/sshkeys", project.get("/v1/users/assets/sshkeys"))
    check("GET", "/v1/users/assets/sshkeys/{uid}", project.get(f"/v1/users/assets/sshkeys/{key_uid}"))
    check("PUT", "/v1/users/assets/sshkeys/{uid}", project.put(f"/v1/users/assets/sshkeys/{key_uid}", json={
        "metadata": {"name": "k", "uid": key_uid}, "spec": {"publicKey": ssh_public_key("b")}}))
    check("DELETE", "/v1/users/assets/sshkeys/{uid}", project.delete(f"/v1/users/assets/sshkeys/{key_uid}"))

    location = check("POST", "/v1/users/assets/locations/azure", project.post(
        "/v1/users/assets/locations/azure", json=location_body("l", annotations={"a": "b"}))).json()["uid"]
    # Palette lists an Azure location with spec.storage "azure", a value the spec's enum lacks
    # (Terraform's import reads it): that one violation is expected, the rest must match.
    listed = project.get("/v1/users/assets/locations")
    operation = app.spec.operation("GET", "/v1/users/assets/locations")
    assert [(v.path, v.rule) for v in app.spec.check_response(operation, 200, listed.json())] == [
        ("items[0].spec.storage", "enum")]
    without_storage = listed.json()
    del without_storage["items"][0]["spec"]["storage"]
    jsonschema.Draft4Validator({"$ref": "#/definitions/v1UserAssetsLocations",
                                "definitions": definitions}).validate(without_storage)
    checked.add(operation.operation_id)
    got = check("GET", "/v1/users/assets/locations/azure/{uid}",
                project.get(f"/v1/users/assets/locations/azure/{location}")).json()
    check("PUT", "/v1/users/assets/locations/azure/{uid}",
          project.put(f"/v1/users/assets/locations/azure/{location}", json=got))
    check("DELETE", "/v1/users/assets/locations/{uid}", project.delete(f"/v1/users/assets/locations/{location}"))

    api_key = check("POST", "/v1/apiKeys", api.post("/v1/apiKeys", json={
        "metadata": {"name": "k"}, "spec": {"userUid": alice, "expiry": future()}})).json()["uid"]
    check("GET", "/v1/apiKeys", api.get("/v1/apiKeys"))
    check("GET", "/v1/apiKeys/{uid}", api.get(f"/v1/apiKeys/{api_key}"))
    check("PUT", "/v1/apiKeys/{uid}", api.put(f"/v1/apiKeys/{api_key}", json={
        "metadata": {"name": "k2", "uid": api_key}, "spec": {"expiry": future(2)}}))
    check("PATCH", "/v1/apiKeys/{uid}", api.patch(f"/v1/apiKeys/{api_key}", json={"isActive": False}))
    check("PUT", "/v1/apiKeys/{uid}/state", api.put(f"/v1/apiKeys/{api_key}/state", json={"isActive": True}))
    check("DELETE", "/v1/apiKeys/{uid}", api.delete(f"/v1/apiKeys/{api_key}"))

    check("GET", "/v1/users", api.get("/v1/users", params={"limit": 2}))
    check("POST", "/v1/users/summary", api.post("/v1/users/summary", json={"filter": {"emailId": {"eq": "x"}}}))
    check("GET", "/v1/users/info", api.get("/v1/users/info"))
    check("GET", "/v1/dashboard/projects/metadata", api.get("/v1/dashboard/projects/metadata"))
    check("GET", "/v1/overlords", api.get("/v1/overlords"))
    check("GET", "/v1/overlords/{uid}", api.get(f"/v1/overlords/{east}"))
    tenant = api.get("/v1/users/info").json()["tenantUid"]
    check("GET", "/v1/tenants/{tenantUid}/resourceLimits", api.get(f"/v1/tenants/{tenant}/resourceLimits"))
    check("PATCH", "/v1/tenants/{tenantUid}/resourceLimits", api.patch(
        f"/v1/tenants/{tenant}/resourceLimits", json={"resources": [{"kind": "sshkey", "limit": 301}]}))

    assert checked == {op.operation_id for op in app.operations}
    # error bodies are the spec's v1Error too
    error = api.get("/v1/cloudaccounts/azure/nope").json()
    jsonschema.Draft4Validator({"$ref": "#/definitions/v1Error", "definitions": definitions}).validate(error)


# ------------------------------------------------------------------------------------ the checker alone


def test_spec_checker_handles_readonly_allof_discriminator_and_nullable() -> None:
    spec = PaletteSpec({"swagger": "2.0", "paths": {}, "definitions": {
        "pet": {"type": "object", "discriminator": "kind", "required": ["kind", "id"],
                "properties": {"kind": {"type": "string"}, "id": {"type": "string", "readOnly": True},
                               "born": {"type": "string", "format": "date-time"},
                               "tag": {"type": "string", "x-nullable": True}}},
        "cat": {"allOf": [{"$ref": "#/definitions/pet"},
                          {"properties": {"lives": {"type": "integer", "format": "int32", "maximum": 9}}}]},
        "owner": {"type": "object", "properties": {"pets": {"type": "array", "uniqueItems": True,
                                                            "items": {"$ref": "#/definitions/pet"}}}},
    }})

    def rules(value: Any, mode: str = "request") -> set[tuple[str, str]]:
        return {(v.path, v.rule) for v in spec.validate("owner", value, mode=mode)}

    assert rules({"pets": [{"kind": "cat", "lives": 9, "tag": None, "born": "2026-01-01T00:00:00Z"}]}) == set()
    assert rules({"pets": [{"kind": "cat", "lives": 10}]}) == {("pets[0].lives", "maximum")}
    assert rules({"pets": [{"kind": "cat", "id": "x"}]}) == {("pets[0].id", "readOnly")}
    assert rules({"pets": [{"kind": "cat", "id": "x"}]}, "response") == set()
    assert rules({"pets": [{"kind": "cat"}]}, "response") == {("pets[0].id", "required")}
    assert rules({"pets": [{"kind": "dog"}]}) == {("pets[0].kind", "discriminator")}
    assert rules({"pets": [{"kind": "pet", "lives": 1}]}) == {("pets[0].lives", "additionalProperties")}
    assert rules({"pets": [{"kind": "cat", "born": "2026-13-01T00:00:00Z"}]}) == {("pets[0].born", "format")}
    assert rules({"pets": [{"kind": "cat"}, {"kind": "cat"}]}) == {("pets[1]", "uniqueItems")}
    assert rules({"pets": [{"kind": "cat", "lives": -(2**40)}]}) == {("pets[0].lives", "format")}
    assert rules({"pets": [{"kind": "cat", "lives": 1.0}]}) == {("pets[0].lives", "type")}


# ------------------------------------------------------------------------------------ fuzzing

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Mostly real operations (so bodies and parameters reach the spec checks), sometimes anything.
_ROUTES = st.one_of(
    st.sampled_from(sorted(EXPECTED_ROUTES)),
    st.sampled_from(sorted(EXPECTED_ROUTES)),
    st.tuples(st.sampled_from(_METHODS),
              st.sampled_from([*sorted({p for _, p in EXPECTED_ROUTES}), "/v1/{uid}", "/",
                               "/v1/cloudaccounts/azure/{uid}/x"])),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)


def _mutated_account() -> st.SearchStrategy[Any]:
    base = account_body("fuzz")
    return st.fixed_dictionaries({}, optional={
        "metadata": st.one_of(st.just(base["metadata"]), _json_values),
        "spec": st.one_of(st.just(base["spec"]),
                          st.dictionaries(st.sampled_from(["tenantId", "clientId", "clientSecret",
                                                           "azureEnvironment", "settings", "tls", "x"]),
                                          _json_values, max_size=6)),
        "status": _json_values,
    })


@st.composite
def _requests(draw: Callable[..., Any]) -> dict[str, Any]:
    method, template = draw(_ROUTES)
    uid = draw(st.text(max_size=30))
    path = template.replace("{uid}", quote(uid, safe="") or "u")
    if draw(st.booleans()):
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in draw(
            st.dictionaries(st.sampled_from(["limit", "offset", "continue", "name", "filters", "orderBy", "zz"]),
                            st.text(max_size=12), max_size=3)).items())
    headers = {"ApiKey": draw(st.sampled_from([ADMIN_KEY] * 6 + ["", "wrong"]))}
    project = draw(st.one_of(st.none(), st.none(), _header_text))
    if project is not None:
        headers["ProjectUid"] = project
    body_kind = draw(st.sampled_from(["none", "json", "account", "bytes"]))
    data: bytes | None = None
    if body_kind == "json":
        data = json.dumps(draw(_json_values)).encode()
    elif body_kind == "account":
        data = json.dumps(draw(_mutated_account())).encode()
    elif body_kind == "bytes":
        data = draw(st.binary(max_size=64))
    if data is not None:
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                                                        "text/plain", "application/x-www-form-urlencoded"]))
    return {"method": method, "path": path, "headers": headers, "data": data}


def test_fuzzed_requests_get_v1_errors_then_a_good_request_works(api: Api, server: RunningServer) -> None:
    @settings(max_examples=150, deadline=None, database=None)
    @given(case=_requests())
    def one(case: dict[str, Any]) -> None:
        with requests.Session() as session:
            response = session.request(case["method"], server.url + case["path"], headers=case["headers"],
                                       data=case["data"], timeout=10)
        assert "Traceback" not in response.text and 'File "' not in response.text
        assert response.status_code < 500, response.text
        if response.status_code >= 400 and case["method"] != "HEAD":
            body = response.json()
            assert set(body) == {"code", "message", "details", "ref"} and isinstance(body["code"], str)

    one()
    assert api.get("/v1/users/info").status_code == 200
    create_account(api, "after-the-fuzz")


def test_malformed_http_and_then_a_good_request(api: Api, server: RunningServer) -> None:
    for raw in (b"GARBAGE\r\n\r\n", b"GET /v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
                b"POST /v1/apiKeys HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", b"\x16\x03\x01\x00\xff\r\n\r\n"):
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert b"Traceback" not in answer
        if answer:
            # A request line without a version is HTTP/0.9, whose answer is the bare body.
            head, _, body = answer.partition(b"\r\n\r\n") if answer.startswith(b"HTTP/") else (b"", b"", answer)
            assert set(json.loads(body)) == {"code", "message", "details", "ref"}, head
    assert api.get("/v1/users/info").status_code == 200
    create_account(api, "after-the-fuzz")
