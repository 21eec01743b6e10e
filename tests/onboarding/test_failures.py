"""Every failure reason, end to end: the outcome, the state row, the ``failed`` event a person can
act on, and, for a failure found by the check step, nothing created anywhere (no Palette account,
SSH key or API key, no Graph password, no Key Vault secret).

Outcomes are read back from the stand-ins themselves, never from the app's clients.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.stack import DEVSTACK_TENANT_ID
from shared.engine import OutcomeKind
from tests.onboarding.conftest import graph_add_password

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

PREFIX = "palette.onboarding."
EVENT_WAIT = 0.5  # every event is on the topic before process_request returns


# ------------------------------------------------------------------------------------- helpers






def _kv_set(world: World, name: str, value: str) -> Any:
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    with SecretClient(world.stack.settings["KEY_VAULT_URL"], DefaultAzureCredential()) as client:
        return client.set_secret(name, value)


def _rsa_public_key(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def _everything(world: World) -> dict[str, Any]:
    """What exists in every service: Palette objects, Graph passwords, Key Vault secrets."""
    palette = world.palette_state()
    passwords = {}
    for tenant in world.identity_state()["tenants"].values():
        for app in tenant["applications"]:
            passwords[app["appId"]] = sorted(p["keyId"] for p in app["passwordCredentials"])
    vault = world.keyvault_state()
    return {
        "cloudAccounts": palette["cloudAccounts"],
        "sshKeys": palette["sshKeys"],
        "apiKeys": palette["apiKeys"],
        "graphPasswords": passwords,
        "secrets": {s["name"]: sorted(v["version"] for v in s["versions"]) for s in vault["secrets"]},
    }


def _short(event: dict[str, Any]) -> str:
    return event["type"].removeprefix(PREFIX)


def _assert_failed(world: World, body: dict[str, Any], outcome: Any, reason: str, *, step: str,
                   mentions: tuple[str, ...] = ()) -> dict[str, Any]:
    """The outcome, the state row and the ``failed`` event of a permanent failure; returns its data."""
    assert outcome.kind is OutcomeKind.FAILED, (outcome.kind, outcome.reason, outcome.message)
    assert outcome.reason == reason
    row = world.state_row(body["requestId"])
    assert row["Status"] == "failed"
    assert row["ErrorReason"] == reason
    assert row["ErrorMessage"] == outcome.message
    assert row["LeaseOwner"] == ""
    assert row["CurrentStep"] == step  # where it stopped, not the last step another branch recorded
    steps = json.loads(row["Steps"])
    assert steps[step]["outcome"] == "failed"
    assert steps[step]["detail"] == reason

    events = world.events(wait=EVENT_WAIT)
    types = [_short(e) for e in events]
    assert types[0] == "requested"
    assert types[-1] == "failed"
    assert types.count("failed") == 1
    assert "validated" not in types
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["subject"] == body["accountName"]
        assert event["data"]["requestId"] == body["requestId"]
    failed = events[-1]["data"]
    assert failed["reason"] == reason
    assert failed["step"] == step
    assert failed["outcome"] == "failed"
    assert failed["message"] == outcome.message
    # A message a person can act on: words, not a code, naming what to look at.
    message = failed["message"]
    assert len(message.split()) >= 6, message
    for word in mentions:
        assert word in message, (word, message)
    return failed


def _assert_check_failure(world: World, body: dict[str, Any], reason: str, *,
                          mentions: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``body``; it must fail at the check step with ``reason`` and leave everything as it was."""
    before = _everything(world)
    outcome = world.run(body)
    failed = _assert_failed(world, body, outcome, reason, step="check", mentions=mentions)
    assert _everything(world) == before
    steps = json.loads(world.state_row(body["requestId"])["Steps"])
    assert set(steps) == {"check"}
    return failed


# ----------------------------------------------------------------------------- invalid requests

def test_invalid_request_reports_one_error_per_bad_field(world: World) -> None:
    body = world.request(accountName="Not_A_Valid_Name", palette={"scope": "galaxy"}, colour="blue")
    body["azure"].update(tenantId="not-a-guid", secret={"source": "generate", "validityDays": 1000})
    before = _everything(world)
    outcome = world.run(body)

    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.reason == "invalid_request"
    expected_paths = {"accountName", "azure.tenantId", "azure.secret.validityDays", "palette.scope", "colour"}
    assert sorted(e["path"] for e in outcome.errors) == sorted(expected_paths)
    assert _everything(world) == before

    row = world.state_row(body["requestId"])
    assert row["Status"] == "failed"
    assert row["ErrorReason"] == "invalid_request"
    events = world.events(wait=EVENT_WAIT)
    assert [_short(e) for e in events] == ["failed"]
    event = events[0]
    assert event["specversion"] == "1.0"
    data = event["data"]
    assert data["requestId"] == body["requestId"]
    assert data["reason"] == "invalid_request"
    assert data["step"] == "check"
    errors = data["errors"]
    assert sorted(e["path"] for e in errors) == sorted(expected_paths)
    for error in errors:
        assert error["message"], error
        assert error["path"] in data["message"]
    # The bad input itself is never echoed back.
    assert "Not_A_Valid_Name" not in json.dumps(event)


@pytest.mark.parametrize("raw", [
    b"this is not JSON",
    json.dumps({"requestId": "has spaces and !", "accountName": "acct-x"}).encode(),
    json.dumps({"accountName": "acct-x", "azure": {}}).encode(),
], ids=["not-json", "bad-request-id", "no-request-id"])
def test_invalid_request_without_a_usable_request_id(world: World, raw: bytes) -> None:
    before = _everything(world)
    outcome = world.run(raw)
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.reason == "invalid_request"
    assert outcome.errors
    assert _everything(world) == before
    # Nothing recorded: there is no id to record it under.
    assert list(world.deps.clients.state.list()) == []
    # The rejection is still announced.
    events = world.events(wait=EVENT_WAIT)
    assert [_short(e) for e in events] == ["failed"]
    data = events[0]["data"]
    assert isinstance(data["requestId"], str) and data["requestId"]
    assert events[0]["subject"]
    assert data["reason"] == "invalid_request"
    assert data["errors"] == outcome.errors
    assert data["message"]
    assert "has spaces and !" not in json.dumps(events[0])


def test_invalid_request_redelivered_is_a_duplicate(world: World) -> None:
    body = world.request()
    body["azure"]["clientId"] = "nope"
    assert world.run(body).kind is OutcomeKind.REJECTED
    row = world.state_row(body["requestId"])
    again = world.run(body)
    assert again.kind is OutcomeKind.DUPLICATE
    assert world.state_row(body["requestId"]) == row
    # One announcement in all, from the first delivery.
    assert [_short(e) for e in world.events(wait=EVENT_WAIT)] == ["failed"]


# ----------------------------------------------------------------------------- the check step

def test_project_not_found(world: World) -> None:
    body = world.request(palette={"project": "No-Such-Project"}, sshKey={"name": "k", "generate": True})
    _assert_check_failure(world, body, "project_not_found", mentions=("No-Such-Project", "palette.project"))


def test_pcg_not_found(world: World) -> None:
    body = world.request(palette={"privateCloudGateway": "pcg-nowhere"})
    body["azure"]["cloud"] = "AzureUSGovernmentCloud"
    _assert_check_failure(world, body, "pcg_not_found", mentions=("pcg-nowhere", "palette.privateCloudGateway"))


def test_pcg_not_running(world: World) -> None:
    body = world.request(palette={"privateCloudGateway": "pcg-west"})
    body["azure"]["cloud"] = "AzureUSGovernmentCloud"
    _assert_check_failure(world, body, "pcg_not_running", mentions=("pcg-west", "Pending", "Running"))


def test_user_not_found(world: World) -> None:
    body = world.request(apiKey={"name": "robot", "user": "nobody@example.com", "expiresInDays": 30},
                         sshKey={"name": "k", "publicKey": _rsa_public_key()})
    _assert_check_failure(world, body, "user_not_found", mentions=("nobody@example.com", "apiKey.user"))


def test_account_name_clash(world: World) -> None:
    other_client = world.register_app()
    password = graph_add_password(world, other_client)
    made = world.palette_call("POST", "/v1/cloudaccounts/azure", body={
        "metadata": {"name": "taken-name"},
        "spec": {"tenantId": DEVSTACK_TENANT_ID, "clientId": other_client, "clientSecret": password["secretText"]},
    })
    assert made.status_code == 201, made.text
    body = world.request(accountName="taken-name", sshKey={"name": "k", "generate": True},
                         apiKey={"name": "robot", "user": "alice.ops@example.com", "expiresInDays": 30})
    _assert_check_failure(world, body, "account_name_clash", mentions=("taken-name", "accountName"))
    account = world.palette_accounts("taken-name")
    assert [(a["uid"], a["spec"]["clientId"]) for a in account] == [(made.json()["uid"], other_client)]


@pytest.mark.parametrize("mode", ["public-key", "generate"])
def test_ssh_key_name_clash(world: World, mode: str) -> None:
    existing = _rsa_public_key()
    made = world.palette_call("POST", "/v1/users/assets/sshkeys", project_uid=world.project_uid("Default"),
                    body={"metadata": {"name": "ops-key"}, "spec": {"publicKey": existing}})
    assert made.status_code == 201, made.text
    ssh_key: dict[str, Any] = ({"name": "ops-key", "publicKey": _rsa_public_key()} if mode == "public-key"
                               else {"name": "ops-key", "generate": True})
    body = world.request(sshKey=ssh_key)
    _assert_check_failure(world, body, "ssh_key_name_clash", mentions=("ops-key", "sshKey.name"))
    assert [k["publicKey"] for k in world.palette_state()["sshKeys"]] == [existing]


def test_api_key_name_clash(world: World) -> None:
    alice = next(u["uid"] for u in world.palette_state()["users"] if u["emailId"] == "alice.ops@example.com")
    made = world.palette_call("POST", "/v1/apiKeys", body={
        "metadata": {"name": "robot"}, "spec": {"userUid": alice, "expiry": "2099-01-01T00:00:00Z"}})
    assert made.status_code == 201, made.text
    body = world.request(apiKey={"name": "robot", "user": "bob.dev@example.com", "expiresInDays": 30})
    _assert_check_failure(world, body, "api_key_name_clash", mentions=("robot", "apiKey.name"))


def test_app_not_found(world: World) -> None:
    missing = str(uuid.uuid4())
    body = world.request(client_id=missing)
    _assert_check_failure(world, body, "app_not_found", mentions=(missing, "azure.clientId"))


@pytest.mark.parametrize("which", ["missing-secret", "missing-version"])
def test_secret_not_found(world: World, which: str) -> None:
    body = world.request()
    if which == "missing-secret":
        body["azure"]["secret"] = {"source": "keyVault", "secretName": "no-such-secret"}
    else:
        _kv_set(world, "present-secret", "some value")
        body["azure"]["secret"] = {"source": "keyVault", "secretName": "present-secret", "version": "0" * 32}
    name = body["azure"]["secret"]["secretName"]
    mentions = (name, "azure.secret.secretName") + (("version",) if which == "missing-version" else ())
    _assert_check_failure(world, body, "secret_not_found", mentions=mentions)


# ------------------------------------------------------------------------ later steps

def test_credentials_invalid_never_reveals_the_value(world: World) -> None:
    client_id = world.register_app()
    graph_add_password(world, client_id)
    wrong = f"Wr0ng~{uuid.uuid4().hex}"
    _kv_set(world, "wrong-client-secret", wrong)
    body = world.request(client_id=client_id)
    body["azure"]["secret"] = {"source": "keyVault", "secretName": "wrong-client-secret"}
    before = _everything(world)
    outcome = world.run(body)
    failed = _assert_failed(world, body, outcome, "credentials_invalid", step="validate",
                            mentions=(client_id, DEVSTACK_TENANT_ID))
    assert _everything(world) == before
    assert world.palette_accounts(body["accountName"]) == []
    row = world.state_row(body["requestId"])
    assert wrong not in outcome.message
    assert wrong not in json.dumps(failed)
    assert wrong not in json.dumps({k: v for k, v in row.items() if isinstance(v, str)})
    assert wrong not in json.dumps(outcome.state)


def test_graph_rejected(world: World) -> None:
    client_id = world.register_app()
    graph_add_password(world, client_id)
    count = len(world.graph_passwords(client_id))
    assert world.stack.identity_https is not None
    requests.post(f"{world.stack.identity_https.url}/_devstack/config", json={"passwordCap": count},
                  verify=world.verify, timeout=10).raise_for_status()
    body = world.request(client_id=client_id)
    before = _everything(world)
    outcome = world.run(body)
    _assert_failed(world, body, outcome, "graph_rejected", step="secret", mentions=(client_id,))
    assert _everything(world) == before
    assert len(world.graph_passwords(client_id)) == count


def test_palette_4xx_at_register_is_dependency_rejected(world: World) -> None:
    world.palette_fault(method="POST", path="^/v1/cloudaccounts/azure$", status=400)
    body = world.request()
    outcome = world.run(body)
    failed = _assert_failed(world, body, outcome, "dependency_rejected", step="register", mentions=("400",))
    assert world.palette_accounts() == []
    assert "accountUid" not in failed.get("palette", {})
    steps = json.loads(world.state_row(body["requestId"])["Steps"])
    assert steps["secret"]["outcome"] == "succeeded"
    assert steps["validate"]["outcome"] == "succeeded"


# ------------------------------------------------------------------------ idempotency

@pytest.mark.parametrize("original", ["succeeded", "failed"])
def test_same_request_id_with_another_body_is_a_conflict(world: World, original: str) -> None:
    """Another body under a requestId whose request succeeded, or failed past its check (it had
    made something), is refused; a request refused at its check runs again instead (below)."""
    if original == "failed":
        world.palette_fault(method="POST", path="^/v1/cloudaccounts/azure$", status=400)
    body = world.request()
    first = world.run(body)
    assert first.kind is (OutcomeKind.SUCCEEDED if original == "succeeded" else OutcomeKind.FAILED)
    row = world.state_row(body["requestId"])
    before = _everything(world)

    changed = {**body, "accountName": body["accountName"] + "-2", "apiKey": {
        "name": "robot", "user": "alice.ops@example.com", "expiresInDays": 30}}
    outcome = world.run(changed)
    assert outcome.kind is OutcomeKind.CONFLICT
    assert outcome.reason == "request_id_conflict"
    assert body["requestId"] in outcome.message
    assert world.state_row(body["requestId"]) == row
    assert _everything(world) == before
    # The first delivery's events, and one more that tells the ticket its resubmission was refused
    # (reason request_id_conflict), not that the original request failed.
    expected = (["requested", "secret.stored", "account.registered", "validated"] if original == "succeeded"
                else ["requested", "secret.stored", "failed"])
    events = world.events(wait=EVENT_WAIT)
    refused = [e for e in events if e["data"].get("reason") == "request_id_conflict"]
    assert len(refused) == 1
    assert refused[0]["data"]["requestId"] == body["requestId"]
    assert refused[0]["subject"] == changed["accountName"]
    assert "different body" in refused[0]["data"]["message"]
    rest = [e for e in events if e not in refused]
    assert sorted(_short(e) for e in rest) == sorted(expected)
    assert all(e["subject"] == body["accountName"] for e in rest)
    # A redelivery of the refused message announces nothing new.
    assert world.run(changed).kind is OutcomeKind.CONFLICT
    assert world.events(wait=EVENT_WAIT) == []


def test_a_corrected_body_runs_a_request_refused_at_its_check_again(world: World) -> None:
    """A request refused at its check made nothing: a corrected body under the same requestId runs
    it again, as its next run, however often. Each run's events reach the topic once, with ids of
    their own: the second run's ``requested`` and ``failed`` are not taken for the first run's."""
    body = world.request(palette={"privateCloudGateway": "pcg-west"})
    body["azure"]["cloud"] = "AzureUSGovernmentCloud"
    request_id, account = body["requestId"], body["accountName"]
    assert world.run(body).reason == "pcg_not_running"
    first_run = {e["id"] for e in world.events(wait=EVENT_WAIT)}
    before = _everything(world)

    still_wrong = {**body, "palette": {"privateCloudGateway": "pcg-nowhere"}}
    second = world.run(still_wrong)

    failed = _assert_failed(world, still_wrong, second, "pcg_not_found", step="check")  # requested, then failed
    assert failed["run"] == 2
    row = world.state_row(request_id)
    recorded = json.loads(row["EventIds"])  # the first run's ids, then the second run's, none twice
    assert len(set(recorded)) == len(recorded) == 4 and set(recorded[:2]) == first_run
    assert row["Run"] == 2 and set(json.loads(row["Steps"])) == {"check"}
    assert _everything(world) == before
    assert world.run(still_wrong).kind is OutcomeKind.DUPLICATE  # the same body again: nothing new

    corrected = {**body, "azure": {**body["azure"], "cloud": "AzurePublicCloud"}, "palette": {}}
    third = world.run(corrected)

    assert third.kind is OutcomeKind.SUCCEEDED, (third.reason, third.message)
    assert (third.state["run"], third.state["status"], third.state["error"]) == (3, "succeeded", None)
    assert {step["outcome"] for step in third.state["steps"].values()} <= {"succeeded", "skipped"}  # this run's
    assert len(world.palette_accounts(account)) == 1
    events = world.events(wait=EVENT_WAIT)
    assert sorted(_short(e) for e in events) == ["account.registered", "requested", "secret.stored", "validated"]
    assert all(e["data"]["run"] == 3 for e in events)
    # Redelivered, the corrected body and the first one change nothing: the request succeeded.
    assert world.run(corrected).kind is OutcomeKind.DUPLICATE
    assert world.run(body).kind is OutcomeKind.CONFLICT
    assert [e["data"]["reason"] for e in world.events(wait=EVENT_WAIT)] == ["request_id_conflict"]
    assert len(world.palette_accounts(account)) == 1


def test_finished_failed_request_redelivered_is_a_duplicate(world: World) -> None:
    body = world.request(palette={"project": "No-Such-Project"})
    assert world.run(body).kind is OutcomeKind.FAILED
    row = world.state_row(body["requestId"])
    before = _everything(world)
    again = world.run(body)
    assert again.kind is OutcomeKind.DUPLICATE
    assert again.reason == "project_not_found"
    assert world.state_row(body["requestId"]) == row
    assert _everything(world) == before
    # The first delivery's two events and nothing more.
    assert [_short(e) for e in world.events(wait=EVENT_WAIT)] == ["requested", "failed"]
