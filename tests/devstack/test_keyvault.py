"""Conformance of the Key Vault stand-in, driven through the real ``SecretClient``.

The SDK is the judge: if it can set, read, page, delete, recover and purge secrets here and gets
the azure-core exceptions Key Vault would cause, our code will behave the same against the real
service. Raw HTTPS is used only where the SDK hides the wire (the 401 challenge, api-version
checks, malformed input).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.keyvault.secrets import ApiVersion, SecretClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.httpbase import RunningServer
from devstack.keyvault import KeyVaultApp, KeyVaultBackend, challenge_resource, create_app
from devstack.keyvault.errors import DeletedSecretNotFound, SecretNotFound
from devstack.tls import make_loopback_certificate
from devstack.tokens import issue_token
from tests.credentials import StandInCredential

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.tls import LoopbackCertificate

TENANT = "72f988bf-0000-4000-8000-00000000cafe"
AUTHORITY = "https://127.0.0.1:44321"  # the identity stand-in's address; never contacted here
PUBLIC_CLOUD_RESOURCE = "https://vault.azure.net"
VERSION = re.compile(r"[0-9a-f]{32}")
UTC = dt.UTC


def stand_in_credential(*, audience: str | None = None) -> StandInCredential:
    return StandInCredential(tenant=TENANT, audience=audience)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return make_loopback_certificate(tmp_path_factory.mktemp("keyvault-tls"))


@pytest.fixture(scope="module")
def server(cert: LoopbackCertificate) -> Iterator[RunningServer]:
    running = RunningServer(create_app(authority=AUTHORITY, tenant_id=TENANT), tls=cert.server_context())
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _fresh_vault(server: RunningServer) -> None:
    server.reset()


@pytest.fixture(scope="module")
def credential() -> StandInCredential:
    return stand_in_credential()


@pytest.fixture(scope="module")
def client(server: RunningServer, cert: LoopbackCertificate, credential: StandInCredential,
           ) -> Iterator[SecretClient]:
    with SecretClient(server.url, credential,
                      connection_verify=str(cert.ca_path)) as secret_client:
        yield secret_client


def _resource(server: RunningServer) -> str:
    app = server.app
    assert isinstance(app, KeyVaultApp)
    return app.resource


def _challenge(server: RunningServer) -> str:
    return f'Bearer authorization="{AUTHORITY}/{TENANT}", resource="{_resource(server)}"'


def _token(server: RunningServer, **overrides: Any) -> str:
    """A token the vault at ``server`` accepts, unless ``overrides`` spoil it."""
    args: dict[str, Any] = {"audience": _resource(server), "subject": "raw-caller", "tenant_id": TENANT,
                            **overrides}
    return issue_token(**args)[0]


def _raw(server: RunningServer, cert: LoopbackCertificate, method: str, path: str, *,
         token: str | None = None, body: bytes | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, server.url + path, headers=headers, data=body,
                            verify=str(cert.ca_path), timeout=10)


def _error(exc: HttpResponseError) -> tuple[int | None, str | None, str]:
    assert exc.error is not None
    return exc.status_code, exc.error.code, exc.error.message or ""


# -- authentication --------------------------------------------------------------------------------


def test_request_without_token_gets_the_challenge_before_the_body_is_read(
        server: RunningServer, cert: LoopbackCertificate) -> None:
    for method, body in (("GET", None), ("PUT", b"{not json"), ("PATCH", b"\xff\xfe")):
        response = _raw(server, cert, method, "/secrets/anything?api-version=7.5", body=body)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == _challenge(server)
        assert response.json() == {"error": {"code": "Unauthorized",
                                              "message": "AKV10000: Request is missing a Bearer or PoP token."}}


@pytest.mark.parametrize(("spoil", "fragment"), [
    ({"audience": "https://management.azure.com"}, "AKV10022: Invalid audience"),
    ({"audience": PUBLIC_CLOUD_RESOURCE}, "AKV10022: Invalid audience"),  # the cloud's, not this vault's
    ({"lifetime_seconds": -60}, "expired"),
    ({"tenant_id": "another-tenant"}, "AKV10032: Invalid issuer"),
    ({"signature": "tampered"}, "AKV10046"),
    ({"signature": "absent"}, "AKV10046"),
])
def test_unusable_token_gets_401_with_key_vault_error(server: RunningServer, cert: LoopbackCertificate,
                                                      spoil: dict[str, Any], fragment: str) -> None:
    signature = spoil.pop("signature", None)
    token = _token(server, **spoil)
    if signature == "tampered":
        token = token[:-4] + "AAAA"
    elif signature == "absent":
        token = "not-a-jwt"
    response = _raw(server, cert, "GET", "/secrets/anything?api-version=7.5", token=token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == _challenge(server)
    error = response.json()["error"]
    assert error["code"] == "Unauthorized"
    assert fragment in error["message"]


def test_tenant_ids_compare_case_insensitively(server: RunningServer, cert: LoopbackCertificate) -> None:
    token = _token(server, tenant_id=TENANT.upper())
    response = _raw(server, cert, "GET", "/secrets/anything?api-version=7.5", token=token)
    assert response.status_code == 404


def test_sdk_follows_the_challenge_to_scope_and_tenant(client: SecretClient, server: RunningServer,
                                                       credential: StandInCredential) -> None:
    client.set_secret("challenge-probe", "v")
    assert credential.asks
    assert all(req == ((f"{_resource(server)}/.default",), TENANT) for req in credential.asks)


def test_secret_client_with_default_settings_accepts_the_challenge_on_any_port(
        cert: LoopbackCertificate, credential: StandInCredential) -> None:
    """``verify_challenge_resource`` left on: each vault names a parent of its own address, so the SDK
    sends it a token; a token for one vault is refused by another."""
    vaults = [RunningServer(create_app(authority=AUTHORITY, tenant_id=TENANT), tls=cert.server_context())
              for _ in range(2)]
    try:
        for vault in vaults:
            resource = _resource(vault)
            assert resource == f"https://0.0.1:{vault.port}"
            assert urlsplit(vault.url).netloc.endswith("." + urlsplit(resource).netloc)
            with SecretClient(vault.url, credential, connection_verify=str(cert.ca_path)) as default_client:
                default_client.set_secret("default-settings", "works")
                assert default_client.get_secret("default-settings").value == "works"
        first, second = vaults
        response = _raw(second, cert, "GET", "/secrets/default-settings?api-version=7.5", token=_token(first))
        assert response.status_code == 401
        assert f"AKV10022: Invalid audience. Expected {_resource(second)}" in response.json()["error"]["message"]
    finally:
        for vault in vaults:
            vault.stop()


def test_vault_refuses_to_serve_where_no_challenge_resource_could_match(cert: LoopbackCertificate) -> None:
    with pytest.raises(ValueError, match="cannot name a challenge resource"):
        RunningServer(create_app(authority=AUTHORITY, tenant_id=TENANT), host="localhost",
                      tls=cert.server_context())
    for host in ("::1", "::ffff:127.0.0.1", "vault"):
        with pytest.raises(ValueError, match="cannot name a challenge resource"):
            challenge_resource(host, 8443)
    assert challenge_resource("127.0.0.1", 8443) == "https://0.0.1:8443"


def test_sdk_with_wrong_audience_token_raises_client_authentication_error(
        server: RunningServer, cert: LoopbackCertificate) -> None:
    wrong = stand_in_credential(audience="https://storage.azure.com")
    with SecretClient(server.url, wrong,
                      connection_verify=str(cert.ca_path)) as bad_client, \
            pytest.raises(ClientAuthenticationError) as caught:
        bad_client.get_secret("anything")
    assert caught.value.status_code == 401
    assert "AKV10022" in str(caught.value)


# -- api-version -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "fragment"), [
    ("", "api-version query parameter is required"),
    ("?api-version=", "api-version query parameter is required"),
    ("?api-version=1.0", "The specified version (1.0) is not recognized"),
])
def test_api_version_is_required_and_checked(server: RunningServer, cert: LoopbackCertificate,
                                             query: str, fragment: str) -> None:
    response = _raw(server, cert, "GET", "/secrets/anything" + query, token=_token(server))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadParameter"
    assert fragment in error["message"]


def test_older_api_versions_are_served(server: RunningServer, cert: LoopbackCertificate,
                                       credential: StandInCredential) -> None:
    for version in (ApiVersion.V7_4, ApiVersion.V7_6, ApiVersion.V2016_10_01):
        with SecretClient(server.url, credential, api_version=version,
                          connection_verify=str(cert.ca_path)) as versioned:
            versioned.set_secret("versioned", version.value)
            assert versioned.get_secret("versioned").value == version.value
    assert {r.query["api-version"][0] for r in server.requests if r.status == 200} >= {"7.4", "7.6", "2016-10-01"}


# -- set / get / update ----------------------------------------------------------------------------


def test_set_then_get_latest_and_by_version(client: SecretClient, server: RunningServer) -> None:
    first = client.set_secret("db-password", "one")
    second = client.set_secret("db-password", "two")
    assert first.properties.version and second.properties.version
    assert VERSION.fullmatch(first.properties.version) and VERSION.fullmatch(second.properties.version)
    assert first.properties.version != second.properties.version
    assert second.id == f"{server.url}/secrets/db-password/{second.properties.version}"
    assert second.properties.vault_url == server.url

    latest = client.get_secret("db-password")
    assert (latest.value, latest.properties.version) == ("two", second.properties.version)
    assert client.get_secret("db-password", first.properties.version).value == "one"
    props = latest.properties
    assert props.enabled is True
    assert props.recovery_level == "Recoverable+Purgeable"
    assert props.recoverable_days == 90
    assert props.created_on is not None and props.updated_on is not None


def test_versions_keep_their_own_properties(client: SecretClient) -> None:
    expires = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    not_before = dt.datetime(2025, 6, 1, tzinfo=UTC)
    v1 = client.set_secret("sp-credential", "s3cret-1", tags={"CredentialId": "key-1"},
                           content_type="application/json", expires_on=expires, not_before=not_before)
    v2 = client.set_secret("sp-credential", "s3cret-2", tags={"CredentialId": "key-2"}, enabled=False)

    by_version = {p.version: p for p in client.list_properties_of_secret_versions("sp-credential")}
    assert set(by_version) == {v1.properties.version, v2.properties.version}
    old = by_version[v1.properties.version]
    assert (old.tags, old.content_type, old.expires_on, old.not_before, old.enabled) == (
        {"CredentialId": "key-1"}, "application/json", expires, not_before, True)
    new = by_version[v2.properties.version]
    assert (new.tags, new.content_type, new.expires_on, new.not_before, new.enabled) == (
        {"CredentialId": "key-2"}, None, None, None, False)
    assert client.get_secret("sp-credential", v1.properties.version).properties.expires_on == expires


def test_update_secret_properties_latest_and_by_version(client: SecretClient) -> None:
    v1 = client.set_secret("rotated", "a", tags={"gen": "1"})
    v2 = client.set_secret("rotated", "b", tags={"gen": "2"}, content_type="text/plain")

    updated = client.update_secret_properties("rotated", tags={"gen": "2", "pending": "false"},
                                              expires_on=dt.datetime(2030, 1, 1, tzinfo=UTC))
    assert updated.version == v2.properties.version
    assert updated.tags == {"gen": "2", "pending": "false"}
    assert updated.content_type == "text/plain"  # untouched fields keep their value
    assert updated.expires_on == dt.datetime(2030, 1, 1, tzinfo=UTC)

    old = client.update_secret_properties("rotated", v1.properties.version, enabled=False)
    assert (old.version, old.enabled, old.tags) == (v1.properties.version, False, {"gen": "1"})
    latest = client.get_secret("rotated")
    assert (latest.value, latest.properties.enabled) == ("b", True)

    with pytest.raises(ResourceNotFoundError) as caught:
        client.update_secret_properties("rotated", "0" * 32, enabled=True)
    assert "(name/id) rotated/" + "0" * 32 in _error(caught.value)[2]


def test_disabled_version_value_is_forbidden(client: SecretClient) -> None:
    client.set_secret("switched-off", "hidden", enabled=False)
    with pytest.raises(HttpResponseError) as caught:
        client.get_secret("switched-off")
    assert _error(caught.value) == (403, "Forbidden", "Operation get is not allowed on a disabled secret.")
    assert caught.value.error is not None and caught.value.error.innererror == {"code": "SecretDisabled"}

    client.update_secret_properties("switched-off", enabled=True)
    assert client.get_secret("switched-off").value == "hidden"


def test_expired_and_not_yet_valid_values_are_still_returned(client: SecretClient) -> None:
    # Key Vault treats exp/nbf as information for the caller; get does not enforce them.
    client.set_secret("old", "past", expires_on=dt.datetime(2001, 1, 1, tzinfo=UTC))
    client.set_secret("future", "later", not_before=dt.datetime(2099, 1, 1, tzinfo=UTC))
    assert client.get_secret("old").value == "past"
    assert client.get_secret("future").value == "later"


def test_names_are_case_insensitive_and_keep_their_first_spelling(client: SecretClient) -> None:
    client.set_secret("PaletteApiKey", "1")
    again = client.set_secret("PALETTEAPIKEY", "2")
    assert again.name == "PaletteApiKey"
    assert client.get_secret("paletteapikey").value == "2"
    assert [p.name for p in client.list_properties_of_secrets()] == ["PaletteApiKey"]
    assert len(list(client.list_properties_of_secret_versions("paletteAPIkey"))) == 2


@pytest.mark.parametrize("name", ["bad_name", "has.dot", "a" * 128, "slash/inside", "spa ce"])
def test_invalid_names_are_bad_parameter(client: SecretClient, name: str) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.set_secret(name, "x")
    assert not isinstance(caught.value, ResourceNotFoundError)
    assert _error(caught.value) == (400, "BadParameter", f"The request URI contains an invalid name: {name}")


def test_longest_valid_name_is_accepted(client: SecretClient) -> None:
    name = "A-1" + "b" * 124
    assert client.set_secret(name, "x").name == name


def test_missing_secret_raises_resource_not_found(client: SecretClient) -> None:
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_secret("never-written")
    status, code, message = _error(caught.value)
    assert (status, code) == (404, "SecretNotFound")
    assert message.startswith("A secret with (name/id) never-written was not found in this key vault.")

    client.set_secret("written", "x")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("written", "f" * 32)
    with pytest.raises(ResourceNotFoundError):
        client.begin_delete_secret("never-written")
    assert list(client.list_properties_of_secret_versions("never-written")) == []


# -- listing and paging ----------------------------------------------------------------------------


def test_list_secrets_follows_next_link_across_pages(client: SecretClient, server: RunningServer) -> None:
    for i in range(8):
        client.set_secret(f"page-{i}", str(i), tags={"i": str(i)})
    pages = [list(page) for page in client.list_properties_of_secrets(max_page_size=3).by_page()]
    assert [len(page) for page in pages] == [3, 3, 2]
    listed = [props for page in pages for props in page]
    assert [p.name for p in listed] == [f"page-{i}" for i in range(8)]
    assert all(p.version is None and p.id == f"{server.url}/secrets/{p.name}" for p in listed)
    assert [p.tags for p in listed] == [{"i": str(i)} for i in range(8)]
    follow_ups = [r for r in server.requests if r.path == "/secrets" and "$skiptoken" in r.query]
    assert len(follow_ups) == 2
    assert all(r.query["maxresults"] == ["3"] for r in follow_ups)


def test_default_page_size_is_25(client: SecretClient, server: RunningServer) -> None:
    for i in range(27):
        client.set_secret(f"bulk-{i:02d}", "x")
    assert len(list(client.list_properties_of_secrets())) == 27
    assert len([r for r in server.requests if r.path == "/secrets" and r.method == "GET"]) == 2


def test_next_link_is_absolute_and_keeps_page_size(server: RunningServer, cert: LoopbackCertificate) -> None:
    token = _token(server)
    for i in range(3):
        assert _raw(server, cert, "PUT", f"/secrets/link-{i}?api-version=7.5", token=token,
                    body=b'{"value": "x"}').status_code == 200
    first = _raw(server, cert, "GET", "/secrets?api-version=7.5&maxresults=2", token=token).json()
    assert len(first["value"]) == 2
    assert first["nextLink"].startswith(f"{server.url}/secrets?api-version=7.5&$skiptoken=")
    second = requests.get(first["nextLink"], headers={"Authorization": f"Bearer {token}"},
                          verify=str(cert.ca_path), timeout=10).json()
    assert [item["id"].rsplit("/", 1)[1] for item in second["value"]] == ["link-2"]
    assert second["nextLink"] is None
    for bad in ("maxresults=0", "maxresults=26", "maxresults=abc", "$skiptoken=!!not-a-token!!"):
        response = _raw(server, cert, "GET", f"/secrets?api-version=7.5&{bad}", token=token)
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadParameter"


def test_list_versions_across_pages(client: SecretClient) -> None:
    written = {client.set_secret("many-versions", str(i)).properties.version for i in range(5)}
    listed = list(client.list_properties_of_secret_versions("many-versions", max_page_size=2))
    assert {p.version for p in listed} == written
    assert all(p.name == "many-versions" for p in listed)


def test_admin_adds_secrets_in_bulk_all_or_none(client: SecretClient, server: RunningServer,
                                                cert: LoopbackCertificate) -> None:
    def bulk(body: Any) -> requests.Response:
        return requests.post(f"{server.url}/_devstack/secrets/bulk", json=body, verify=str(cert.ca_path), timeout=10)

    client.set_secret("bulk-1", "earlier")
    items = [{"name": f"bulk-{i}", "value": f"value-{i}", "tags": {"n": str(i)}, "expires": 2_000_000_000,
              "contentType": "text/plain"} for i in range(3)]
    items[2]["version"] = "c" * 32
    added = bulk({"secrets": items})
    assert added.status_code == 201, added.text
    assert added.json()["count"] == 3 and added.json()["versions"][2] == "c" * 32
    assert "value-" not in added.text
    latest = client.get_secret("bulk-1")
    assert latest.value == "value-1" and latest.properties.tags == {"n": "1"}
    assert latest.properties.version == added.json()["versions"][1]
    assert latest.properties.expires_on == dt.datetime.fromtimestamp(2_000_000_000, dt.UTC)
    assert len(list(client.list_properties_of_secret_versions("bulk-1"))) == 2
    assert client.get_secret("bulk-2", "c" * 32).value == "value-2"
    taken = bulk({"secrets": [{"name": "bulk-new", "value": "x"},
                              {"name": "bulk-2", "value": "y", "version": "c" * 32}]})
    assert taken.status_code == 400, taken.text
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("bulk-new")
    for bad in ({"secrets": []}, {"secrets": [{"name": "x"}]}, {"secrets": [{"name": "x", "value": "v", "zz": 1}]},
                {"secrets": [{"name": "x", "value": "v", "expires": "soon"}]},
                {"secrets": [{"name": "x", "value": "v", "tags": {"a": 1}}]}, {"other": 1}):
        assert bulk(bad).status_code == 400, bad


# -- soft delete, recover, purge -------------------------------------------------------------------


def test_delete_get_list_and_purge_deleted_secret(client: SecretClient, server: RunningServer) -> None:
    client.set_secret("doomed", "bye", tags={"owner": "tests"}, content_type="text/plain")
    poller = client.begin_delete_secret("doomed")
    deleted = poller.result()
    poller.wait(timeout=10)
    assert poller.done()
    assert deleted.recovery_id == f"{server.url}/deletedsecrets/doomed"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == dt.timedelta(days=90)
    assert deleted.properties.tags == {"owner": "tests"}

    with pytest.raises(ResourceNotFoundError):
        client.get_secret("doomed")
    assert "doomed" not in [p.name for p in client.list_properties_of_secrets()]
    fetched = client.get_deleted_secret("doomed")
    assert (fetched.name, fetched.properties.content_type) == ("doomed", "text/plain")
    assert fetched.properties.version == deleted.properties.version
    assert [d.name for d in client.list_deleted_secrets()] == ["doomed"]

    client.purge_deleted_secret("doomed")
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_deleted_secret("doomed")
    assert _error(caught.value) == (404, "SecretNotFound", "Deleted Secret not found: doomed")
    assert client.set_secret("doomed", "reborn").value == "reborn"


def test_list_deleted_secrets_across_pages(client: SecretClient) -> None:
    for i in range(4):
        client.set_secret(f"gone-{i}", "x")
        client.begin_delete_secret(f"gone-{i}").wait(timeout=10)
    assert [d.name for d in client.list_deleted_secrets(max_page_size=3)] == [f"gone-{i}" for i in range(4)]


def test_recover_deleted_secret_brings_back_every_version(client: SecretClient) -> None:
    first = client.set_secret("phoenix", "1")
    client.set_secret("phoenix", "2")
    client.begin_delete_secret("phoenix").wait(timeout=10)

    poller = client.begin_recover_deleted_secret("phoenix")
    recovered = poller.result()
    poller.wait(timeout=10)
    assert poller.done()
    assert recovered.name == "phoenix"
    assert client.get_secret("phoenix").value == "2"
    assert client.get_secret("phoenix", first.properties.version).value == "1"
    assert list(client.list_deleted_secrets()) == []
    with pytest.raises(ResourceNotFoundError):
        client.begin_recover_deleted_secret("phoenix")


def test_setting_a_soft_deleted_name_conflicts(client: SecretClient) -> None:
    client.set_secret("Reserved", "x")
    client.begin_delete_secret("Reserved").wait(timeout=10)
    with pytest.raises(ResourceExistsError) as caught:
        client.set_secret("reserved", "y")
    status, code, message = _error(caught.value)
    assert (status, code) == (409, "Conflict")
    assert message == ("Secret Reserved is currently in a deleted but recoverable state, and its name cannot "
                       "be reused; in this state, the secret can only be recovered or purged.")


def test_purge_protection_refuses_purge(cert: LoopbackCertificate, credential: StandInCredential) -> None:
    protected = RunningServer(create_app(authority=AUTHORITY, tenant_id=TENANT, purge_protection=True),
                              tls=cert.server_context())
    try:
        with SecretClient(protected.url, credential,
                          connection_verify=str(cert.ca_path)) as vault:
            assert vault.set_secret("kept", "x").properties.recovery_level == "Recoverable"
            vault.begin_delete_secret("kept").wait(timeout=10)
            with pytest.raises(HttpResponseError) as caught:
                vault.purge_deleted_secret("kept")
            status, code, message = _error(caught.value)
            assert (status, code) == (403, "Forbidden")
            assert message.startswith('Operation "purge" is not allowed because purge protection is enabled')
            assert vault.get_deleted_secret("kept").name == "kept"
    finally:
        protected.stop()


def test_retention_period_ends_in_a_purge() -> None:
    now = [1_700_000_000.0]
    backend = KeyVaultBackend(clock=lambda: now[0])
    backend.set_secret("short-lived", "x")
    deleted = backend.delete_secret("short-lived")
    assert deleted.scheduled_purge_date == deleted.deleted_date + 90 * 86400
    now[0] += 90 * 86400 - 1
    assert backend.get_deleted_secret("short-lived").name == "short-lived"
    now[0] += 1
    with pytest.raises(DeletedSecretNotFound):
        backend.get_deleted_secret("short-lived")
    with pytest.raises(SecretNotFound):
        backend.get_secret("short-lived")
    assert backend.set_secret("short-lived", "y").version.value == "y"


# -- admin surface ---------------------------------------------------------------------------------


def test_admin_state_and_request_log_never_show_values(client: SecretClient, server: RunningServer,
                                                       cert: LoopbackCertificate) -> None:
    client.set_secret("admin-visible", "do-not-leak-me", tags={"t": "1"}, content_type="text/plain")
    state = requests.get(f"{server.url}/_devstack/state", verify=str(cert.ca_path), timeout=10)
    assert "do-not-leak-me" not in state.text
    (secret,) = state.json()["secrets"]
    assert secret["name"] == "admin-visible"
    assert secret["versions"][0]["tags"] == {"t": "1"}
    assert secret["versions"][0]["contentType"] == "text/plain"
    log = requests.get(f"{server.url}/_devstack/requests", verify=str(cert.ca_path), timeout=10)
    assert "do-not-leak-me" not in log.text
    assert any(item["body"] == {"value": "***", "tags": {"t": "1"}, "contentType": "text/plain"}
               for item in log.json()["items"])

    assert requests.post(f"{server.url}/_devstack/reset", verify=str(cert.ca_path),
                         timeout=10).status_code == 204
    assert list(client.list_properties_of_secrets()) == []


# -- malformed input -------------------------------------------------------------------------------

_TEMPLATES = ["/secrets/{}", "/secrets/{}/", "/secrets/{}/versions", "/secrets/fuzz-target/{}",
              "/deletedsecrets/{}", "/deletedsecrets/{}/recover", "/secrets/{}/{}/more", "/{}",
              "/secrets", "/deletedsecrets", "/secrets/fuzz-target"]
_SEGMENT = st.one_of(
    st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
    st.binary(max_size=30).map(lambda b: b.translate(None, b" \t\r\n\x0b\x0c#?").decode("latin-1")),
    st.sampled_from(["%zz", "%", "%00", "..", "a" * 128, "%2F", "x%0d%0ay", "versions", "recover", "fuzz-target"]),
)
_QUERY_VALUE = st.one_of(
    st.sampled_from(["7.4", "7.6", "2026-04-01", "", "7.9", "1.0", "0", "3", "26", "-1", "1e3", "!!",
                     "eyJOZXh0TWFya2VyIjoiZnV6eiJ9", "eyJOZXh0TWFya2VyIjoxfQ"]),
    st.text(max_size=20),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_TIMESTAMP = st.integers(0, 4_102_444_800)
# Mostly valid fields, so a body is often accepted whole or refused for one field only.
_SECRET_BODY = st.fixed_dictionaries(
    {"value": st.one_of(st.text(max_size=30), st.text(max_size=30), _JSON)},
    optional={
        "contentType": st.one_of(st.text(max_size=20), st.text(max_size=20), _JSON),
        "tags": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
                          st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), _JSON),
        "attributes": st.one_of(_JSON, st.fixed_dictionaries({}, optional={
            "enabled": st.one_of(st.booleans(), st.booleans(), _JSON),
            "nbf": st.one_of(_TIMESTAMP, _TIMESTAMP, st.integers(), _JSON),
            "exp": st.one_of(_TIMESTAMP, _TIMESTAMP, st.integers(), _JSON),
            "created": _JSON, "recoveryLevel": _JSON})),
    },
)
_BODY = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    _SECRET_BODY.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 5000, b'{"value": "' + b"x" * 30000 + b'"}', b"\xef\xbb\xbf{}", b"null"]),
)
_NAME = st.one_of(st.sampled_from(["fuzz-target", "Fuzz-Target", "fuzzed"]),
                  st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True))
_SHAPED = [("PUT", "/secrets/{}"), ("PUT", "/secrets/{}"), ("PATCH", "/secrets/{}"),
           ("PATCH", "/secrets/{}/"), ("GET", "/secrets/{}/versions"), ("GET", "/secrets"),
           ("GET", "/deletedsecrets"), ("DELETE", "/secrets/{}"), ("POST", "/deletedsecrets/{}/recover"),
           ("DELETE", "/deletedsecrets/{}"), ("GET", "/secrets/{}")]
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_METHODS = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS", "BREW"]


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A raw request and its method ("garbage" when not even the request line is HTTP)."""
    if draw(st.integers(0, 19)) == 0:
        garbage = draw(st.binary(min_size=1, max_size=60)).translate(None, b"\r\n").replace(b"HTTP/", b"")
        return "garbage", garbage + b"\r\n"
    # Two in five requests are well formed except for their body or query, so the handlers (not only
    # the authentication and routing in front of them) see the malformed parts.
    shaped = draw(st.integers(0, 4)) < 2
    if shaped:
        method, template = draw(st.sampled_from(_SHAPED))
        path = template.format(draw(_NAME))
    else:
        method = draw(st.sampled_from(_METHODS))
        template = draw(st.sampled_from(_TEMPLATES))
        path = template.format(*[draw(_SEGMENT) for _ in range(template.count("{}"))])
    pairs = draw(st.lists(st.tuples(st.sampled_from(["api-version", "maxresults", "$skiptoken", "x"]),
                                    _QUERY_VALUE), max_size=0 if shaped and method != "GET" else 3))
    if shaped or draw(st.integers(0, 4)):
        pairs.insert(0, ("api-version", "7.5"))
    target = path + ("?" + urlencode(pairs, quote_via=quote) if pairs else "")
    auth = "valid" if shaped else draw(st.sampled_from(
        ["valid"] * 4 + ["none", "garbage", "audience", "expired", "basic", "empty"]))
    headers = {
        "valid": ["Authorization: Bearer {token}"],
        "none": [],
        "garbage": [f"Authorization: Bearer {draw(_HEADER_TEXT)}"],
        "audience": ["Authorization: Bearer {other-audience-token}"],
        "expired": ["Authorization: Bearer {expired-token}"],
        "basic": ["Authorization: Basic dXNlcjpwYXNz"],
        "empty": ["Authorization: Bearer"],
    }[auth]
    host = "good" if shaped else draw(st.sampled_from(["good"] * 5 + ["missing", "path", "odd"]))
    headers += {"good": ["Host: 127.0.0.1:{port}"], "missing": [], "path": ["Host: evil.example/x"],
                "odd": [f"Host: {draw(_HEADER_TEXT)}"]}[host]
    for name in draw(st.lists(st.sampled_from(["Content-Type", "Accept", "User-Agent", "X-Fuzz"]),
                              max_size=3)):
        headers.append(f"{name}: {draw(_HEADER_TEXT)}")
    # Never leave request bytes unread by the server (that turns its close into a reset and can
    # lose the answer), and never announce more body than is sent (the server would wait for it).
    if shaped and method in ("PUT", "PATCH") and draw(st.integers(0, 3)):
        body = json.dumps(draw(_SECRET_BODY)).encode()
    else:
        body = draw(_BODY) if method in _METHODS[:-1] else b""
    length = "exact" if shaped else draw(st.sampled_from(["exact"] * 4 + ["short", "absent", "nan", "negative"]))
    if length == "short":
        body = body[: len(body) // 2]
        headers.append(f"Content-Length: {len(body)}")
    elif length == "exact":
        headers.append(f"Content-Length: {len(body)}")
    else:
        body = b""
        if length != "absent":
            headers.append("Content-Length: " + ("abc" if length == "nan" else "-1"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers)
    return method, head.encode("latin-1") + b"Connection: close\r\n\r\n" + body


def _send(server: RunningServer, context: ssl.SSLContext, data: bytes) -> bytes:
    """Send ``data`` with its placeholders (the port, tokens) filled in for ``server``."""
    for placeholder, value in (("{port}", str(server.port)), ("{token}", _token(server)),
                               ("{other-audience-token}", _token(server, audience="https://graph.microsoft.com")),
                               ("{expired-token}", _token(server, lifetime_seconds=-5))):
        data = data.replace(placeholder.encode(), value.encode())
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        tls.sendall(data)
        chunks = []
        while True:
            try:
                chunk = tls.recv(65536)
            except (ConnectionError, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _check_answer(method: str, raw: bytes) -> tuple[int, Any]:
    """Assert the answer is well-formed; return its status and parsed body."""
    assert b"Traceback" not in raw and b"File \"" not in raw
    if method == "garbage" and not raw:
        return 0, None  # an empty request line is closed without an answer, as any HTTP server does
    if method == "garbage" and not raw.startswith(b"HTTP/"):
        # An unparsable request line is answered HTTP/0.9-style (no status line): the body alone.
        head, body, status = b"", raw, 400
    else:
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b"\r\n", 1)[0].split()[1])
    assert status < 500 or (status == 501 and method in ("BREW", "garbage")), raw[:300]
    if not body:
        # HEAD and 204 have no body (a HEAD whose request line did not parse is answered in full).
        assert method == "HEAD" or status == 204, raw[:300]
        return status, None
    payload = json.loads(body)
    if status >= 400:
        assert set(payload) == {"error"}, payload
        error = payload["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        assert set(error) <= {"code", "message", "innererror"}
    else:
        assert isinstance(payload, dict)
    return status, payload


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(request=_requests())
def test_malformed_requests_get_key_vault_errors_and_leave_the_vault_working(
        request: tuple[str, bytes], client: SecretClient, server: RunningServer,
        cert: LoopbackCertificate) -> None:
    try:
        client.set_secret("fuzz-target", "target")
    except ResourceExistsError:  # an earlier example soft-deleted it
        client.purge_deleted_secret("fuzz-target")
        client.set_secret("fuzz-target", "target")
    context = ssl.create_default_context(cafile=str(cert.ca_path))
    method, data = request
    status, payload = _check_answer(method, _send(server, context, data))

    probe = "sdk-probe-after-malformed-input-0001"
    client.set_secret(probe, "still-works")
    assert client.get_secret(probe).value == "still-works"
    # Whatever a fuzzed request managed to store must still make sense to the SDK.
    if status == 200 and isinstance(payload, dict) and isinstance(payload.get("id"), str):
        name = payload["id"].split("/")[4]
        for props in client.list_properties_of_secret_versions(name):
            if props.enabled:
                client.get_secret(name, props.version)
    next(iter(client.list_properties_of_secrets().by_page()))
    next(iter(client.list_deleted_secrets().by_page()))
