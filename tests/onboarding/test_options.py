"""End-to-end happy paths, one per option of request schema v1.

Each test runs the real pipeline through the real SDKs against the local stack and then reads the
outcome back from the stand-ins themselves: the Palette tenant (admin state), the Key Vault
versions, the Graph password credentials, the events received from the topic and the state row.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from devstack.stack import DEVSTACK_TENANT_ID
from shared.engine import OutcomeKind
from tests.onboarding.conftest import graph_add_password

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

PREFIX = "palette.onboarding."
CLIENT_SECRET_CONTENT_TYPE = "text/plain; purpose=azure-client-secret"
API_KEY_CONTENT_TYPE = "text/plain; purpose=palette-api-key"
SSH_KEY_CONTENT_TYPE = "application/x-pem-file"
SLACK = dt.timedelta(minutes=5)


# ------------------------------------------------------------------------------------- helpers

def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time as Graph (7 fractional digits) or Palette (milliseconds) writes it."""
    text = text.replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        offset = rest[len(digits):]
        text = f"{head}.{digits[:6]:0<6}{offset}"
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)






def _user_uid(world: World, email: str) -> str:
    return next(u["uid"] for u in world.palette_state()["users"] if u["emailId"] == email)


def _overlord_uid(world: World, name: str) -> str:
    return next(o["uid"] for o in world.palette_state()["overlords"] if o["name"] == name)



def _secret_client(world: World) -> Any:
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    return SecretClient(world.stack.settings["KEY_VAULT_URL"], DefaultAzureCredential())


def _kv_value(world: World, name: str, version: str | None = None) -> str:
    with _secret_client(world) as client:
        return client.get_secret(name, version).value


def _rsa_public_key(bits: int = 3072) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode() + " ops@example.com"


def _self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "management.azure.microsoft.scloud")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _client_secret_name(account_name: str) -> str:
    return f"palette-{account_name}-client-secret"


def _short(event: dict[str, Any]) -> str:
    return event["type"].removeprefix(PREFIX)


def _assert_success(world: World, body: dict[str, Any], outcome: Any, *, account_event: str = "account.registered",
                    ssh: bool = False, api: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The checks every happy path shares; returns the Palette account and the events."""
    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    name = body["accountName"]
    azure = body["azure"]

    # Palette holds the account exactly once, for this tenant and app.
    accounts = world.palette_accounts(name)
    assert len(accounts) == 1, accounts
    account = accounts[0]
    assert account["spec"]["tenantId"] == azure["tenantId"]
    assert account["spec"]["clientId"] == azure["clientId"]
    assert account["spec"]["azureEnvironment"] == azure.get("cloud", "AzurePublicCloud")
    assert account["spec"]["settings"]["disablePropertiesRequest"] is azure.get("disableProperties", False)
    assert account["spec"]["tenantName"] == azure.get("tenantName", "")
    palette = body.get("palette", {})
    if palette.get("scope", "tenant") == "project":
        assert account["scope"] == "project"
        assert account["projectUid"] == world.project_uid(palette.get("project", "Default"))
    else:
        assert account["scope"] == "tenant"
        assert account["projectUid"] is None

    # The state row is finished, and names the account it made.
    row = world.state_row(body["requestId"])
    assert row["Status"] == "succeeded"
    assert row["ErrorReason"] == ""
    results = json.loads(row["Results"])
    assert results["accountUid"] == account["uid"]

    # The events, each a CloudEvent of the contract.
    # Every event is on the topic before process_request returns; a short wait only ends the drain.
    events = world.events(wait=0.5)
    types = [_short(e) for e in events]
    expected = ["requested", "secret.stored", account_event]
    if ssh:
        expected.append("sshkey.uploaded")
    if api:
        expected.append("apikey.created")
    expected.append("validated")
    assert sorted(types) == sorted(expected), types
    # The account, SSH key and API key branches run side by side: only the account branch has an
    # order of its own.
    assert types[0] == "requested"
    assert types[-1] == "validated"
    assert types.index("secret.stored") < types.index(account_event)
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["subject"] == name
        assert event["source"]
        assert event["time"]
        assert event["data"]["requestId"] == body["requestId"]
    validated = events[-1]["data"]
    checks = validated["checks"]
    names = [c["check"] for c in checks]
    assert len(names) == len(set(names))
    assert set(names) >= {"account.readable", "account.scope", "account.listed", "secret.stored"}
    assert ("sshkey.listed" in names) is ssh
    assert ("apikey.active" in names) is api
    assert all(c["ok"] for c in checks), checks
    assert validated["outcome"] == "passed"
    assert validated["palette"]["accountUid"] == account["uid"]
    registered = next(e for e in events if _short(e) == account_event)
    assert registered["data"]["palette"]["accountUid"] == account["uid"]
    return account, events


def _assert_generated_secret(world: World, body: dict[str, Any], validity_days: int) -> None:
    """One Graph password, its value in Key Vault with the tags, content type and expiry."""
    client_id = body["azure"]["clientId"]
    passwords = world.graph_passwords(client_id)
    assert len(passwords) == 1, passwords
    password = passwords[0]
    versions = world.secret_versions(_client_secret_name(body["accountName"]))
    assert len(versions) == 1
    version = versions[0]
    assert version.content_type == CLIENT_SECRET_CONTENT_TYPE
    assert version.tags["CredentialId"] == password["keyId"]
    assert version.tags["request-id"] == body["requestId"]
    assert version.tags["azure-client-id"] == client_id
    assert version.tags["azure-tenant-id"] == body["azure"]["tenantId"]
    assert version.tags["ValidityPeriodDays"] == str(validity_days)
    assert version.expires_on is not None
    expected_end = _now() + dt.timedelta(days=validity_days)
    assert abs(version.expires_on - expected_end) < SLACK
    assert abs(_parse_time(password["endDateTime"]) - version.expires_on) < dt.timedelta(seconds=1)
    row = json.loads(world.state_row(body["requestId"])["Results"])
    assert row["graphKeyId"] == password["keyId"]
    assert row["keyVaultSecretId"] == version.id


# --------------------------------------------------------------------------------------- tests

def test_defaults_generate_a_180_day_secret_and_register_a_tenant_account(world: World) -> None:
    body = world.request()
    outcome = world.run(body)
    account, events = _assert_success(world, body, outcome)
    _assert_generated_secret(world, body, 180)
    assert "overlordUid" not in account["annotations"]
    assert "tls" not in account["spec"]
    stored = next(e for e in events if _short(e) == "secret.stored")["data"]
    assert stored["source"] == "generate"
    assert stored["outcome"] == "created"
    # Nothing else was made.
    state = world.palette_state()
    assert state["sshKeys"] == []
    assert state["apiKeys"] == []


def test_custom_validity_days(world: World) -> None:
    body = world.request()
    body["azure"]["secret"] = {"source": "generate", "validityDays": 30}
    outcome = world.run(body)
    _assert_success(world, body, outcome)
    _assert_generated_secret(world, body, 30)


@pytest.mark.parametrize("pinned", [False, True], ids=["latest", "pinned-version"])
def test_existing_key_vault_secret(world: World, pinned: bool) -> None:
    client_id = world.register_app()
    added = graph_add_password(world, client_id, "made by the app owner")
    secret_name = f"ext-{client_id[:8]}-secret"
    with _secret_client(world) as client:
        good = client.set_secret(secret_name, added["secretText"])
        if pinned:
            # A newer, wrong version: only the pinned version can work.
            client.set_secret(secret_name, "not-the-current-secret")
    secret: dict[str, Any] = {"source": "keyVault", "secretName": secret_name}
    if pinned:
        secret["version"] = good.properties.version
    body = world.request(client_id=client_id)
    body["azure"]["secret"] = secret
    outcome = world.run(body)
    _, events = _assert_success(world, body, outcome)

    # No new password, nothing new in Key Vault: the existing secret was used as it is.
    assert [p["keyId"] for p in world.graph_passwords(client_id)] == [added["keyId"]]
    assert len(world.secret_versions(secret_name)) == (2 if pinned else 1)
    assert world.secret_versions(_client_secret_name(body["accountName"])) == []
    results = json.loads(world.state_row(body["requestId"])["Results"])
    assert results["keyVaultSecretId"] == good.properties.id
    stored = next(e for e in events if _short(e) == "secret.stored")["data"]
    assert stored["source"] == "keyVault"
    assert stored["outcome"] == "existing"
    assert stored["keyVaultSecretId"] == good.properties.id


@pytest.mark.parametrize("by", ["name", "uid"])
def test_us_government_cloud_through_a_running_gateway(world: World, by: str) -> None:
    gateway_uid = _overlord_uid(world, "pcg-east")
    body = world.request(palette={"privateCloudGateway": "pcg-east" if by == "name" else gateway_uid})
    body["azure"]["cloud"] = "AzureUSGovernmentCloud"
    outcome = world.run(body)
    account, _ = _assert_success(world, body, outcome)
    _assert_generated_secret(world, body, 180)
    assert account["annotations"]["overlordUid"] == gateway_uid
    assert json.loads(world.state_row(body["requestId"])["Results"])["privateCloudGatewayUid"] == gateway_uid


def test_us_secret_cloud_with_a_tls_certificate(world: World) -> None:
    pem = _self_signed_pem()
    body = world.request()
    body["azure"].update(cloud="AzureUSSecretCloud", tlsCert=pem)
    outcome = world.run(body)
    account, _ = _assert_success(world, body, outcome)
    assert account["spec"]["tls"] == {"cert": pem}


def test_tenant_name(world: World) -> None:
    body = world.request()
    body["azure"]["tenantName"] = "Contoso Production"
    outcome = world.run(body)
    _assert_success(world, body, outcome)


def test_disable_properties(world: World) -> None:
    body = world.request()
    body["azure"]["disableProperties"] = True
    outcome = world.run(body)
    account, _ = _assert_success(world, body, outcome)
    assert account["spec"]["settings"]["disablePropertiesRequest"] is True


def test_project_scoped_account(world: World) -> None:
    body = world.request(palette={"scope": "project", "project": "Team-A"})
    outcome = world.run(body)
    account, events = _assert_success(world, body, outcome)
    team_a = world.project_uid("Team-A")
    assert account["projectUid"] == team_a
    registered = next(e for e in events if _short(e) == "account.registered")["data"]
    assert registered["palette"]["scope"] == "project"
    # Listed in Team-A, not in the tenant's own list.
    in_project = world.palette_call("GET", "/v1/cloudaccounts/azure", project_uid=team_a).json()["items"]
    in_tenant = world.palette_call("GET", "/v1/cloudaccounts/azure").json()["items"]
    assert [a["metadata"]["uid"] for a in in_project] == [account["uid"]]
    assert in_tenant == []


def test_given_rsa_public_key_for_iaas_and_aks(world: World) -> None:
    public_key = _rsa_public_key()
    body = world.request(sshKey={"name": "ops-key", "publicKey": public_key}, clusterTypes=["iaas", "aks"])
    outcome = world.run(body)
    _, events = _assert_success(world, body, outcome, ssh=True)
    keys = world.palette_state()["sshKeys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["name"] == "ops-key"
    assert key["projectUid"] == world.project_uid("Default")
    assert key["publicKey"].split()[:2] == public_key.split()[:2]
    uploaded = next(e for e in events if _short(e) == "sshkey.uploaded")["data"]
    assert uploaded["outcome"] == "created"
    assert uploaded["palette"]["sshKeyUid"] == key["uid"]


def test_generated_ssh_key_pair(world: World) -> None:
    body = world.request(sshKey={"name": "generated", "generate": True})
    outcome = world.run(body)
    _assert_success(world, body, outcome, ssh=True)

    secret_name = f"palette-{body['accountName']}-ssh-key"
    versions = world.secret_versions(secret_name)
    assert len(versions) == 1
    assert versions[0].content_type == SSH_KEY_CONTENT_TYPE
    assert versions[0].tags["request-id"] == body["requestId"]
    pem = _kv_value(world, secret_name)
    assert pem.startswith("-----BEGIN ") and "PRIVATE KEY-----" in pem
    private_key = serialization.load_ssh_private_key(pem.encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert private_key.key_size == 4096
    derived = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH).decode()
    keys = world.palette_state()["sshKeys"]
    assert len(keys) == 1
    assert keys[0]["name"] == "generated"
    assert keys[0]["projectUid"] == world.project_uid("Default")
    assert keys[0]["publicKey"].split()[:2] == derived.split()[:2]
    results = json.loads(world.state_row(body["requestId"])["Results"])
    assert results["sshPrivateKeySecretId"] == versions[0].id


def test_ssh_key_already_in_the_project(world: World) -> None:
    public_key = _rsa_public_key(2048)
    default = world.project_uid("Default")
    made = world.palette_call("POST", "/v1/users/assets/sshkeys", project_uid=default,
                    body={"metadata": {"name": "shared-key"}, "spec": {"publicKey": public_key}})
    assert made.status_code == 201, made.text
    existing_uid = made.json()["uid"]
    # The same key, with another comment: still the same key.
    same_key = " ".join(public_key.split()[:2]) + " someone-else@example.com"
    body = world.request(sshKey={"name": "shared-key", "publicKey": same_key})
    outcome = world.run(body)
    _, events = _assert_success(world, body, outcome, ssh=True)
    keys = world.palette_state()["sshKeys"]
    assert [k["uid"] for k in keys] == [existing_uid]
    assert keys[0]["publicKey"] == public_key
    uploaded = next(e for e in events if _short(e) == "sshkey.uploaded")["data"]
    assert uploaded["outcome"] == "exists"
    assert uploaded["palette"]["sshKeyUid"] == existing_uid


def _assert_api_key(world: World, body: dict[str, Any], events: list[dict[str, Any]],
                    expected_expiry: dt.datetime, tolerance: dt.timedelta) -> None:
    spec = body["apiKey"]
    keys = world.palette_state()["apiKeys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["name"] == spec["name"]
    assert key["isActive"] is True
    assert key["userUid"] == _user_uid(world, spec["user"])
    assert key["annotations"].get("description") == spec.get("description")
    expiry = _parse_time(key["expiry"])
    assert abs(expiry - expected_expiry) <= tolerance, (expiry, expected_expiry)

    secret_name = f"palette-{body['accountName']}-api-key"
    versions = world.secret_versions(secret_name)
    assert len(versions) == 1
    assert versions[0].content_type == API_KEY_CONTENT_TYPE
    assert versions[0].tags["palette-uid"] == key["uid"]
    assert versions[0].expires_on is not None
    assert abs(versions[0].expires_on - expiry) < dt.timedelta(seconds=1)
    # The value kept in Key Vault is a working Palette API key of that user.
    value = _kv_value(world, secret_name)
    info = world.palette_call("GET", "/v1/users/info", api_key=value)
    assert info.status_code == 200, info.text
    assert info.json()["userUid"] == key["userUid"]
    created = next(e for e in events if _short(e) == "apikey.created")["data"]
    assert created["palette"]["apiKeyUid"] == key["uid"]
    assert created["keyVaultSecretId"] == versions[0].id
    assert value not in json.dumps(events)


def test_api_key_expiring_in_days(world: World) -> None:
    body = world.request(apiKey={"name": "ci-robot", "description": "CI deploys", "user": "alice.ops@example.com",
                                 "expiresInDays": 45})
    outcome = world.run(body)
    _, events = _assert_success(world, body, outcome, api=True)
    _assert_api_key(world, body, events, _now() + dt.timedelta(days=45), SLACK)


@pytest.mark.parametrize("form", ["date", "date-time"])
def test_api_key_expiring_on_a_date(world: World, form: str) -> None:
    day = (_now() + dt.timedelta(days=60)).date()
    if form == "date":
        expires_on, expected = day.isoformat(), dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
    else:
        expires_on = f"{day.isoformat()}T12:30:00+02:00"
        expected = dt.datetime.combine(day, dt.time(10, 30), tzinfo=dt.UTC)
    body = world.request(apiKey={"name": "release-bot", "user": "bob.dev@example.com", "expiresOn": expires_on})
    outcome = world.run(body)
    _, events = _assert_success(world, body, outcome, api=True)
    _assert_api_key(world, body, events, expected, dt.timedelta(seconds=1))


def test_every_option_at_once(world: World) -> None:
    body = world.request(
        palette={"scope": "project", "project": "Team-A", "privateCloudGateway": "pcg-east"},
        sshKey={"name": "team-a-key", "publicKey": _rsa_public_key(2048)},
        apiKey={"name": "team-a-robot", "user": "admin@example.com", "expiresInDays": 10},
        clusterTypes=["aks"],
    )
    body["azure"].update(cloud="AzureUSGovernmentCloud", tenantName="Team A", disableProperties=True,
                         secret={"source": "generate", "validityDays": 90})
    outcome = world.run(body)
    account, events = _assert_success(world, body, outcome, ssh=True, api=True)
    _assert_generated_secret(world, body, 90)
    assert account["annotations"]["overlordUid"] == _overlord_uid(world, "pcg-east")
    keys = world.palette_state()["sshKeys"]
    assert [k["projectUid"] for k in keys] == [world.project_uid("Team-A")]
    _assert_api_key(world, body, events, _now() + dt.timedelta(days=10), SLACK)


def test_an_account_the_product_made_before_is_updated_in_place(world: World) -> None:
    client_id = world.register_app()
    first = world.request(client_id=client_id)
    assert world.run(first).kind is OutcomeKind.SUCCEEDED
    uid = world.palette_accounts(first["accountName"])[0]["uid"]
    world.events()  # the first request's

    body = world.request(client_id=client_id, accountName=first["accountName"])
    body["azure"]["tenantName"] = "new name"
    outcome = world.run(body)
    account, events = _assert_success(world, body, outcome, account_event="account.updated")
    assert account["uid"] == uid
    assert account["spec"]["tenantName"] == "new name"
    assert account["annotations"]["palette-onboarding/request-id"] == body["requestId"]
    updated = next(e for e in events if _short(e) == "account.updated")["data"]
    assert updated["outcome"] == "updated"
    assert json.loads(world.state_row(body["requestId"])["Results"])["accountAction"] == "updated"
    # Each request added one password; Key Vault's current version is the second one's, which
    # Palette now holds.
    passwords = world.graph_passwords(client_id)
    assert len(passwords) == 2
    versions = world.secret_versions(_client_secret_name(first["accountName"]))
    assert len(versions) == 2
    assert versions[0].tags["request-id"] == body["requestId"]


def test_an_account_of_that_name_made_by_hand_is_never_adopted(world: World) -> None:
    """Same name, same app, but not made by the product: it cannot prove the account is its own,
    so it leaves it alone and says so, before anything is made."""
    client_id = world.register_app()
    first = graph_add_password(world, client_id, "registered by hand")
    made = world.palette_call("POST", "/v1/cloudaccounts/azure", body={
        "metadata": {"name": "hand-made", "annotations": {"scope": "tenant"}},
        "spec": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id, "clientSecret": first["secretText"],
                 "azureEnvironment": "AzurePublicCloud", "tenantName": "old name"},
    })
    assert made.status_code == 201, made.text

    body = world.request(client_id=client_id, accountName="hand-made")
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == "account_name_clash"
    assert "did not create" in outcome.message
    account = world.palette_accounts("hand-made")[0]
    assert account["spec"]["tenantName"] == "old name"
    assert [p["keyId"] for p in world.graph_passwords(client_id)] == [first["keyId"]]
    assert world.secret_versions(_client_secret_name("hand-made")) == []
