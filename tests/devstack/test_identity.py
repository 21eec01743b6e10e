"""Conformance of the identity stand-in, driven by the real clients.

azure-identity credentials obtain every token (managed identity and client credentials), and
``requests`` speaks Graph, so the wire formats are checked by the code that consumes them in
production. One app object is served on a plain HTTP and an HTTPS listener, as in the stack.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    ClientSecretCredential,
    CredentialUnavailableError,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.httpbase import RunningServer
from devstack.identity import GRAPH_RESOURCE, IdentityApp, create_app
from devstack.identity.models import (
    ApplicationNotFoundError,
    ExpiredClientSecretError,
    IdentityBackend,
    IdentityConfig,
    InvalidClientSecretError,
    InvalidConfigError,
    InvalidPasswordDatesError,
    PasswordLimitError,
    PasswordNotFoundError,
    TenantNotFoundError,
    format_datetime,
    parse_datetime,
)
from devstack.tls import make_loopback_certificate
from devstack.tokens import issue_token, verify_token

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

IDENTITY_HEADER = "local-identity-header-value"
MI_TENANT = "7a1d2c3e-0000-4000-8000-00000000aaaa"
MI_CLIENT = "5b2e3f4a-0000-4000-8000-00000000bbbb"
OTHER_TENANT = "9c3f4a5b-0000-4000-8000-00000000cccc"
GRAPH_SCOPE = f"{GRAPH_RESOURCE}/.default"
POLL_LIMIT_SECONDS = 10.0

# Variables that would steer DefaultAzureCredential or MSAL away from the App Service endpoint.
_FOREIGN_IDENTITY_ENV = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
)


@dataclass
class Stack:
    app: IdentityApp
    http: RunningServer
    https: RunningServer
    ca_path: str

    @property
    def msi_endpoint(self) -> str:
        return f"{self.http.url}/msi/token"

    def call(self, method: str, path: str, *, base: str | None = None, **kwargs: Any) -> requests.Response:
        """One request with the CA pinned per call (a session's ``verify`` loses to the env)."""
        kwargs.setdefault("timeout", 10)
        return requests.request(method, f"{base or self.https.url}{path}", verify=self.ca_path, **kwargs)

    def register(self, *, tenant_id: str = MI_TENANT, app_id: str | None = None) -> str:
        app_id = app_id or str(uuid.uuid4())
        response = self.call("POST", "/_devstack/applications", json={"appId": app_id, "tenantId": tenant_id})
        assert response.status_code == 201, response.text
        return app_id

    def configure(self, **settings: Any) -> None:
        response = self.call("POST", "/_devstack/config", json=settings)
        assert response.status_code == 200, response.text

    def secret_credential(self, app_id: str, secret: str, tenant_id: str = MI_TENANT) -> ClientSecretCredential:
        return ClientSecretCredential(tenant_id, app_id, secret, authority=self.https.url,
                                      disable_instance_discovery=True, connection_verify=self.ca_path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cert = make_loopback_certificate(tmp_path_factory.mktemp("identity-tls"))
    app = create_app(identity_header=IDENTITY_HEADER, managed_identity_tenant_id=MI_TENANT,
                     managed_identity_client_id=MI_CLIENT)
    http_server = RunningServer(app)
    https_server = RunningServer(app, tls=cert.server_context())
    try:
        yield Stack(app, http_server, https_server, str(cert.ca_path))
    finally:
        http_server.stop()
        https_server.stop()


@pytest.fixture(autouse=True)
def _fresh(stack: Stack) -> None:
    stack.http.reset()
    stack.https.reset()


@pytest.fixture
def msi_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment App Service gives a function with a managed identity."""
    for name in _FOREIGN_IDENTITY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", stack.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


@pytest.fixture
def graph(stack: Stack, msi_env: None) -> Iterator[GraphCaller]:
    credential = ManagedIdentityCredential()
    token = credential.get_token(GRAPH_SCOPE).token
    yield GraphCaller(stack, token)
    credential.close()


@dataclass
class GraphCaller:
    """Graph over HTTPS with the function's managed identity token."""

    stack: Stack
    token: str

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.stack.call(method, f"/v1.0{path}", headers=headers, **kwargs)

    def add_password(self, app_id: str, **credential: Any) -> dict[str, Any]:
        response = self("POST", f"/applications(appId='{app_id}')/addPassword",
                        json={"passwordCredential": {"displayName": "rotation", **credential}})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _aadsts(credential: ClientSecretCredential) -> str | None:
    """``None`` when a Graph token is granted, else the error text azure-identity raised."""
    try:
        credential.get_token(GRAPH_SCOPE)
    except ClientAuthenticationError as error:
        return str(error.message)
    finally:
        credential.close()
    return None


def _poll_until_accepted(stack: Stack, app_id: str, secret: str) -> list[str]:
    """Try the secret until it is accepted (bounded); return the refusals seen on the way."""
    refusals: list[str] = []
    deadline = time.monotonic() + POLL_LIMIT_SECONDS
    while True:
        failure = _aadsts(stack.secret_credential(app_id, secret))
        if failure is None:
            return refusals
        refusals.append(failure)
        assert time.monotonic() < deadline, f"secret never accepted; last refusal: {failure}"
        time.sleep(0.1)


# -- managed identity ---------------------------------------------------------------------------


def test_managed_identity_credential_gets_tokens_for_any_resource(stack: Stack, msi_env: None) -> None:
    credential = ManagedIdentityCredential()
    graph_token = credential.get_token(GRAPH_SCOPE)
    vault_token = credential.get_token("https://vault.azure.net/.default")
    credential.close()
    graph_claims = verify_token(graph_token.token, audience=GRAPH_RESOURCE)
    assert graph_claims is not None and graph_claims["tid"] == MI_TENANT
    assert verify_token(vault_token.token, audience="https://vault.azure.net") is not None
    assert graph_token.expires_on > time.time()


def test_managed_identity_tokens_serve_resource_manager(stack: Stack, msi_env: None) -> None:
    """The product reads role assignments with its managed identity: a token for Resource Manager's
    audience, however the scope is spelled, that the Resource Manager stand-in accepts."""
    credential = ManagedIdentityCredential()
    tokens = [credential.get_token(scope).token for scope in
              ("https://management.azure.com/.default", "https://management.azure.com//.default")]
    credential.close()
    for token in tokens:
        claims = verify_token(token, audience="https://management.azure.com")
        assert claims is not None and claims["tid"] == MI_TENANT and claims["oid"] == MI_CLIENT


def test_default_azure_credential_uses_the_app_service_endpoint(stack: Stack, msi_env: None) -> None:
    credential = DefaultAzureCredential()
    token = credential.get_token("https://vault.azure.net/.default")
    credential.close()
    assert verify_token(token.token, audience="https://vault.azure.net") is not None
    assert any(r.path == "/msi/token" for r in stack.http.requests)


def test_user_assigned_client_id_must_be_the_configured_identity(stack: Stack, msi_env: None) -> None:
    assert ManagedIdentityCredential(client_id=MI_CLIENT).get_token(GRAPH_SCOPE).token
    with pytest.raises((CredentialUnavailableError, ClientAuthenticationError)):
        ManagedIdentityCredential(client_id=str(uuid.uuid4())).get_token(GRAPH_SCOPE)


@pytest.mark.parametrize("listener", ["http", "https"])
def test_msi_wire_format_and_errors(stack: Stack, listener: str) -> None:
    base = getattr(stack, listener).url
    params = {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
    ok = stack.call("GET", "/msi/token", base=base, params=params, headers={"X-IDENTITY-HEADER": IDENTITY_HEADER})
    assert ok.status_code == 200
    body = ok.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time()
    assert (body["resource"], body["token_type"], body["client_id"]) == (
        "https://vault.azure.net", "Bearer", MI_CLIENT)

    missing = stack.call("GET", "/msi/token", base=base, params=params)
    wrong = stack.call("GET", "/msi/token", base=base, params=params, headers={"X-IDENTITY-HEADER": "nope"})
    old_api = stack.call("GET", "/msi/token", base=base, params={**params, "api-version": "2017-09-01"},
                         headers={"X-IDENTITY-HEADER": IDENTITY_HEADER})
    no_resource = stack.call("GET", "/msi/token", base=base, params={"api-version": "2019-08-01"},
                             headers={"X-IDENTITY-HEADER": IDENTITY_HEADER})
    for response, status in ((missing, 400), (wrong, 401), (old_api, 400), (no_resource, 400)):
        assert response.status_code == status
        assert response.json()["statusCode"] == status and response.json()["message"]
    assert "access_token" not in wrong.text


# -- Entra ID: discovery and client credentials ------------------------------------------------


def test_openid_configuration_points_at_this_server(stack: Stack) -> None:
    response = stack.call("GET", f"/{MI_TENANT}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == f"{stack.https.url}/{MI_TENANT}/oauth2/v2.0/token"
    assert config["authorization_endpoint"].startswith(f"{stack.https.url}/{MI_TENANT}/")
    assert config["issuer"] == f"{stack.https.url}/{MI_TENANT}/v2.0"
    unknown = stack.call("GET", f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]


def test_new_secret_signs_in_and_a_wrong_one_fails(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    created = graph.add_password(app_id)
    token = stack.secret_credential(app_id, created["secretText"]).get_token(GRAPH_SCOPE).token
    claims = verify_token(token, audience=GRAPH_RESOURCE)
    assert claims is not None and claims["sub"] == app_id and claims["tid"] == MI_TENANT

    with pytest.raises(ClientAuthenticationError) as refused:
        stack.secret_credential(app_id, created["secretText"] + "x").get_token(GRAPH_SCOPE)
    assert "AADSTS7000215" in str(refused.value.message)
    assert "not the client secret ID" in str(refused.value.message)


def test_token_endpoint_errors_have_entra_shape(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    secret = graph.add_password(app_id)["secretText"]
    token_path = f"/{MI_TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
            "scope": GRAPH_SCOPE}

    good = stack.call("POST", token_path, data=form)
    assert good.status_code == 200
    assert {k: good.json()[k] for k in ("token_type", "expires_in", "ext_expires_in")} == {
        "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599}

    cases = [
        ({**form, "client_id": str(uuid.uuid4())}, token_path, 400, "unauthorized_client", 700016),
        ({**form, "client_secret": "wrong"}, token_path, 401, "invalid_client", 7000215),
        ({k: v for k, v in form.items() if k != "client_secret"}, token_path, 401, "invalid_client", 7000218),
        ({**form, "scope": GRAPH_RESOURCE}, token_path, 400, "invalid_scope", 1002012),
        ({**form, "grant_type": "password"}, token_path, 400, "unsupported_grant_type", 70003),
        ({}, token_path, 400, "invalid_request", 900144),
        (form, f"/{uuid.uuid4()}/oauth2/v2.0/token", 400, "invalid_request", 90002),
    ]
    for data, path, status, error, code in cases:
        response = stack.call("POST", path, data=data, headers={"client-request-id": "corr-1"})
        body = response.json()
        assert response.status_code == status, (data, body)
        assert set(body) == {"error", "error_description", "error_codes", "timestamp", "trace_id",
                             "correlation_id", "error_uri"}
        assert (body["error"], body["error_codes"]) == (error, [code])
        assert body["error_description"].startswith(f"AADSTS{code}: ")
        assert body["correlation_id"] == "corr-1"
    wrong_method = stack.call("GET", token_path)
    assert wrong_method.status_code == 400 and wrong_method.json()["error_codes"] == [900561]


def test_app_in_another_tenant_is_unknown_here(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register(tenant_id=OTHER_TENANT)
    # Graph shows the managed identity only its own directory.
    assert graph("GET", f"/applications(appId='{app_id}')").status_code == 404
    assert graph("POST", f"/applications(appId='{app_id}')/addPassword", json={}).status_code == 404
    # Seed a secret through the backend and sign in against each tenant.
    _, secret = stack.app.backend.add_password(OTHER_TENANT, app_id=app_id)
    assert _aadsts(stack.secret_credential(app_id, secret, tenant_id=OTHER_TENANT)) is None
    failure = _aadsts(stack.secret_credential(app_id, secret, tenant_id=MI_TENANT))
    assert failure is not None and "AADSTS700016" in failure


# -- propagation, removal, expiry ---------------------------------------------------------------


def test_new_secret_is_refused_until_it_has_propagated(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    stack.configure(propagationDelaySeconds=600)  # long enough that the first try must be refused
    secret = graph.add_password(app_id)["secretText"]
    first = _aadsts(stack.secret_credential(app_id, secret))
    assert first is not None and "AADSTS7000215" in first

    stack.configure(propagationDelaySeconds=1.0)
    refusals = _poll_until_accepted(stack, app_id, secret)
    assert all("AADSTS7000215" in refusal for refusal in refusals)


def test_propagation_and_expiry_follow_the_clock(tmp_path: Path) -> None:
    """Same rules on a server with a hand-driven clock: exact, and no waiting."""
    now = [dt.datetime(2030, 1, 1, tzinfo=dt.UTC)]
    backend = IdentityBackend(managed_identity_tenant_id=MI_TENANT, managed_identity_client_id=MI_CLIENT,
                              config=IdentityConfig(propagation_delay_seconds=1.0), clock=lambda: now[0])
    cert = make_loopback_certificate(tmp_path)
    server = RunningServer(IdentityApp(backend, identity_header=IDENTITY_HEADER), tls=cert.server_context())
    try:
        app_id = str(uuid.uuid4())
        backend.register_application(app_id=app_id, tenant_id=MI_TENANT)
        _, secret = backend.add_password(MI_TENANT, app_id=app_id, end=now[0] + dt.timedelta(hours=1))

        def attempt() -> str | None:
            return _aadsts(ClientSecretCredential(MI_TENANT, app_id, secret, authority=server.url,
                                                  disable_instance_discovery=True,
                                                  connection_verify=str(cert.ca_path)))

        refused = attempt()
        assert refused is not None and "AADSTS7000215" in refused
        now[0] += dt.timedelta(seconds=0.999)
        assert "AADSTS7000215" in (attempt() or "")
        now[0] += dt.timedelta(seconds=0.001)
        assert attempt() is None
        now[0] += dt.timedelta(hours=1)
        expired = attempt()
        assert expired is not None and "AADSTS7000222" in expired
    finally:
        server.stop()


def test_removed_secret_no_longer_signs_in(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    old = graph.add_password(app_id, displayName="old")
    new = graph.add_password(app_id, displayName="new")
    assert _aadsts(stack.secret_credential(app_id, old["secretText"])) is None

    removed = graph("POST", f"/applications(appId='{app_id}')/removePassword", json={"keyId": old["keyId"]})
    assert removed.status_code == 204 and removed.content == b""
    failure = _aadsts(stack.secret_credential(app_id, old["secretText"]))
    assert failure is not None and "AADSTS7000215" in failure
    assert _aadsts(stack.secret_credential(app_id, new["secretText"])) is None

    app = graph("GET", f"/applications(appId='{app_id}')").json()
    assert [p["keyId"] for p in app["passwordCredentials"]] == [new["keyId"]]
    again = graph("POST", f"/applications/{app['id']}/removePassword", json={"keyId": old["keyId"]})
    assert again.status_code == 404 and again.json()["error"]["code"] == "Request_ResourceNotFound"


# -- Graph ----------------------------------------------------------------------------------------


def test_add_password_answer_and_application_view(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    created = graph.add_password(app_id)
    assert set(created) == {"@odata.context", "customKeyIdentifier", "displayName", "endDateTime", "hint",
                            "keyId", "secretText", "startDateTime"}
    assert len(created["secretText"]) == 40 and created["hint"] == created["secretText"][:3]
    assert created["customKeyIdentifier"] is None and uuid.UUID(created["keyId"])
    start, end = parse_datetime(created["startDateTime"]), parse_datetime(created["endDateTime"])
    assert end == start.replace(year=start.year + 2)

    by_app_id = graph("GET", f"/applications(appId='{app_id}')")
    assert by_app_id.status_code == 200
    app = by_app_id.json()
    assert app["appId"] == app_id and uuid.UUID(app["id"])
    assert app["passwordCredentials"] == [{**{k: v for k, v in created.items() if k != "@odata.context"},
                                           "secretText": None}]
    assert graph("GET", f"/applications/{app['id']}").json()["appId"] == app_id
    explicit = graph("POST", f"/applications/{app['id']}/addPassword", json={"passwordCredential": {
        "displayName": "dated", "startDateTime": "2031-01-01T00:00:00Z", "endDateTime": "2031-06-30T00:00:00Z"}})
    assert explicit.status_code == 200
    assert (explicit.json()["startDateTime"], explicit.json()["endDateTime"]) == (
        "2031-01-01T00:00:00Z", "2031-06-30T00:00:00Z")
    listed = graph("GET", "/applications", params={"$filter": f"appId eq '{app_id}'"}).json()["value"]
    assert [a["id"] for a in listed] == [app["id"]]


def test_unknown_application_is_404(stack: Stack, graph: GraphCaller) -> None:
    missing = str(uuid.uuid4())
    for method, path, body in (
        ("GET", f"/applications(appId='{missing}')", None),
        ("GET", f"/applications/{missing}", None),
        ("POST", f"/applications(appId='{missing}')/addPassword", {"passwordCredential": {}}),
        ("POST", f"/applications/{missing}/removePassword", {"keyId": str(uuid.uuid4())}),
    ):
        response = graph(method, path, json=body, headers={"client-request-id": "graph-corr"})
        assert response.status_code == 404, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "Request_ResourceNotFound"
        assert error["message"] == (f"Resource '{missing}' does not exist or one of its queried "
                                    "reference-property objects are not present.")
        assert error["innerError"]["client-request-id"] == "graph-corr"
        assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


def test_service_principal_by_app_id(stack: Stack, graph: GraphCaller) -> None:
    """Each registered app has a service principal of its own object id (what role assignments
    name), found by Graph's alternate key ``servicePrincipals(appId='...')``."""
    app_id, sp_id = str(uuid.uuid4()), str(uuid.uuid4())
    registered = stack.call("POST", "/_devstack/applications",
                            json={"appId": app_id, "tenantId": MI_TENANT, "displayName": "palette-sp",
                                  "servicePrincipalId": sp_id.upper()})
    assert registered.status_code == 201 and registered.json()["servicePrincipalId"] == sp_id
    response = graph("GET", f"/servicePrincipals(appId='{app_id}')")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"].endswith("#servicePrincipals/$entity")
    assert (body["id"], body["appId"], body["displayName"]) == (sp_id, app_id, "palette-sp")
    assert body["id"] != registered.json()["id"]  # not the application's object id
    selected = graph("GET", f"/servicePrincipals(appId=\"{app_id}\")", params={"$select": "id,appId"}).json()
    assert {k: v for k, v in selected.items() if not k.startswith("@")} == {"id": sp_id, "appId": app_id}
    assert graph("GET", f"/servicePrincipals(appId='{app_id}')", params={"$select": "passwordCredentials"}
                 ).status_code == 400
    generated = graph("GET", f"/servicePrincipals(appId='{stack.register()}')").json()["id"]
    assert uuid.UUID(generated) and generated != sp_id

    missing = str(uuid.uuid4())
    absent = graph("GET", f"/servicePrincipals(appId='{missing}')", headers={"client-request-id": "sp-corr"})
    assert absent.status_code == 404
    assert absent.json()["error"]["code"] == "Request_ResourceNotFound"
    assert missing in absent.json()["error"]["message"]
    other_tenant = stack.register(tenant_id=OTHER_TENANT)
    assert graph("GET", f"/servicePrincipals(appId='{other_tenant}')").status_code == 404
    assert graph("GET", "/servicePrincipals(appId=)").status_code == 400
    assert stack.call("GET", f"/v1.0/servicePrincipals(appId='{app_id}')").status_code == 401

    clash = stack.call("POST", "/_devstack/applications",
                       json={"appId": str(uuid.uuid4()), "tenantId": MI_TENANT, "servicePrincipalId": sp_id})
    assert clash.status_code == 409
    assert stack.call("POST", "/_devstack/applications",
                      json={"appId": "x", "tenantId": MI_TENANT, "servicePrincipalId": "nope"}).status_code == 400
    state = stack.call("GET", "/_devstack/state").json()["tenants"][MI_TENANT]["applications"]
    assert {a["appId"]: a["servicePrincipalId"] for a in state}[app_id] == sp_id


def test_seeded_service_principal_survives_reset() -> None:
    backend = IdentityBackend(managed_identity_tenant_id=MI_TENANT, managed_identity_client_id=MI_CLIENT)
    seeded = backend.seed_application(app_id="seeded-app", tenant_id=MI_TENANT)
    backend.reset()
    again = backend.get_application(MI_TENANT, app_id="seeded-app")
    assert again.service_principal_id == seeded.service_principal_id != again.object_id


def test_password_cap_is_a_bad_request(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    stack.configure(passwordCap=2)
    first = graph.add_password(app_id)
    graph.add_password(app_id)
    third = graph("POST", f"/applications(appId='{app_id}')/addPassword", json={"passwordCredential": {}})
    assert third.status_code == 400
    error = third.json()["error"]
    assert error["code"] == "TooManyAppPasswords"
    assert error["message"] == "Not allowed to add 3 passwords. You can only add a maximum of 2 passwords."
    graph("POST", f"/applications(appId='{app_id}')/removePassword", json={"keyId": first["keyId"]})
    graph.add_password(app_id)  # room again after a removal


def test_bad_password_requests_are_400(stack: Stack, graph: GraphCaller) -> None:
    app_id = stack.register()
    path = f"/applications(appId='{app_id}')/addPassword"
    past = format_datetime(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    for kwargs in (
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": ["passwordCredential"]},
        {"json": {"passwordCredential": "text"}},
        {"json": {"passwordCredential": {"displayName": 5}}},
        {"json": {"passwordCredential": {"endDateTime": "tomorrow"}}},
        {"json": {"passwordCredential": {"endDateTime": past}}},
        {"json": {"passwordCredential": {"startDateTime": "2031-01-02T00:00:00Z",
                                         "endDateTime": "2031-01-01T00:00:00Z"}}},
    ):
        response = graph("POST", path, **kwargs)
        assert response.status_code == 400, (kwargs, response.text)
        assert response.json()["error"]["code"] == "Request_BadRequest"
    remove = f"/applications(appId='{app_id}')/removePassword"
    assert graph("POST", remove, json={"keyId": "not-a-guid"}).status_code == 400
    assert graph("POST", remove, json={"keyId": str(uuid.uuid4())}).status_code == 404
    assert graph("GET", "/applications/not-a-guid").status_code == 400
    assert stack.app.backend.get_application(MI_TENANT, app_id=app_id).passwords == ()


def test_graph_requires_a_graph_token_from_this_authority(stack: Stack, msi_env: None) -> None:
    app_id = stack.register()
    path = f"/v1.0/applications(appId='{app_id}')"
    vault_token, _ = issue_token(audience="https://vault.azure.net", subject=MI_CLIENT, tenant_id=MI_TENANT)
    for headers, message in (
        ({}, "Access token is empty."),
        ({"Authorization": "Bearer not-a-jwt"}, None),
        ({"Authorization": "Bearer aaa.bbb.ccc"}, None),
        ({"Authorization": f"Bearer {vault_token}"}, "Access token validation failure. Invalid audience."),
        ({"Authorization": f"Basic {vault_token}"}, "Access token is empty."),
    ):
        response = stack.call("GET", path, headers=headers)
        assert response.status_code == 401
        assert "WWW-Authenticate" in response.headers
        error = response.json()["error"]
        assert error["code"] == "InvalidAuthenticationToken"
        assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
        if message:
            assert error["message"] == message
    token = ManagedIdentityCredential().get_token(GRAPH_SCOPE).token
    assert stack.call("GET", path, headers={"Authorization": f"Bearer {token}"}).status_code == 200


# -- admin surface ----------------------------------------------------------------------------------


#: Graph's write windows as the stand-in starts: off, with Microsoft's figures ready.
REAL_WRITE_LIMITS_OFF = {"graphWriteLimits": False, "graphAppWriteLimit": 3000, "graphAppWriteWindowSeconds": 150.0,
                         "graphTenantWriteLimit": 18000, "graphTenantWriteWindowSeconds": 300.0}


def test_admin_register_config_state_and_reset(stack: Stack, graph: GraphCaller) -> None:
    app_id = str(uuid.uuid4())
    first = stack.call("POST", "/_devstack/applications",
                       json={"appId": app_id, "tenantId": MI_TENANT, "displayName": "Palette onboarding"})
    again = stack.call("POST", "/_devstack/applications", json={"appId": app_id, "tenantId": MI_TENANT})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["displayName"] == "Palette onboarding"
    clash = stack.call("POST", "/_devstack/applications", json={"appId": app_id, "tenantId": OTHER_TENANT})
    assert clash.status_code == 409
    bad_specs: list[Any] = [{"tenantId": MI_TENANT}, {"appId": 1}, {"appId": "x", "tenantId": "common"}, []]
    for bad in bad_specs:
        assert stack.call("POST", "/_devstack/applications", json=bad).status_code == 400

    for bad_config in ({"propagationDelaySeconds": -1}, {"propagationDelaySeconds": "1"},
                       {"passwordCap": 1.5}, {"passwordCap": True}, {"other": 1}):
        assert stack.call("POST", "/_devstack/config", json=bad_config).status_code == 400
    stack.configure(propagationDelaySeconds=0.5, passwordCap=3)

    created = graph.add_password(app_id)
    assert _aadsts(stack.secret_credential(app_id, "wrong-secret")) is not None
    state = stack.call("GET", "/_devstack/state").json()
    assert state["config"] == {"propagationDelaySeconds": 0.5, "passwordCap": 3, "passwordLifetimeMaxDays": None,
                               "graphRequestsPerSecond": 0.0, **REAL_WRITE_LIMITS_OFF}
    listed = state["tenants"][MI_TENANT]["applications"]
    assert [a["appId"] for a in listed] == [app_id]
    assert [p["keyId"] for p in listed[0]["passwordCredentials"]] == [created["keyId"]]
    recorded = stack.call("GET", "/_devstack/requests").json()
    assert created["secretText"] not in json.dumps(state)
    assert "wrong-secret" not in json.dumps(recorded)
    token_calls = [r for r in recorded["items"] if r["path"].endswith("/oauth2/v2.0/token")]
    assert token_calls and all("client_secret=***" in r["body"] for r in token_calls)

    assert stack.call("POST", "/_devstack/reset").status_code == 204
    state = stack.call("GET", "/_devstack/state").json()
    assert state["config"] == {"propagationDelaySeconds": 0.0, "passwordCap": None, "passwordLifetimeMaxDays": None,
                               "graphRequestsPerSecond": 0.0, **REAL_WRITE_LIMITS_OFF}
    assert state["tenants"] == {MI_TENANT: {"applications": []}}


def test_admin_registers_applications_in_bulk_with_their_passwords(stack: Stack, graph: GraphCaller) -> None:
    key_id = str(uuid.uuid4())
    apps = [{"appId": str(uuid.uuid4()), "passwords": [{"secretText": f"seeded-secret-{i}", "displayName": "mine",
                                                        "endDateTime": "2099-01-01T00:00:00Z"}]} for i in range(3)]
    apps[1]["passwords"][0]["keyId"] = key_id
    made = stack.call("POST", "/_devstack/applications/bulk", json={"tenantId": MI_TENANT, "applications": apps})
    assert made.status_code == 201, made.text
    assert made.json()["count"] == 3 and made.json()["keyIds"][1] == [key_id]
    assert "seeded-secret" not in made.text
    assert _aadsts(stack.secret_credential(apps[1]["appId"], "seeded-secret-1")) is None  # no propagation wait
    assert _aadsts(stack.secret_credential(apps[1]["appId"], "seeded-secret-0")) is not None
    listed = graph("GET", f"/applications(appId='{apps[1]['appId']}')").json()["passwordCredentials"]
    assert [(p["keyId"], p["displayName"], p["endDateTime"]) for p in listed] == [
        (key_id, "mine", "2099-01-01T00:00:00Z")]
    again = [{"appId": str(uuid.uuid4())}, {"appId": apps[0]["appId"]}]
    clash = stack.call("POST", "/_devstack/applications/bulk", json={"applications": again})
    assert clash.status_code == 409
    assert graph("GET", f"/applications(appId='{again[0]['appId']}')").status_code == 404
    bad_passwords: list[Any] = [[{"keyId": "not-a-guid", "secretText": "s"}], [{"secretText": ""}],
                                [{"secretText": "s", "endDateTime": "no"}], {"secretText": "s"}]
    bad_bodies: list[Any] = [{"applications": []}, {"applications": [{"appId": 1}]}, {"applications": [], "zz": 1},
                             {"tenantId": "common", "applications": [{"appId": "x"}]},
                             *({"applications": [{"appId": "x", "passwords": given}]} for given in bad_passwords)]
    for bad in bad_bodies:
        assert stack.call("POST", "/_devstack/applications/bulk", json=bad).status_code == 400, bad


def test_redact_masks_secrets_in_forms_and_json(stack: Stack) -> None:
    app = stack.app
    assert app.redact("grant_type=client_credentials&client_secret=abc%2Bdef&scope=x") == (
        "grant_type=client_credentials&client_secret=***&scope=x")
    assert app.redact({"value": [{"secretText": "s3cr3t", "keyId": "k"}]}) == {
        "value": [{"secretText": "***", "keyId": "k"}]}


# -- the pure backend ---------------------------------------------------------------------------------


def test_backend_rules_without_http() -> None:
    now = [dt.datetime(2030, 6, 1, tzinfo=dt.UTC)]
    backend = IdentityBackend(managed_identity_tenant_id=MI_TENANT, managed_identity_client_id=MI_CLIENT,
                              config=IdentityConfig(password_cap=2), clock=lambda: now[0])
    app, created = backend.register_application(app_id="A-1", tenant_id=MI_TENANT.upper())
    assert created and backend.register_application(app_id="a-1", tenant_id=MI_TENANT) == (app, False)
    later = backend.add_password(MI_TENANT, app_id="A-1", start=now[0] + dt.timedelta(days=1))
    password, secret = backend.add_password(MI_TENANT, object_id=app.object_id)
    assert secret not in repr(password) and secret not in repr(backend.snapshot())
    assert password.hint == secret[:3] and len(secret) == 40 and secret[4:6] == "Q~"
    with pytest.raises(PasswordLimitError):
        backend.add_password(MI_TENANT, app_id="A-1")
    assert backend.authenticate_client(MI_TENANT, "a-1", secret).app_id == "A-1"
    with pytest.raises(InvalidClientSecretError):  # not started yet
        backend.authenticate_client(MI_TENANT, "A-1", later[1])
    with pytest.raises(TenantNotFoundError):
        backend.authenticate_client(OTHER_TENANT, "A-1", secret)
    with pytest.raises(ApplicationNotFoundError):
        backend.get_application(OTHER_TENANT, app_id="A-1")
    with pytest.raises(PasswordNotFoundError):
        backend.remove_password(MI_TENANT, str(uuid.uuid4()), app_id="A-1")
    with pytest.raises(InvalidPasswordDatesError):
        backend.add_password(MI_TENANT, app_id="A-1", end=now[0])
    with pytest.raises(InvalidConfigError):
        backend.configure(propagation_delay_seconds=float("nan"))
    now[0] += dt.timedelta(days=3 * 366)
    with pytest.raises(ExpiredClientSecretError):
        backend.authenticate_client(MI_TENANT, "A-1", secret)
    backend.reset()
    assert backend.list_applications(MI_TENANT) == [] and backend.config.password_cap == 2
    leap = dt.datetime(2036, 2, 29, tzinfo=dt.UTC)
    backend.register_application(app_id="B", tenant_id=MI_TENANT)
    assert backend.add_password(MI_TENANT, app_id="B", start=leap)[0].end.date() == dt.date(2038, 2, 28)


# -- robustness -----------------------------------------------------------------------------------------

FUZZ_APP_ID = "0f0f0f0f-0000-4000-8000-0000000f0f0f"
_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?"), max_size=24)
_PATHS = st.one_of(
    st.sampled_from([
        "/msi/token", f"/{MI_TENANT}/oauth2/v2.0/token", "/common/oauth2/v2.0/token",
        f"/{MI_TENANT}/v2.0/.well-known/openid-configuration", "/v1.0/applications", "/v1.0", "/beta/x",
        "/_devstack/applications", "/_devstack/config", "/_devstack/state", "/", "/v1.0/applications(",
        f"/v1.0/applications(appId='{FUZZ_APP_ID}')", f"/v1.0/applications(appId='{FUZZ_APP_ID}')/addPassword",
        f"/v1.0/applications(appId='{FUZZ_APP_ID}')/removePassword",
        f"/v1.0/servicePrincipals(appId='{FUZZ_APP_ID}')", "/v1.0/servicePrincipals(",
    ]),
    _TEXT.map(lambda s: f"/v1.0/applications(appId='{s}')/addPassword"),
    _TEXT.map(lambda s: f"/v1.0/applications/{s}/removePassword"),
    _TEXT.map(lambda s: f"/v1.0/{s}"),
    _TEXT.map(lambda s: f"/{s}/oauth2/v2.0/token"),
    _TEXT.map(lambda s: f"/{s}/v2.0/.well-known/openid-configuration"),
    _TEXT.map(lambda s: "/" + s),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_PASSWORD_JSON = st.fixed_dictionaries({}, optional={
    "passwordCredential": st.one_of(_JSON, st.fixed_dictionaries({}, optional={
        "displayName": _JSON, "startDateTime": st.one_of(_JSON, st.datetimes().map(str)),
        "endDateTime": st.one_of(_JSON, st.datetimes().map(str))})),
    "keyId": st.one_of(_JSON, st.uuids().map(str)),
    "appId": _JSON, "tenantId": _JSON, "passwordCap": _JSON, "propagationDelaySeconds": _JSON,
    "passwordLifetimeMaxDays": _JSON, "graphRequestsPerSecond": _JSON, "graphWriteLimits": _JSON,
    "graphAppWriteLimit": _JSON, "graphTenantWriteWindowSeconds": _JSON,
})
_FORMS = st.dictionaries(
    st.sampled_from(["grant_type", "client_id", "client_secret", "scope", "resource", "x"]),
    st.one_of(st.sampled_from(["client_credentials", GRAPH_SCOPE, MI_CLIENT]), st.text(max_size=30)),
    max_size=5,
).map(lambda form: urlencode(form).encode())
_BODIES = st.one_of(
    st.just(b""), st.binary(max_size=64), _FORMS,
    _JSON.map(lambda value: json.dumps(value).encode()),
    _PASSWORD_JSON.map(lambda value: json.dumps(value).encode()),
)
_QUERIES = st.dictionaries(
    st.sampled_from(["api-version", "resource", "client_id", "object_id", "$select", "$filter"]),
    st.one_of(st.sampled_from(["2019-08-01", GRAPH_RESOURCE, MI_CLIENT, "appId eq 'x'", "id,appId"]),
              st.text(max_size=20)),
    max_size=3,
)


def test_malformed_requests_never_break_the_server(stack: Stack, graph: GraphCaller) -> None:
    """Throw malformed paths, queries, forms and bodies at it; then a full rotation still works."""

    @settings(max_examples=250, deadline=None, derandomize=False)
    @given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]), path=_PATHS, query=_QUERIES,
           body=_BODIES, authorised=st.booleans(),
           identity_header=st.sampled_from([None, IDENTITY_HEADER, "x"]),
           content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"]))
    def one_request(method: str, path: str, query: dict[str, str], body: bytes, authorised: bool,
                    identity_header: str | None, content_type: str) -> None:
        headers = {"Content-Type": content_type}
        if authorised:
            headers["Authorization"] = f"Bearer {graph.token}"
        if identity_header is not None:
            headers["X-IDENTITY-HEADER"] = identity_header
        target = path + ("?" + urlencode(query) if query else "")
        connection = http.client.HTTPConnection(stack.http.host, stack.http.port, timeout=10)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        assert response.status < 500, (method, target, body, payload)
        assert b"Traceback" not in payload
        if payload:
            assert response.getheader("Content-Type", "").startswith("application/json")
            json.loads(payload)

    stack.register(app_id=FUZZ_APP_ID)
    one_request()
    # Fuzzed admin calls may have changed the settings; put them back, keep everything else.
    stack.configure(propagationDelaySeconds=0, passwordCap=None, passwordLifetimeMaxDays=None,
                    graphRequestsPerSecond=0, graphWriteLimits=False)
    app_id = stack.register()
    secret = graph.add_password(app_id)["secretText"]
    assert _aadsts(stack.secret_credential(app_id, secret)) is None
