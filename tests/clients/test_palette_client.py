"""PaletteClient against the Palette stand-in over real HTTP.

The stand-in checks every request against Palette's published spec (read from the team folder
beside the repository), so each call here also proves its body is one Palette accepts.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from devstack.httpbase import RunningServer
from devstack.palette import create_app
from shared.clients.http import RetryPolicy
from shared.clients.palette import AzureAccount, AzureCredentials, CreatedApiKey, PaletteClient, rate_key_for

if TYPE_CHECKING:
    from collections.abc import Iterator

SPEC_PATH = Path(__file__).resolve().parents[2] / ".." / "shared" / "palette-api" / "palette-apis-spec.json"
ADMIN_KEY = "admin-key-" + uuid.uuid4().hex
SECRET = "Az~Client.Secret-" + uuid.uuid4().hex
WRONG_SECRET = "wrong-" + uuid.uuid4().hex
TENANT_ID = str(uuid.uuid4())
CLIENT_ID = str(uuid.uuid4())


def validator(environment: str, tenant_id: str, client_id: str, client_secret: str) -> str | None:
    """Azure as the stand-in sees it: only ``WRONG_SECRET`` is refused."""
    if client_secret == WRONG_SECRET:
        return f"AADSTS7000215: Invalid client secret provided for {client_id}."
    return None


@pytest.fixture(scope="module")
def palette() -> Iterator[RunningServer]:
    app = create_app(spec_path=SPEC_PATH, api_key=ADMIN_KEY, credential_validator=validator,
                     rate_per_second=10, burst=5)
    server = RunningServer(app)
    yield server
    server.stop()


def fast_retry(**overrides: Any) -> RetryPolicy:
    values: dict[str, Any] = {"initial_delay": 0.01, "max_delay": 0.1, "budget_seconds": 30}
    values.update(overrides)
    return RetryPolicy(**values)


@pytest.fixture
def client(palette: RunningServer, admin: requests.Session) -> Iterator[PaletteClient]:
    with PaletteClient(palette.url, SecretStr(ADMIN_KEY), retry=fast_retry(), timeout=10) as c:
        yield c


def creds(secret: str = SECRET, **overrides: Any) -> AzureCredentials:
    values: dict[str, Any] = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "client_secret": SecretStr(secret)}
    values.update(overrides)
    return AzureCredentials(**values)


def recorded(admin: requests.Session, palette: RunningServer) -> list[dict[str, Any]]:
    response = admin.get(f"{palette.url}/_devstack/requests", timeout=5)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def inject(admin: requests.Session, palette: RunningServer, **fault: Any) -> None:
    admin.post(f"{palette.url}/_devstack/faults", json=fault, timeout=5).raise_for_status()


def configure_rate(admin: requests.Session, palette: RunningServer, rate: float, burst: int = 5) -> None:
    admin.post(f"{palette.url}/_devstack/config", json={"ratePerSecond": rate, "burst": burst},
               timeout=5).raise_for_status()


def rsa_public_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode() + " ops@example.com"


def project_uid(client: PaletteClient, name: str = "Default") -> str:
    project = client.get_project(name)
    assert project is not None
    return project.uid


def set_limits(palette: RunningServer, tenant_uid: str, **limits: int) -> None:
    """Raise (or lower) the tenant's resource limits through Palette's own PATCH, as an admin would."""
    response = requests.patch(f"{palette.url}/v1/tenants/{tenant_uid}/resourceLimits", headers={"ApiKey": ADMIN_KEY},
                              json={"resources": [{"kind": k, "limit": v} for k, v in limits.items()]}, timeout=10)
    assert response.status_code == 204, response.text


# -- lookups ----------------------------------------------------------------------------------------


def test_get_project(client: PaletteClient) -> None:
    default = client.get_project("Default")
    team = client.get_project("Team-A")
    assert default is not None and team is not None
    assert default.name == "Default" and default.uid != team.uid
    assert client.get_project("No-Such-Project") is None


def test_find_overlord_by_name_and_uid(client: PaletteClient) -> None:
    east = client.find_overlord("pcg-east")
    west = client.find_overlord("pcg-west")
    assert east is not None and east.state == "Running" and east.is_running
    assert west is not None and not west.is_running
    assert client.find_overlord(east.uid) == east
    assert client.find_overlord("pcg-north") is None


def test_find_user_by_email_ignores_case(client: PaletteClient) -> None:
    admin_user = client.find_user_by_email("Admin@Example.com")
    assert admin_user is not None
    assert admin_user.email == "admin@example.com"
    assert admin_user.uid
    alice = client.find_user_by_email("alice.ops@example.com")
    assert alice is not None and alice.uid != admin_user.uid and alice.first_name == "Alice"
    assert client.find_user_by_email("nobody@example.com") is None


# -- the tenant and its resource limits --------------------------------------------------------------


def test_the_tenant_uid_is_asked_once_for_the_clients_life(client: PaletteClient, admin: requests.Session,
                                                           palette: RunningServer) -> None:
    first = client.tenant_uid()
    assert first and client.tenant_uid() == first
    assert _count(admin, palette, "GET", "/v1/users/info") == 1


def test_resource_limits_are_palettes_defaults_and_read_afresh(client: PaletteClient, palette: RunningServer) -> None:
    limits = client.get_resource_limits()
    assert (limits["cloudaccount"].limit, limits["sshkey"].limit, limits["apiKey"].limit) == (200, 300, 20)
    assert limits["cloudaccount"].label == "Cloud Accounts" and limits["cloudaccount"].max_limit == 10_000
    set_limits(palette, client.tenant_uid(), cloudaccount=500, sshkey=301)
    again = client.get_resource_limits()
    assert (again["cloudaccount"].limit, again["sshkey"].limit, again["apiKey"].limit) == (500, 301, 20)


def test_cloud_accounts_are_counted_over_every_scope_in_one_small_call(client: PaletteClient, admin: requests.Session,
                                                                       palette: RunningServer) -> None:
    assert client.count_cloud_accounts() == 0
    client.create_azure_account("in-tenant", creds())
    client.create_azure_account("in-project", creds(), project_uid=project_uid(client))
    admin.post(f"{palette.url}/_devstack/cloudaccounts", json={"namePrefix": "other", "count": 60},
               timeout=10).raise_for_status()
    admin.delete(f"{palette.url}/_devstack/requests", timeout=5).raise_for_status()
    assert client.count_cloud_accounts() == 62
    calls = [(r["method"], r["path"], r["query"]) for r in recorded(admin, palette)]
    assert calls == [("GET", "/v1/cloudaccounts/summary", {"limit": ["1"]})]


def test_a_create_past_a_limit_is_palettes_refusal_naming_it(client: PaletteClient, palette: RunningServer) -> None:
    set_limits(palette, client.tenant_uid(), cloudaccount=1)
    client.create_azure_account("first", creds())
    with pytest.raises(HttpResponseError) as refused:
        client.create_azure_account("second", creds())
    assert refused.value.status_code == 400 and refused.value.error is not None
    assert refused.value.error.code == "ResourceLimitExceeded" and "cloudaccount" in str(refused.value)
    assert [a.name for a in client.list_azure_accounts()] == ["first"]


# -- Azure credentials and accounts -----------------------------------------------------------------


def test_validate_azure_credentials(client: PaletteClient) -> None:
    client.validate_azure_credentials(creds())  # 204: returns, nothing to return
    client.validate_azure_credentials(creds(), project_uid=project_uid(client))


def test_invalid_credentials_raise_without_the_secret(client: PaletteClient, admin: requests.Session,
                                                      palette: RunningServer) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.validate_azure_credentials(creds(WRONG_SECRET))
    error = caught.value
    assert error.status_code == 400
    assert error.error is not None and error.error.code == "CloudAccountValidationFailed"
    assert "AADSTS7000215" in str(error)
    assert WRONG_SECRET not in str(error) and WRONG_SECRET not in repr(error)
    assert sum(1 for r in recorded(admin, palette) if r["path"].endswith("/validate")) == 1  # 400: no retry


def test_azure_account_lifecycle_in_tenant_scope(client: PaletteClient) -> None:
    uid = client.create_azure_account("azure-onboarding", creds(tenant_name="Contoso", disable_properties=True))
    account = client.get_azure_account(uid)
    assert account == AzureAccount(uid=uid, name="azure-onboarding", scope="tenant", tenant_id=TENANT_ID,
                                   client_id=CLIENT_ID, environment="AzurePublicCloud", tenant_name="Contoso",
                                   disable_properties=True, overlord_uid=None, state="Running")
    assert client.find_azure_account("azure-onboarding") == account
    assert [a.uid for a in client.list_azure_accounts()] == [uid]

    new_client = str(uuid.uuid4())
    client.update_azure_account(uid, "azure-onboarding", creds("rotated-secret", client_id=new_client,
                                                               environment="AzureUSGovernmentCloud"))
    updated = client.get_azure_account(uid)
    assert (updated.client_id, updated.environment, updated.tenant_name) == (
        new_client, "AzureUSGovernmentCloud", None)

    client.delete_azure_account(uid)
    client.delete_azure_account(uid)  # already gone: success
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_azure_account(uid)
    assert caught.value.error is not None and caught.value.error.code == "ResourceNotFound"
    assert client.find_azure_account("azure-onboarding") is None


def test_create_sends_the_documented_body(client: PaletteClient, admin: requests.Session,
                                          palette: RunningServer) -> None:
    east = client.find_overlord("pcg-east")
    assert east is not None
    uid = client.create_azure_account("with-pcg", creds(), overlord_uid=east.uid)
    assert client.get_azure_account(uid).overlord_uid == east.uid
    posts = [r for r in recorded(admin, palette) if r["method"] == "POST" and r["path"] == "/v1/cloudaccounts/azure"]
    assert len(posts) == 1
    body = posts[0]["body"]
    assert body["metadata"] == {"name": "with-pcg", "annotations": {"scope": "tenant", "overlordUid": east.uid}}
    assert body["spec"]["settings"] == {"disablePropertiesRequest": False}
    assert body["spec"]["azureEnvironment"] == "AzurePublicCloud"
    assert "projectuid" not in posts[0]["headers"]


def test_update_is_a_full_put_with_metadata_uid(client: PaletteClient, admin: requests.Session,
                                                palette: RunningServer) -> None:
    project = project_uid(client)
    uid = client.create_azure_account("put-me", creds(), project_uid=project)
    client.update_azure_account(uid, "put-me-renamed", creds(tls_cert="-----BEGIN CERTIFICATE-----x",
                                                            environment="AzureUSSecretCloud"),
                                project_uid=project)
    put = next(r for r in recorded(admin, palette) if r["method"] == "PUT")
    assert put["body"]["metadata"] == {"name": "put-me-renamed", "uid": uid, "annotations": {"scope": "project"}}
    assert put["body"]["spec"]["tls"] == {"cert": "-----BEGIN CERTIFICATE-----x"}
    assert put["headers"]["projectuid"] == project
    assert client.get_azure_account(uid, project_uid=project).name == "put-me-renamed"


def test_gateway_not_running_is_refused(client: PaletteClient) -> None:
    west = client.find_overlord("pcg-west")
    assert west is not None
    with pytest.raises(HttpResponseError) as caught:
        client.create_azure_account("west", creds(), overlord_uid=west.uid)
    assert caught.value.status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "PrivateCloudGatewayNotRunning"


def test_duplicate_name_is_resource_exists(client: PaletteClient) -> None:
    client.create_azure_account("dup", creds())
    with pytest.raises(ResourceExistsError) as caught:
        client.create_azure_account("dup", creds())
    assert caught.value.status_code == 409
    assert caught.value.error is not None and caught.value.error.code == "CloudAccountAlreadyExists"
    assert SECRET not in str(caught.value)


def test_find_matches_name_and_scope(client: PaletteClient) -> None:
    project = project_uid(client)
    tenant_uid = client.create_azure_account("shared-name", creds())
    project_account_uid = client.create_azure_account("shared-name", creds(), project_uid=project)
    client.create_azure_account("tenant-only", creds())

    in_project = client.find_azure_account("shared-name", project_uid=project)
    in_tenant = client.find_azure_account("shared-name")
    assert in_project is not None and (in_project.uid, in_project.scope) == (project_account_uid, "project")
    assert in_tenant is not None and (in_tenant.uid, in_tenant.scope) == (tenant_uid, "tenant")

    # A project lists the tenant's accounts too, but a tenant account is not the project's.
    listed = {(a.name, a.scope) for a in client.list_azure_accounts(project_uid=project)}
    assert ("tenant-only", "tenant") in listed
    assert client.find_azure_account("tenant-only", project_uid=project) is None
    assert client.find_azure_account("tenant-only") is not None
    assert client.find_azure_account("shared-name", project_uid=project_uid(client, "Team-A")) is None


def test_listing_pages_across_more_than_fifty_accounts(palette: RunningServer, admin: requests.Session) -> None:
    configure_rate(admin, palette, 0)  # setup speed only; rate limits have their own test
    with PaletteClient(palette.url, SecretStr(ADMIN_KEY), rate_per_second=1000, burst=100) as client:
        names = {f"acct-{n:03d}" for n in range(123)}
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: client.create_azure_account(name, creds()), sorted(names)))
        listed = list(client.list_azure_accounts())
        assert len(listed) == 123
        assert {a.name for a in listed} == names
        assert client.find_azure_account("acct-122") is not None

    pages = [r for r in recorded(admin, palette) if r["method"] == "GET" and r["path"] == "/v1/cloudaccounts/azure"]
    assert [p["query"].get("limit") for p in pages[:3]] == [["50"], ["50"], ["50"]]
    assert "continue" not in pages[0]["query"]
    assert all(p["query"].get("continue") for p in pages[1:3])


def test_a_lookup_by_name_among_two_thousand_accounts_is_one_filtered_call(
        client: PaletteClient, admin: requests.Session, palette: RunningServer) -> None:
    """Another team's 2,000 accounts (seeded through the admin route) do not make a lookup list
    them all: the name goes to the server as a ``filters`` term, and the answer is matched again
    here (a server that filtered loosely would still give the right account)."""
    admin.post(f"{palette.url}/_devstack/cloudaccounts", json={"namePrefix": "seeded", "count": 2000},
               timeout=30).raise_for_status()
    set_limits(palette, client.tenant_uid(), cloudaccount=2001)  # Palette's default is 200
    uid = client.create_azure_account("wanted-account", creds())
    admin.delete(f"{palette.url}/_devstack/requests", timeout=5).raise_for_status()

    found = client.find_azure_account("wanted-account")
    assert found is not None and found.uid == uid
    assert client.find_azure_account("seeded-01234") is not None
    assert client.find_azure_account("seeded") is None  # a prefix is not a name
    lists = [r for r in recorded(admin, palette) if r["path"] == "/v1/cloudaccounts/azure"]
    assert [r["query"].get("filters") for r in lists] == [["metadata.name=wanted-account"],
                                                         ["metadata.name=seeded-01234"], ["metadata.name=seeded"]]


def test_a_name_the_filter_syntax_cannot_carry_is_matched_by_listing(client: PaletteClient, admin: requests.Session,
                                                                      palette: RunningServer) -> None:
    """``AND``/``OR`` inside a value would be read as operators: such a name is looked up by listing."""
    from shared.clients.palette import name_filter

    assert name_filter("team-a") == "metadata.name=team-a"
    assert name_filter("SALES-AND-OPS") is None and name_filter("x=y") is None and name_filter("") is None
    uid = client.create_azure_account("SALES-AND-OPS", creds())
    found = client.find_azure_account("SALES-AND-OPS")
    assert found is not None and found.uid == uid
    lists = [r for r in recorded(admin, palette) if r["path"] == "/v1/cloudaccounts/azure"]
    assert lists and all("filters" not in r["query"] for r in lists)


def test_empty_uid_is_not_found_without_a_call(client: PaletteClient, admin: requests.Session,
                                               palette: RunningServer) -> None:
    with pytest.raises(ResourceNotFoundError):
        client.get_azure_account("")
    with pytest.raises(ResourceNotFoundError):
        client.get_api_key("")
    client.delete_api_key("")
    client.delete_ssh_key("", project_uid=None)
    assert recorded(admin, palette) == []


def test_list_is_empty_not_none(client: PaletteClient) -> None:
    assert list(client.list_azure_accounts()) == []


# -- SSH keys ---------------------------------------------------------------------------------------


def test_ssh_key_lifecycle_in_a_project(client: PaletteClient) -> None:
    project = project_uid(client)
    public_key = rsa_public_key()
    uid = client.create_ssh_key("spacetastic-ssh-key", public_key, project_uid=project)
    keys = client.list_ssh_keys(project_uid=project)
    assert [(k.uid, k.name, k.public_key, k.scope) for k in keys] == [
        (uid, "spacetastic-ssh-key", public_key, "project")]
    assert client.find_ssh_key("spacetastic-ssh-key", project_uid=project) == keys[0]
    assert client.find_ssh_key("spacetastic-ssh-key", project_uid=None) is None
    assert client.list_ssh_keys(project_uid=project_uid(client, "Team-A")) == []

    with pytest.raises(ResourceExistsError) as caught:
        client.create_ssh_key("spacetastic-ssh-key", public_key, project_uid=project)
    assert caught.value.error is not None and caught.value.error.code == "SshKeyAlreadyExists"

    client.delete_ssh_key(uid, project_uid=project)
    client.delete_ssh_key(uid, project_uid=project)
    assert client.find_ssh_key("spacetastic-ssh-key", project_uid=project) is None


def test_ssh_key_in_tenant_scope(client: PaletteClient) -> None:
    uid = client.create_ssh_key("tenant-key", rsa_public_key(), project_uid=None)
    found = client.find_ssh_key("tenant-key", project_uid=None)
    assert found is not None and found.uid == uid and found.scope == "tenant"


def test_bad_public_key_is_a_400(client: PaletteClient) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.create_ssh_key("bad", "ssh-rsa not-base64!", project_uid=project_uid(client))
    assert caught.value.status_code == 400
    assert "spec.publicKey" in str(caught.value)


# -- API keys ---------------------------------------------------------------------------------------


def test_api_key_lifecycle(client: PaletteClient, palette: RunningServer, admin: requests.Session) -> None:
    alice = client.find_user_by_email("alice.ops@example.com")
    assert alice is not None
    expiry = dt.datetime(2030, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    created = client.create_api_key("spacetastic-tf-key", user_uid=alice.uid, expiry=expiry,
                                    description="Terraform tutorial key")
    assert isinstance(created, CreatedApiKey)
    value = created.value.get_secret_value()
    assert value and value not in repr(created)

    key = client.get_api_key(created.uid)
    assert (key.uid, key.name, key.user_uid, key.expiry, key.is_active, key.description) == (
        created.uid, "spacetastic-tf-key", alice.uid, expiry, True, "Terraform tutorial key")
    assert client.find_api_key("spacetastic-tf-key") == key
    assert client.list_api_keys() == [key]

    post = next(r for r in recorded(admin, palette) if r["method"] == "POST" and r["path"] == "/v1/apiKeys")
    assert post["body"]["spec"] == {"userUid": alice.uid, "expiry": "2030-12-31T23:59:59.000Z"}
    assert post["body"]["metadata"] == {"name": "spacetastic-tf-key",
                                        "annotations": {"description": "Terraform tutorial key"}}

    # The new key works as a credential of its own.
    with PaletteClient(palette.url, created.value) as as_alice:
        assert as_alice.find_api_key("spacetastic-tf-key") is not None

    with pytest.raises(ResourceExistsError):
        client.create_api_key("spacetastic-tf-key", user_uid=alice.uid, expiry=expiry, description=None)

    client.delete_api_key(created.uid)
    client.delete_api_key(created.uid)
    with pytest.raises(ResourceNotFoundError):
        client.get_api_key(created.uid)
    assert client.find_api_key("spacetastic-tf-key") is None


def test_a_revoked_key_is_refused_until_reactivated(client: PaletteClient, palette: RunningServer,
                                                    admin: requests.Session) -> None:
    alice = client.find_user_by_email("alice.ops@example.com")
    assert alice is not None
    created = client.create_api_key("rotating", user_uid=alice.uid,
                                    expiry=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    with PaletteClient(palette.url, created.value, retry=fast_retry()) as as_alice:
        assert as_alice.find_user_by_email("alice.ops@example.com") == alice

        client.revoke_api_key(created.uid)
        assert client.get_api_key(created.uid).is_active is False
        before = _count(admin, palette, "POST", "/v1/users/summary")
        with pytest.raises(ClientAuthenticationError) as caught:
            as_alice.find_user_by_email("alice.ops@example.com")
        assert caught.value.status_code == 401
        assert caught.value.error is not None and caught.value.error.code == "Unauthorized"
        assert created.value.get_secret_value() not in str(caught.value)
        assert _count(admin, palette, "POST", "/v1/users/summary") == before + 1  # a 401 is not retried

        client.reactivate_api_key(created.uid)
        assert client.get_api_key(created.uid).is_active is True
        assert as_alice.find_user_by_email("alice.ops@example.com") == alice
    puts = [r for r in recorded(admin, palette) if r["method"] == "PUT"]
    assert [(r["path"], r["body"]) for r in puts] == [
        (f"/v1/apiKeys/{created.uid}/state", {"isActive": False}),
        (f"/v1/apiKeys/{created.uid}/state", {"isActive": True})]
    assert all("projectuid" not in r["headers"] for r in puts)


def test_api_key_without_description(client: PaletteClient) -> None:
    admin_user = client.find_user_by_email("admin@example.com")
    assert admin_user is not None
    created = client.create_api_key("plain", user_uid=admin_user.uid,
                                    expiry=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    assert client.get_api_key(created.uid).description is None


def test_api_keys_are_tenant_scoped_calls(client: PaletteClient, admin: requests.Session,
                                          palette: RunningServer) -> None:
    client.list_api_keys()
    client.find_user_by_email("admin@example.com")
    assert all("projectuid" not in r["headers"] for r in recorded(admin, palette))


# -- retries and faults -----------------------------------------------------------------------------


def _count(admin: requests.Session, palette: RunningServer, method: str, path: str) -> int:
    return sum(1 for r in recorded(admin, palette) if r["method"] == method and r["path"] == path)


def test_429_with_retry_after_then_success(client: PaletteClient, admin: requests.Session,
                                           palette: RunningServer) -> None:
    inject(admin, palette, path="^/v1/apiKeys$", method="GET", status=429, times=2, headers={"Retry-After": "0"})
    assert client.list_api_keys() == []
    assert _count(admin, palette, "GET", "/v1/apiKeys") == 3


def test_429_without_retry_after_then_success(client: PaletteClient, admin: requests.Session,
                                              palette: RunningServer) -> None:
    inject(admin, palette, path="^/v1/cloudaccounts/azure$", method="POST", status=429, times=2)
    uid = client.create_azure_account("after-429", creds())
    assert [a.uid for a in client.list_azure_accounts()] == [uid]
    assert _count(admin, palette, "POST", "/v1/cloudaccounts/azure") == 3


def test_503_on_a_creating_post_is_left_to_the_caller(client: PaletteClient, admin: requests.Session,
                                                      palette: RunningServer) -> None:
    """A gateway's 503 may come after the work was done: the client does not repeat the create,
    the onboarding step (which can look for what it made) decides."""
    inject(admin, palette, path="^/v1/users/assets/sshkeys$", method="POST", status=503, times=1)
    project = project_uid(client)
    with pytest.raises(HttpResponseError) as caught:
        client.create_ssh_key("after-503", rsa_public_key(), project_uid=project)
    assert caught.value.status_code == 503
    assert client.list_ssh_keys(project_uid=project) == []


def test_500_on_post_is_not_retried(client: PaletteClient, admin: requests.Session,
                                    palette: RunningServer) -> None:
    inject(admin, palette, path="^/v1/apiKeys$", method="POST", status=500, times=1)
    user = client.find_user_by_email("admin@example.com")
    assert user is not None
    with pytest.raises(HttpResponseError) as caught:
        client.create_api_key("k", user_uid=user.uid, expiry=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert caught.value.status_code == 500
    assert _count(admin, palette, "POST", "/v1/apiKeys") == 1


def test_dropped_connection_on_get_is_retried(client: PaletteClient, admin: requests.Session,
                                              palette: RunningServer) -> None:
    uid = client.create_azure_account("drop-get", creds())
    inject(admin, palette, path=f"^/v1/cloudaccounts/azure/{uid}$", method="GET", drop=True, times=1)
    assert client.get_azure_account(uid).name == "drop-get"
    assert _count(admin, palette, "GET", f"/v1/cloudaccounts/azure/{uid}") == 2


def test_dropped_connection_on_post_is_not_retried(client: PaletteClient, admin: requests.Session,
                                                   palette: RunningServer) -> None:
    inject(admin, palette, path="^/v1/cloudaccounts/azure$", method="POST", drop=True, times=1)
    with pytest.raises(ServiceResponseError) as caught:
        client.create_azure_account("drop-post", creds())
    assert SECRET not in str(caught.value)
    assert _count(admin, palette, "POST", "/v1/cloudaccounts/azure") == 1
    # The caller's recovery: look before creating again.
    if client.find_azure_account("drop-post") is None:
        client.create_azure_account("drop-post", creds())
    assert client.find_azure_account("drop-post") is not None


def test_budget_exhausted_on_persistent_503(palette: RunningServer, admin: requests.Session) -> None:
    inject(admin, palette, path="^/v1/apiKeys$", method="GET", status=503, latencyMs=50)
    policy = RetryPolicy(initial_delay=0.05, max_delay=0.05, budget_seconds=0.4, max_attempts=1000)
    client = PaletteClient(palette.url, SecretStr(ADMIN_KEY), retry=policy, rate_per_second=1000)
    with client, pytest.raises(HttpResponseError) as caught:
        client.list_api_keys()
    assert caught.value.status_code == 503
    assert 1 < _count(admin, palette, "GET", "/v1/apiKeys") < 1000


def test_budget_exhausted_on_persistent_drops(palette: RunningServer, admin: requests.Session) -> None:
    inject(admin, palette, path="^/v1/apiKeys$", method="GET", drop=True)
    client = PaletteClient(palette.url, SecretStr(ADMIN_KEY), retry=fast_retry(max_attempts=3))
    with client, pytest.raises(ServiceResponseError):
        client.list_api_keys()
    assert _count(admin, palette, "GET", "/v1/apiKeys") == 3


def test_unreachable_palette_is_a_service_request_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = PaletteClient(f"http://127.0.0.1:{port}", SecretStr(ADMIN_KEY), retry=fast_retry(max_attempts=2))
    with client, pytest.raises(ServiceRequestError) as caught:
        client.create_azure_account("never", creds())
    assert not isinstance(caught.value, ServiceResponseError)
    assert SECRET not in str(caught.value) and ADMIN_KEY not in str(caught.value)


def test_client_rate_limit_keeps_a_burst_free_of_429(palette: RunningServer, admin: requests.Session) -> None:
    """60 concurrent calls on one prefix with the stand-in at Palette's documented 10/s, burst 5."""
    configure_rate(admin, palette, 10, 5)
    client = PaletteClient(palette.url, SecretStr(ADMIN_KEY), retry=RetryPolicy(max_attempts=1))
    with client, ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: client.list_api_keys(), range(60)))
    assert len(results) == 60
    calls = [r for r in recorded(admin, palette) if r["path"] == "/v1/apiKeys"]
    assert len(calls) == 60
    assert [r["status"] for r in calls].count(429) == 0


def test_without_the_client_limit_the_same_burst_is_throttled(palette: RunningServer,
                                                              admin: requests.Session) -> None:
    """The control for the test above: the stand-in does throttle a burst that is not paced."""
    configure_rate(admin, palette, 10, 5)
    with PaletteClient(palette.url, SecretStr(ADMIN_KEY), retry=RetryPolicy(max_attempts=1),
                       rate_per_second=10_000, burst=1000) as client:
        def call(_: int) -> int:
            try:
                client.list_api_keys()
            except HttpResponseError as exc:
                return exc.status_code or 0
            return 200

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(call, range(80)))
    assert statuses.count(429) > 0


# -- secrets and auth -------------------------------------------------------------------------------


def test_secrets_never_reach_logs_reprs_or_errors(client: PaletteClient, caplog: pytest.LogCaptureFixture,
                                                  admin: requests.Session, palette: RunningServer) -> None:
    caplog.set_level(logging.DEBUG)
    inject(admin, palette, path="^/v1/cloudaccounts/azure$", method="POST", status=429, times=1)
    credentials = creds()
    uid = client.create_azure_account("secretive", credentials)
    with pytest.raises(HttpResponseError) as caught:
        client.update_azure_account(uid, "secretive", creds(WRONG_SECRET))
    user = client.find_user_by_email("admin@example.com")
    assert user is not None
    created = client.create_api_key("logged?", user_uid=user.uid, expiry=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    key_value = created.value.get_secret_value()

    for secret in (SECRET, WRONG_SECRET, ADMIN_KEY, key_value):
        assert secret not in caplog.text
        assert secret not in str(caught.value) and secret not in repr(caught.value)
        assert secret not in repr(credentials) and secret not in repr(client) and secret not in repr(created)
    assert "POST /v1/cloudaccounts/azure -> 429" in caplog.text


def test_wrong_api_key_is_an_authentication_error(palette: RunningServer, admin: requests.Session) -> None:
    bad = "not-the-key-" + uuid.uuid4().hex
    client = PaletteClient(palette.url, SecretStr(bad), retry=fast_retry())
    with client, pytest.raises(ClientAuthenticationError) as caught:
        client.list_api_keys()
    assert caught.value.status_code == 401
    assert bad not in str(caught.value)
    assert _count(admin, palette, "GET", "/v1/apiKeys") == 1


def test_unknown_project_is_refused(client: PaletteClient) -> None:
    with pytest.raises(ClientAuthenticationError) as caught:
        client.list_ssh_keys(project_uid="0" * 24)
    assert caught.value.status_code == 403


# -- pure helpers -----------------------------------------------------------------------------------


def test_credentials_refuse_plain_secrets_and_unknown_clouds() -> None:
    with pytest.raises(TypeError):
        AzureCredentials(tenant_id="t", client_id="c", client_secret="plain")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="environment"):
        creds(environment="AzureMoonCloud")
    assert SECRET not in repr(creds())


def test_api_key_must_be_a_secret() -> None:
    with pytest.raises(TypeError):
        PaletteClient("http://127.0.0.1:1", ADMIN_KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PaletteClient("http://127.0.0.1:1", SecretStr(""))


@pytest.mark.parametrize(("path", "key"), [
    ("/v1/cloudaccounts/azure/abc", "/v1/cloudaccounts"),
    ("/v1/clouds/azure/account/validate", "/v1/clouds"),
    ("/v1/users/assets/sshkeys", "/v1/users"),
    ("/v1/apiKeys", "/v1/apiKeys"),
    ("/v1/apiKeys?x=1", "/v1/apiKeys"),
])
def test_rate_key_is_the_resource_prefix(path: str, key: str) -> None:
    assert rate_key_for(path) == key
