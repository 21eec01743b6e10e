"""SecretStore against the Key Vault stand-in, through the real azure-keyvault-secrets client over HTTPS.

The vault's clock is ours, so versions get distinct creation times without sleeping.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from pydantic import SecretStr

from devstack.httpbase import Fault, RunningServer
from devstack.keyvault import KeyVaultApp
from devstack.tls import make_loopback_certificate
from shared.clients.keyvault import SecretStore, StoredSecret
from shared.credentials import ACCOUNT_TAG, CREDENTIAL_ID_TAG, MANAGED_BY_TAG, PRODUCT, SecretKind, secret_tags
from tests.credentials import StandInCredential

if TYPE_CHECKING:
    from collections.abc import Iterator

TENANT_ID = "7d3f4c1e-2b6a-4e8f-9a0b-1c2d3e4f5a6b"
VALUE = "s3cr3t-Value~with.Unusual_chars-9f8e7d"


class FakeClock:
    def __init__(self) -> None:
        self.now = float(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()))

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: int = 1) -> None:
        self.now += seconds


def static_credential() -> StandInCredential:
    """Tokens for the scope the SDK asks for, as a managed identity would get them."""
    return StandInCredential(tenant=TENANT_ID, subject="onboarding-app")


class Vault:
    def __init__(self, server: RunningServer, app: KeyVaultApp, clock: FakeClock, ca_path: str) -> None:
        self.server = server
        self.app = app
        self.clock = clock
        self.ca_path = ca_path


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    cert = make_loopback_certificate(tmp_path_factory.mktemp("kv-tls"))
    clock = FakeClock()
    app = KeyVaultApp(authority="https://127.0.0.1:1/identity", tenant_id=TENANT_ID, clock=clock)
    server = RunningServer(app, tls=cert.server_context())
    try:
        yield Vault(server, app, clock, str(cert.ca_path))
    finally:
        server.stop()


@pytest.fixture
def store(vault: Vault) -> Iterator[SecretStore]:
    vault.server.reset()
    with SecretStore(vault.server.url, static_credential(), connection_verify=vault.ca_path) as s:
        yield s


def _set(store: SecretStore, vault: Vault, name: str, value: str = VALUE, **tags: str) -> StoredSecret:
    vault.clock.tick()
    return store.set_secret(name, SecretStr(value), content_type="text/plain",
                            tags={**secret_tags("acct-one", SecretKind.CLIENT_SECRET, request_id="REQ-0",
                                                tenant_id=TENANT_ID, client_id=TENANT_ID), **tags})


# --- Against the stand-in -------------------------------------------------------------------------


def test_store_keeps_the_challenge_resource_check_for_a_loopback_vault(vault: Vault) -> None:
    """The SDK's default check stays on: tokens go to the resource the vault names, and a challenge
    naming a resource the vault's address does not lie under is refused, no token asked for it."""
    vault.server.reset()
    credential = static_credential()
    with SecretStore(vault.server.url, credential, connection_verify=vault.ca_path) as checked:
        vault.clock.tick()
        checked.set_secret("challenge-checked", SecretStr("v"), content_type="text/plain", tags={})
    assert credential.scopes and set(credential.scopes) == {(f"{vault.app.resource}/.default",)}

    impostor = f'Bearer authorization="https://127.0.0.1:1/identity/{TENANT_ID}", resource="https://vault.azure.net"'
    vault.server.add_fault(Fault(method="GET", path_regex="^/secrets/", status=401, times=1,
                                 headers={"WWW-Authenticate": impostor}))
    wary = static_credential()
    with SecretStore(vault.server.url, wary, connection_verify=vault.ca_path) as store, \
            pytest.raises(ValueError, match="does not match the requested domain"):
        store.get_secret("challenge-checked")
    assert ("https://vault.azure.net/.default",) not in wary.scopes


def test_set_then_get_round_trips_value_and_properties(store: SecretStore, vault: Vault) -> None:
    expires = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    not_before = datetime(2025, 12, 31, tzinfo=UTC)
    vault.clock.tick()
    stored = store.set_secret(
        "palette-acct-one-client-secret", SecretStr(VALUE), content_type="text/plain",
        tags={MANAGED_BY_TAG: PRODUCT, CREDENTIAL_ID_TAG: "key-1"},
        expires_on=expires, not_before=not_before,
    )
    assert stored.name == "palette-acct-one-client-secret"
    assert re.fullmatch(r"[0-9a-f]{32}", stored.version)
    assert stored.id.endswith(f"/secrets/{stored.name}/{stored.version}")
    assert stored.expires_on == expires and stored.not_before == not_before
    assert stored.created_on == datetime.fromtimestamp(vault.clock.now, UTC)
    assert stored.enabled and stored.content_type == "text/plain"
    assert dict(stored.tags) == {MANAGED_BY_TAG: PRODUCT, CREDENTIAL_ID_TAG: "key-1"}

    value, props = store.get_secret(stored.name)
    assert isinstance(value, SecretStr) and value.get_secret_value() == VALUE
    assert props == stored
    value_v, props_v = store.get_secret(stored.name, stored.version)
    assert value_v.get_secret_value() == VALUE and props_v.version == stored.version


def test_get_missing_secret_raises_resource_not_found(store: SecretStore) -> None:
    with pytest.raises(ResourceNotFoundError):
        store.get_secret("no-such-secret")


def test_versions_are_listed_newest_first_across_pages(store: SecretStore, vault: Vault) -> None:
    name = "palette-acct-one-ssh-deploy"
    written = [_set(store, vault, name, f"value-{i}", **{CREDENTIAL_ID_TAG: f"key-{i}"}) for i in range(30)]
    listed = store.list_versions(name)
    assert [v.version for v in listed] == [w.version for w in reversed(written)]
    # The stand-in pages at 25, so 30 versions needed a second page.
    assert any("$skiptoken" in r.query for r in vault.server.requests if r.path.endswith("/versions"))
    assert store.list_versions("never-written") == []


def test_find_version_by_tag_returns_the_newest_match_or_none(store: SecretStore, vault: Vault) -> None:
    name = "palette-acct-one-client-secret"
    for i in range(28):
        _set(store, vault, name, f"v{i}", **{CREDENTIAL_ID_TAG: f"key-{i}", "request-id": f"REQ-{i % 3}"})
    found = store.find_version(name, tag=CREDENTIAL_ID_TAG, value="key-3")
    assert found is not None and found.tags[CREDENTIAL_ID_TAG] == "key-3"
    assert store.get_secret(name, found.version)[0].get_secret_value() == "v3"
    newest_req1 = store.find_version(name, tag="request-id", value="REQ-1")
    assert newest_req1 is not None and newest_req1.tags[CREDENTIAL_ID_TAG] == "key-25"
    assert store.find_version(name, tag=CREDENTIAL_ID_TAG, value="key-99") is None
    assert store.find_version("not-there", tag=CREDENTIAL_ID_TAG, value="key-1") is None


def test_list_secrets_filters_by_managed_by_tag(store: SecretStore, vault: Vault) -> None:
    for i in range(27):
        _set(store, vault, f"palette-acct-{i:02d}-client-secret", **{ACCOUNT_TAG: f"acct-{i:02d}"})
    vault.clock.tick()
    store.set_secret("someone-elses", SecretStr("x"), content_type="text/plain", tags={"owner": "team-b"})
    vault.clock.tick()
    store.set_secret("untagged", SecretStr("y"), content_type="text/plain", tags={})

    managed = list(store.list_secrets(tag=MANAGED_BY_TAG, value=PRODUCT))
    assert sorted(s.name for s in managed) == [f"palette-acct-{i:02d}-client-secret" for i in range(27)]
    assert all(s.version == "" and s.tags[MANAGED_BY_TAG] == PRODUCT for s in managed)
    assert [s.name for s in store.list_secrets(tag="owner")] == ["someone-elses"]
    assert list(store.list_secrets(tag=MANAGED_BY_TAG, value="other-tool")) == []
    assert len(list(store.list_secrets())) == 29
    with pytest.raises(ValueError, match="without the tag"):
        list(store.list_secrets(value="x"))


def test_update_tags_replaces_the_tag_set_of_one_version(store: SecretStore, vault: Vault) -> None:
    name = "palette-acct-one-client-secret"
    first = _set(store, vault, name, "old", **{"rotation-state": "current"})
    second = _set(store, vault, name, "new", **{"rotation-state": "pending"})
    vault.clock.tick()
    updated = store.update_tags(name, second.version, {**second.tags, "rotation-state": "current"})
    assert updated.version == second.version
    assert updated.tags["rotation-state"] == "current"
    assert updated.tags[MANAGED_BY_TAG] == PRODUCT
    assert updated.updated_on is not None and updated.created_on is not None
    assert updated.updated_on > updated.created_on
    # The other version is untouched, and the value of the updated one is unchanged.
    untouched = store.find_version(name, tag="rotation-state", value="current")
    assert untouched is not None and untouched.version == second.version
    assert [v.version for v in store.list_versions(name)] == [second.version, first.version]
    assert store.get_secret(name, second.version)[0].get_secret_value() == "new"
    replaced = store.update_tags(name, first.version, {"only": "this"})
    assert dict(replaced.tags) == {"only": "this"}
    with pytest.raises(ValueError, match="version is required"):
        store.update_tags(name, "", {})
    with pytest.raises(ResourceNotFoundError):
        store.update_tags(name, "0" * 32, {})


def test_disable_version_blocks_reads_of_that_version_only(store: SecretStore, vault: Vault) -> None:
    name = "palette-ci-bot-api-key"
    old = _set(store, vault, name, "old-value")
    new = _set(store, vault, name, "new-value")
    store.disable_version(name, old.version)
    by_version = {v.version: v for v in store.list_versions(name)}
    assert by_version[old.version].enabled is False and by_version[new.version].enabled is True
    with pytest.raises(HttpResponseError) as info:
        store.get_secret(name, old.version)
    assert info.value.status_code == 403
    assert "old-value" not in str(info.value)
    assert store.get_secret(name)[0].get_secret_value() == "new-value"
    with pytest.raises(ValueError, match="version is required"):
        store.disable_version(name, "")


def test_invalid_name_is_refused_before_any_call(store: SecretStore, vault: Vault) -> None:
    before = len(vault.server.requests)
    with pytest.raises(ValueError, match="not a valid Key Vault secret name") as info:
        store.set_secret("bad_name.x", SecretStr(VALUE), content_type="text/plain", tags={})
    assert VALUE not in str(info.value)
    assert len(vault.server.requests) == before


# --- The value never leaks ------------------------------------------------------------------------


def test_secret_value_never_in_reprs_logs_or_errors(
    store: SecretStore, vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = "palette-acct-one-client-secret"
    stored = _set(store, vault, name)
    value, props = store.get_secret(name)
    store.update_tags(name, stored.version, {**stored.tags, "checked": "yes"})
    list(store.list_secrets(tag=MANAGED_BY_TAG))
    store.find_version(name, tag="checked", value="yes")

    vault.server.add_fault(Fault(method="PUT", path_regex="^/secrets/", status=400, times=1))
    with pytest.raises(HttpResponseError) as failed:
        _set(store, vault, name)

    texts = [repr(stored), str(stored), repr(props), repr(value), str(value), repr((value, props)),
             repr(store), str(failed.value), repr(failed.value), caplog.text]
    for text in texts:
        assert VALUE not in text
    assert "Stored Key Vault secret" in caplog.text  # the capture did see our log lines


def test_client_passed_in_is_used_and_not_closed(vault: Vault) -> None:
    vault.server.reset()
    credential = static_credential()
    client = SecretClient(vault.server.url, credential,
                          connection_verify=vault.ca_path)
    with SecretStore(vault.server.url, credential, client=client) as s:
        vault.clock.tick()
        s.set_secret("shared-client", SecretStr("v"), content_type="text/plain", tags={})
    # Still usable after the store closed: its owner closes it.
    assert client.get_secret("shared-client").value == "v"
    client.close()
    assert credential.asks


def test_expired_version_is_still_readable_and_reports_its_dates(store: SecretStore, vault: Vault) -> None:
    vault.clock.tick()
    past = datetime.fromtimestamp(vault.clock.now, UTC) - timedelta(days=1)
    stored = store.set_secret("palette-acct-two-client-secret", SecretStr("expired"),
                              content_type="text/plain", tags={}, expires_on=past)
    value, props = store.get_secret(stored.name)
    assert value.get_secret_value() == "expired" and props.expires_on == past
