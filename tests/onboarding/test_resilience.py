"""Redelivery, concurrency, crashes and faults: the end state always equals an uninterrupted run.

Everything goes through the real SDKs and HTTP against the local stack; outcomes are read back
from the stand-ins (Palette's and Graph's admin state, Key Vault versions, events on the topic).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from shared.clients.http import RetryPolicy
from shared.clients.keyvault import secret_name_for
from shared.clients.palette import PaletteClient
from shared.pipeline import OutcomeKind
from shared.state.records import iso

from .conftest import World

FULL_STEPS = ["check", "secret", "validate", "register", "sshkey", "apikey", "verify"]


class InjectedCrash(RuntimeError):
    """Stands for the worker dying right after a step was recorded."""


def full_request(world: World) -> dict[str, Any]:
    return world.request(
        sshKey={"name": "crash-key", "generate": True},
        apiKey={"name": f"key-{world.apps[-1][:8] if world.apps else 'x'}", "user": "admin@example.com",
                "expiresInDays": 30},
        clusterTypes=["aks"],
    )


def end_state(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """What exists once the request is done: counts of everything the onboarding makes."""
    palette = world.palette_state()
    account = body["accountName"]
    client_id = body["azure"]["clientId"]
    result: dict[str, Any] = {
        "accounts": len([a for a in palette["cloudAccounts"] if a["name"] == account]),
        "graph_passwords": len(world.graph_passwords(client_id)),
        "client_secret_versions": len(world.secret_versions(secret_name_for(account, "client-secret"))),
    }
    if "sshKey" in body:
        result["ssh_keys"] = len([k for k in palette["sshKeys"] if k["name"] == body["sshKey"]["name"]])
        result["ssh_private_key_versions"] = len(world.secret_versions(
            secret_name_for(account, f"ssh:{body['sshKey']['name']}")))
    if "apiKey" in body:
        result["api_keys"] = len([k for k in palette["apiKeys"] if k["name"] == body["apiKey"]["name"]])
        result["api_key_versions"] = len(world.secret_versions(
            secret_name_for(account, f"apikey:{body['apiKey']['name']}")))
    return result


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["type"].removeprefix("palette.onboarding.") for e in events)


def test_uninterrupted_full_run_is_the_reference(world: World) -> None:
    body = full_request(world)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {
        "accounts": 1, "graph_passwords": 1, "client_secret_versions": 1, "ssh_keys": 1,
        "ssh_private_key_versions": 1, "api_keys": 1, "api_key_versions": 1,
    }
    assert event_types(world.events()) == sorted([
        "requested", "secret.stored", "account.registered", "sshkey.uploaded", "apikey.created", "validated"])


def test_finished_request_redelivered_is_a_noop(world: World) -> None:
    body = full_request(world)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    world.events()
    calls_before = len(world.palette_requests())
    again = world.run(body)
    assert again.kind is OutcomeKind.DUPLICATE
    assert world.events() == []
    assert len(world.palette_requests()) == calls_before
    assert end_state(world, body)["accounts"] == 1


def test_the_same_request_delivered_twice_at_once_is_onboarded_once(world: World) -> None:
    body = full_request(world)
    barrier = threading.Barrier(2)
    outcomes: list[OutcomeKind] = []

    def deliver() -> None:
        barrier.wait()
        outcomes.append(world.run(body).kind)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) in (sorted([OutcomeKind.SUCCEEDED, OutcomeKind.BUSY]),
                                sorted([OutcomeKind.SUCCEEDED, OutcomeKind.DUPLICATE]))
    assert end_state(world, body) == {
        "accounts": 1, "graph_passwords": 1, "client_secret_versions": 1, "ssh_keys": 1,
        "ssh_private_key_versions": 1, "api_keys": 1, "api_key_versions": 1,
    }


@pytest.mark.parametrize("crash_after", FULL_STEPS)
def test_crash_after_each_step_then_redelivery_ends_as_an_uninterrupted_run(world: World, crash_after: str) -> None:
    body = full_request(world)

    def crash(step: str) -> None:
        if step == crash_after:
            raise InjectedCrash(f"worker died after {step}")

    with pytest.raises(InjectedCrash):
        world.run(body, after_step=crash)
    assert world.state_row(body["requestId"])["LeaseOwner"] == "", "a crash releases the lease"
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {
        "accounts": 1, "graph_passwords": 1, "client_secret_versions": 1, "ssh_keys": 1,
        "ssh_private_key_versions": 1, "api_keys": 1, "api_key_versions": 1,
    }
    events = world.events()
    assert len({e["id"] for e in events}) == len(events), "no event is delivered twice"
    assert event_types(events) == sorted([
        "requested", "secret.stored", "account.registered", "sshkey.uploaded", "apikey.created", "validated"])


def test_lost_graph_response_leaves_no_extra_password(world: World) -> None:
    """addPassword happened but its answer never arrived: the retry removes the orphan (found by
    its display name, which carries the requestId) before adding the one it keeps."""
    body = world.request()
    world.identity_fault(method="POST", path="/addPassword$", dropAfterHandling=True, times=1)
    first = world.run(body)
    assert first.kind is OutcomeKind.RETRY_LATER
    assert len(world.graph_passwords(body["azure"]["clientId"])) == 1  # the orphan
    assert world.run(body, attempt=first.attempt).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


def test_key_vault_down_after_the_password_was_made_leaves_no_extra_password(world: World) -> None:
    """The keyId was recorded but the value never reached Key Vault: the value is lost, so the
    retry removes that password and makes a new one."""
    body = world.request()
    world.keyvault_fault(method="PUT", path="^/secrets/", status=503, times=20)
    first = world.run(body)
    assert first.kind is OutcomeKind.RETRY_LATER
    requests.delete(f"{world.stack.keyvault.url}/_devstack/faults", verify=world.verify,  # type: ignore[union-attr]
                    timeout=10)
    assert world.run(body, attempt=first.attempt).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


@pytest.mark.parametrize("path", ["^/v1/cloudaccounts/azure$", "^/v1/users/assets/sshkeys$", "^/v1/apiKeys$"])
def test_lost_palette_create_response_creates_nothing_twice(world: World, path: str) -> None:
    """Palette made the object but the answer was lost; POSTs are not blindly retried, and the
    redelivery finds what was made instead of making a second one (an API key whose value was
    lost is replaced, so there is still exactly one and its value is in Key Vault)."""
    body = full_request(world)
    world.palette_fault(method="POST", path=path, dropAfterHandling=True, times=1)
    first = world.run(body)
    assert first.kind is OutcomeKind.RETRY_LATER
    assert world.run(body, attempt=first.attempt).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {
        "accounts": 1, "graph_passwords": 1, "client_secret_versions": 1, "ssh_keys": 1,
        "ssh_private_key_versions": 1, "api_keys": 1, "api_key_versions": 1,
    }
    # The API key in Key Vault is the one Palette holds: it authenticates.
    name = secret_name_for(body["accountName"], f"apikey:{body['apiKey']['name']}")
    value, _ = world.deps.clients.secrets.get_secret(name)
    info = requests.get(f"{world.stack.settings['PALETTE_ENDPOINT']}/v1/users/info",
                        headers={"ApiKey": value.get_secret_value()}, timeout=10)
    assert info.status_code == 200


@pytest.mark.parametrize("fault", [
    {"method": "POST", "path": "^/v1/clouds/azure/account/validate$", "status": 429, "times": 3},
    {"method": "GET", "path": "^/v1/cloudaccounts/azure$", "status": 503, "times": 2},
    {"method": "GET", "path": "^/v1/cloudaccounts/azure$", "drop": True, "times": 1},
    {"method": "POST", "path": "^/v1/cloudaccounts/azure$", "status": 429,
     "headers": {"Retry-After": "1"}, "times": 1},
])
def test_palette_faults_within_the_budget_are_absorbed(world: World, fault: dict[str, Any]) -> None:
    body = world.request()
    world.palette_fault(**fault)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


def test_graph_faults_within_the_budget_are_absorbed(world: World) -> None:
    body = world.request()
    world.identity_fault(method="POST", path="/addPassword$", status=503, times=1)
    world.identity_fault(method="GET", path="^/v1.0/applications", status=503, times=1)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


def test_palette_down_past_the_budget_resumes_later_without_repeating_steps(world: World) -> None:
    body = world.request()
    settings = world.deps.settings
    impatient = PaletteClient(settings.palette_endpoint, settings.palette_api_key,
                              retry=RetryPolicy(max_attempts=2, initial_delay=0.05, budget_seconds=1))
    clients = dataclasses.replace(world.deps.clients, palette=impatient)
    world.palette_fault(path="^/v1/cloudaccounts/azure", status=503)
    from shared.pipeline import process_request

    first = process_request(body_bytes(body), clients, settings.pipeline, owner="first")
    assert first.kind is OutcomeKind.RETRY_LATER
    assert first.attempt == 1 and first.retry_in_seconds == settings.pipeline.retry_delays_seconds[0]
    assert world.state_row(body["requestId"])["Status"] == "waiting"
    requests.delete(f"{world.stack.palette.url}/_devstack/faults", timeout=10)  # type: ignore[union-attr]
    second = process_request(body_bytes(body), clients, settings.pipeline, owner="second", attempt=first.attempt)
    impatient.close()
    assert second.kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


def test_a_dependency_down_for_every_retry_fails_for_good(world: World) -> None:
    body = world.request()
    settings = world.deps.settings
    world.palette_fault(path="^/v1/dashboard", status=503)
    impatient = PaletteClient(settings.palette_endpoint, settings.palette_api_key,
                              retry=RetryPolicy(max_attempts=1, budget_seconds=1))
    clients = dataclasses.replace(world.deps.clients, palette=impatient)
    from shared.pipeline import process_request

    last = process_request(body_bytes(body), clients, settings.pipeline, owner="last",
                           attempt=len(settings.pipeline.retry_delays_seconds))
    impatient.close()
    assert last.kind is OutcomeKind.FAILED
    assert last.reason == "dependency_unavailable"
    failed = [e for e in world.events() if e["type"] == "palette.onboarding.failed"]
    assert failed and failed[0]["data"]["reason"] == "dependency_unavailable"


def test_a_lease_held_by_a_live_delivery_is_respected_and_an_expired_one_taken_over(world: World) -> None:
    body = world.request()
    def crash_after_secret(step: str) -> None:
        if step == "secret":
            raise InjectedCrash(step)

    with pytest.raises(InjectedCrash):
        world.run(body, after_step=crash_after_secret)
    store = world.deps.clients.state
    record = store.get(body["requestId"])
    assert record is not None
    record.lease_owner = "another-worker"
    record.lease_expires_at = iso(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    store.replace(record)
    busy = world.run(body)
    assert busy.kind is OutcomeKind.BUSY and busy.retry_in_seconds
    record = store.get(body["requestId"])
    assert record is not None
    record.lease_expires_at = iso(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))  # that worker was killed
    store.replace(record)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


def test_a_new_secret_that_propagates_slowly_is_waited_for(world: World) -> None:
    assert world.stack.identity_https is not None
    requests.post(f"{world.stack.identity_https.url}/_devstack/config", json={"propagationDelaySeconds": 2},
                  verify=world.verify, timeout=10).raise_for_status()
    body = world.request()
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    validate_calls = [r for r in world.palette_requests() if r["path"] == "/v1/clouds/azure/account/validate"]
    assert len(validate_calls) >= 2 and validate_calls[-1]["status"] == 204
    assert validate_calls[0]["status"] == 400


def body_bytes(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()


def test_secret_str_never_shows_in_reprs() -> None:
    value = SecretStr("canary-value")
    assert "canary-value" not in repr(value) and "canary-value" not in str(value)


def test_a_new_request_for_an_account_keeps_the_ssh_key_generated_before(world: World) -> None:
    """Re-onboarding with a new requestId and sshKey.generate finds the key pair this app made and
    Palette holds under that name, instead of calling it a clash or making a second key."""
    first = world.request(sshKey={"name": "kept-key", "generate": True})
    assert world.run(first).kind is OutcomeKind.SUCCEEDED
    second = dict(first, requestId=first["requestId"] + "-again")
    assert world.run(second).kind is OutcomeKind.SUCCEEDED
    palette = world.palette_state()
    assert len([k for k in palette["sshKeys"] if k["name"] == "kept-key"]) == 1
    assert len(world.secret_versions(secret_name_for(first["accountName"], "ssh:kept-key"))) == 1
