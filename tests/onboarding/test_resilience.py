"""Redelivery, concurrency, crashes, outages and faults: the end state always equals an
uninterrupted run, and an independent subscriber receives every event exactly once.

Everything goes through the real SDKs and HTTP against the local stack; outcomes are read back
from the stand-ins (Palette's and Graph's admin state, Key Vault versions, events on the topic).
A crash is a ``BaseException`` raised at one of the runner's checkpoints, so none of the
pipeline's error handling runs (as when the host is killed); the leases it held lapse by
themselves, which these tests shorten to one second. ``test_kill.py`` kills real host processes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import threading
import time
from typing import Any

import pytest
import requests

from shared.clients.http import RetryPolicy
from shared.clients.palette import PaletteClient
from shared.engine import OutcomeKind
from shared.operations import process_request
from shared.state.records import iso

from .conftest import World

FULL_STEPS = ["check", "secret", "validate", "register", "sshkey", "apikey"]
ANNOUNCING = ["claimed", "secret", "register", "sshkey", "apikey", "verify"]  # points that record events
CHECKPOINTS = [*(f"{s}.saved" for s in ["claimed", *FULL_STEPS, "verify"]), *(f"{s}.sent" for s in ANNOUNCING)]
FULL_EVENTS = ["requested", "secret.stored", "account.registered", "sshkey.uploaded", "apikey.created", "validated"]
REFERENCE = {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1, "ssh_keys": 1,
             "ssh_private_key_versions": 1, "api_keys": 1, "api_key_versions": 1}


class HostKilled(BaseException):
    """The worker dying at a checkpoint: not an Exception, so no handler of the pipeline runs."""


def kill_at(point: str) -> Any:
    def checkpoint(name: str) -> None:
        if name == point:
            raise HostKilled(name)
    return checkpoint


def short_leases(world: World) -> Any:
    return dataclasses.replace(world.deps.settings.pipeline, lease_seconds=1.0)


def full_request(world: World) -> dict[str, Any]:
    body = world.request(sshKey={"name": "crash-key", "generate": True}, clusterTypes=["aks"])
    body["apiKey"] = {"name": f"key-{body['requestId'][-12:]}", "user": "admin@example.com", "expiresInDays": 30}
    return body


def names(account: str) -> dict[str, str]:
    return {kind: f"palette-{account}-{kind}" for kind in ("client-secret", "ssh-key", "api-key")}


def end_state(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """What exists once the request is done: counts of everything the onboarding makes."""
    palette = world.palette_state()
    account = body["accountName"]
    secrets = names(account)
    result: dict[str, Any] = {
        "accounts": len([a for a in palette["cloudAccounts"] if a["name"] == account]),
        "graph_passwords": len(world.graph_passwords(body["azure"]["clientId"])),
        "client_secret_versions": len(world.secret_versions(secrets["client-secret"])),
    }
    if "sshKey" in body:
        result["ssh_keys"] = len([k for k in palette["sshKeys"] if k["name"] == body["sshKey"]["name"]])
        result["ssh_private_key_versions"] = len(world.secret_versions(secrets["ssh-key"]))
    if "apiKey" in body:
        result["api_keys"] = len([k for k in palette["apiKeys"] if k["name"] == body["apiKey"]["name"]])
        result["api_key_versions"] = len(world.secret_versions(secrets["api-key"]))
    return result


def palette_holds_key_vaults_secret(world: World, account: str) -> bool:
    held = world.palette_accounts(account)[0]["clientSecretSha256"]
    current = world.secret_value(names(account)["client-secret"])
    return held == hashlib.sha256(current.encode()).hexdigest()


def exactly_once(events: list[dict[str, Any]], expected: list[str]) -> None:
    """The subscriber's view: no event id twice, and each expected type once."""
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), f"an event was delivered twice: {sorted(e['type'] for e in events)}"
    assert sorted(e["type"].removeprefix("palette.onboarding.") for e in events) == sorted(expected)


def test_uninterrupted_full_run_is_the_reference(world: World) -> None:
    body = full_request(world)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == REFERENCE
    assert palette_holds_key_vaults_secret(world, body["accountName"])
    exactly_once(world.events(), FULL_EVENTS)


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
    assert OutcomeKind.SUCCEEDED in outcomes and len(outcomes) == 2
    assert set(outcomes) <= {OutcomeKind.SUCCEEDED, OutcomeKind.BUSY, OutcomeKind.DUPLICATE}
    assert end_state(world, body) == REFERENCE
    exactly_once(world.events(), FULL_EVENTS)


@pytest.mark.parametrize("point", CHECKPOINTS)
def test_killed_at_each_checkpoint_then_redelivered_ends_as_an_uninterrupted_run(world: World, point: str) -> None:
    """Killed after a save and before the send that follows it (``.saved``), or after the send and
    before it was confirmed (``.sent``): the redelivery sends what is pending, once."""
    body = full_request(world)
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(body, config=config, checkpoint=kill_at(point))
    time.sleep(1.2)  # the killed delivery's leases lapse
    outcome = world.run_to_the_end(body, config=config)
    assert outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.DUPLICATE), (outcome.reason, outcome.message)
    assert world.state_row(body["requestId"])["Status"] == "succeeded"
    assert end_state(world, body) == REFERENCE
    assert palette_holds_key_vaults_secret(world, body["accountName"])
    exactly_once(world.events(), FULL_EVENTS)


@pytest.mark.parametrize("point", ["failed.saved", "failed.sent", "rejected.saved"])
def test_killed_before_a_failure_is_announced_the_redelivery_announces_it(world: World, point: str) -> None:
    body = world.request(palette={"project": "No-Such-Project"})
    if point == "rejected.saved":
        body["azure"]["clientId"] = "not-a-guid"
    with pytest.raises(HostKilled):
        world.run(body, checkpoint=kill_at(point))
    again = world.run(body)
    assert again.kind in (OutcomeKind.DUPLICATE, OutcomeKind.REJECTED, OutcomeKind.FAILED)
    events = world.events()
    exactly_once(events, ["failed"] if point == "rejected.saved" else ["requested", "failed"])


def test_a_topic_outage_delays_events_and_the_next_delivery_sends_each_once(world: World) -> None:
    """The topic refuses every send (the real SDK against an entity that is not there): the
    onboarding still finishes, its events wait in the row, and the next delivery of the finished
    request sends each of them once."""
    from azure.servicebus import ServiceBusClient

    from shared.clients.events import EventPublisher

    body = full_request(world)
    down = ServiceBusClient.from_connection_string(world.stack.settings["ServiceBusConnection"], retry_total=0)
    with EventPublisher(down.get_topic_sender("no-such-topic"), client=down) as unreachable:
        outcome = world.run(body, clients=dataclasses.replace(world.deps.clients, events=unreachable))
    assert outcome.kind is OutcomeKind.SUCCEEDED
    row = world.state_row(body["requestId"])
    assert row["OutboxPending"] is True
    assert world.events(wait=0.5) == []
    assert world.run(body).kind is OutcomeKind.DUPLICATE
    assert world.state_row(body["requestId"])["OutboxPending"] is False
    exactly_once(world.events(), FULL_EVENTS)


def test_the_sweeper_sends_events_a_topic_outage_left_behind(world: World) -> None:
    from azure.servicebus import ServiceBusClient

    from shared.clients.events import EventPublisher
    from shared.operations import sweep

    body = world.request()
    down = ServiceBusClient.from_connection_string(world.stack.settings["ServiceBusConnection"], retry_total=0)
    with EventPublisher(down.get_topic_sender("no-such-topic"), client=down) as unreachable:
        assert world.run(body, clients=dataclasses.replace(world.deps.clients, events=unreachable)).kind \
            is OutcomeKind.SUCCEEDED
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep)
    assert report.flushed == 1
    exactly_once(world.events(), ["requested", "secret.stored", "account.registered", "validated"])


# -------------------------------------------------------------------- lost responses and faults

def test_lost_graph_response_leaves_no_extra_password(world: World) -> None:
    """addPassword happened but its answer never arrived: the step finds the orphan by its display
    name (which carries the requestId), removes it, and adds the one it keeps, in one delivery."""
    body = world.request()
    world.identity_fault(method="POST", path="/addPassword$", dropAfterHandling=True, times=1)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}
    assert palette_holds_key_vaults_secret(world, body["accountName"])


def test_key_vault_down_after_the_password_was_made_leaves_no_extra_password(world: World) -> None:
    """The value could not reach Key Vault: the password stays recorded in the request's row while
    it waits (its value can never be handed over later), and the resumed request removes it before
    it makes the one it keeps."""
    body = world.request()
    world.keyvault_fault(method="PUT", path="^/secrets/", status=503, times=20)
    first = world.run(body)
    assert first.kind is OutcomeKind.RETRY_LATER
    [lost] = world.graph_passwords(body["azure"]["clientId"])
    made = json.loads(world.state_row(body["requestId"])["Made"])
    assert made["password"]["state"] == "sending" and made["password"]["find"]["displayName"] == lost["displayName"]
    requests.delete(f"{world.stack.keyvault.url}/_devstack/faults", verify=world.verify,  # type: ignore[union-attr]
                    timeout=10)
    assert world.run(body, retry_token=first.retry_token).kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


@pytest.mark.parametrize("path", ["^/v1/cloudaccounts/azure$", "^/v1/users/assets/sshkeys$", "^/v1/apiKeys$"])
@pytest.mark.parametrize("fault", [{"dropAfterHandling": True}, {"status": 503, "afterHandling": True}])
def test_lost_palette_create_response_creates_nothing_twice(world: World, path: str, fault: dict[str, Any]) -> None:
    """Palette made the object but the answer was lost (or was a 503 after the work): creating POSTs
    are not retried blindly; the step finds what it made by its annotations instead of making a
    second one (an API key whose value was lost is replaced, so there is still exactly one and its
    value is in Key Vault)."""
    body = full_request(world)
    world.palette_config(uniqueNames=False)  # nothing may rely on Palette refusing a duplicate name
    world.palette_fault(method="POST", path=path, times=1, **fault)
    outcome = world.run_to_the_end(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    assert end_state(world, body) == REFERENCE
    value = world.secret_value(names(body["accountName"])["api-key"])
    info = requests.get(f"{world.stack.settings['PALETTE_ENDPOINT']}/v1/users/info", headers={"ApiKey": value},
                        timeout=10)
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


def _impatient(world: World) -> Any:
    settings = world.deps.settings
    palette = PaletteClient(settings.palette_endpoint, settings.palette_api_key,
                            retry=RetryPolicy(max_attempts=1, budget_seconds=1))
    return palette, dataclasses.replace(world.deps.clients, palette=palette)


def test_palette_down_past_the_budget_resumes_later_without_repeating_steps(world: World) -> None:
    body = world.request()
    palette, clients = _impatient(world)
    world.palette_fault(path="^/v1/cloudaccounts/azure", status=503)
    first = world.run(body, clients=clients)
    assert first.kind is OutcomeKind.RETRY_LATER
    assert first.retry_in_seconds == world.deps.settings.pipeline.retry_delays_seconds[0] and first.retry_token
    row = world.state_row(body["requestId"])
    assert row["Status"] == "waiting" and row["Attempts"] == 1
    requests.delete(f"{world.stack.palette.url}/_devstack/faults", timeout=10)  # type: ignore[union-attr]
    second = world.run(body, clients=clients, retry_token=first.retry_token)
    palette.close()
    assert second.kind is OutcomeKind.SUCCEEDED
    assert end_state(world, body) == {"accounts": 1, "graph_passwords": 1, "client_secret_versions": 1}


def test_the_retry_budget_is_the_requests_whatever_message_carries_it(world: World) -> None:
    """Copies of one request (its scheduled retry, a busy copy, a redelivery) share one budget,
    kept in its row: once it is spent the request fails, whichever copy arrives."""
    body = world.request()
    palette, clients = _impatient(world)
    world.palette_fault(path="^/v1/dashboard", status=503)
    delays = world.deps.settings.pipeline.retry_delays_seconds
    token = ""
    for attempt in range(len(delays)):
        outcome = world.run(body, clients=clients, retry_token=token)
        assert outcome.kind is OutcomeKind.RETRY_LATER, attempt
        token = outcome.retry_token
        # An early copy without the token (a busy copy, a duplicate) neither resumes nor counts.
        assert world.run(body, clients=clients).kind is OutcomeKind.NOT_DUE
    last = world.run(body, clients=clients, retry_token=token)
    palette.close()
    assert last.kind is OutcomeKind.FAILED and last.reason == "dependency_unavailable"
    assert world.state_row(body["requestId"])["Attempts"] == len(delays)
    failed = [e for e in world.events() if e["type"] == "palette.onboarding.failed"]
    assert len(failed) == 1 and failed[0]["data"]["reason"] == "dependency_unavailable"


def test_a_lease_held_by_a_live_delivery_is_respected_and_an_expired_one_taken_over(world: World) -> None:
    body = world.request()
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(body, config=config, checkpoint=kill_at("secret.published"))
    store = world.deps.clients.state
    record = store.get(body["requestId"])
    assert record is not None
    record.lease_owner = "another-worker"
    record.lease_expires_at = iso(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    store.replace(record)
    busy = world.run(body, config=config)
    assert busy.kind is OutcomeKind.BUSY and busy.retry_in_seconds and busy.retry_in_seconds > 250
    record = store.get(body["requestId"])
    assert record is not None
    record.lease_expires_at = iso(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))  # that worker was killed
    store.replace(record)
    time.sleep(1.2)
    assert world.run(body, config=config).kind is OutcomeKind.SUCCEEDED
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


def test_a_new_request_for_an_account_keeps_the_ssh_key_generated_before(world: World) -> None:
    """Re-onboarding with a new requestId and sshKey.generate finds the key pair this app made and
    Palette holds under that name, instead of calling it a clash or making a second key."""
    first = world.request(sshKey={"name": "kept-key", "generate": True})
    assert world.run(first).kind is OutcomeKind.SUCCEEDED
    second = dict(first, requestId=first["requestId"] + "-again")
    assert world.run(second).kind is OutcomeKind.SUCCEEDED
    palette = world.palette_state()
    assert len([k for k in palette["sshKeys"] if k["name"] == "kept-key"]) == 1
    assert len(world.secret_versions(names(first["accountName"])["ssh-key"])) == 1


# --------------------------------------------------------------------- two requests, one account

def test_two_requests_for_one_account_at_once_make_one_account(world: World) -> None:
    """Two tickets name the same account at the same moment, and Palette (like the real API, as far
    as anyone documents) does not refuse a duplicate name: the account lease makes the second wait,
    then update the first's account. One account, and Palette holds the secret Key Vault holds."""
    world.palette_config(uniqueNames=False)
    client_id = world.register_app()
    first = world.request(client_id=client_id, accountName="shared-account")
    second = world.request(client_id=client_id, accountName="shared-account")
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def deliver(body: dict[str, Any]) -> None:
        barrier.wait()
        outcomes[body["requestId"]] = world.run_to_the_end(body)

    threads = [threading.Thread(target=deliver, args=(body,)) for body in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert [o.kind for o in outcomes.values()] == [OutcomeKind.SUCCEEDED] * 2, outcomes
    accounts = world.palette_accounts("shared-account")
    assert len(accounts) == 1
    assert palette_holds_key_vaults_secret(world, "shared-account")
    actions = sorted(json.loads(world.state_row(b["requestId"])["Results"])["accountAction"] for b in (first, second))
    assert actions == ["created", "updated"]


def test_a_request_for_a_busy_account_waits_without_using_its_retry_budget(world: World) -> None:
    from shared.state import NameLease, RequestRecord, RequestStatus

    body = world.request()
    store = world.deps.clients.state
    store.create(RequestRecord(request_id="OTHER-TICKET", account_name=body["accountName"], fingerprint="x",
                                  status=RequestStatus.RUNNING))
    store.create_lease(NameLease(key=f"account:{body['accountName']}", owner="OTHER-TICKET",
                                 expires_at=iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))))
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.BUSY and outcome.reason == "account_busy"
    assert "OTHER-TICKET" in outcome.message and outcome.retry_token
    assert world.state_row(body["requestId"])["Attempts"] == 0
    time.sleep(outcome.retry_in_seconds or 0)
    assert world.run(body, retry_token=outcome.retry_token).kind is OutcomeKind.SUCCEEDED



# ------------------------------------------------------------------------------ crash-safe steps

def test_a_defect_is_redelivered_then_failed_as_internal_error(world: World) -> None:
    """A bug (here: a step that raises something no rule knows) is redelivered; a request that
    keeps hitting it ends failed with internal_error and an event, not silently dead-lettered."""
    body = world.request()

    def bug(name: str) -> None:
        if name == "claimed.saved":  # every delivery passes here
            raise ZeroDivisionError("a bug")

    for _ in range(world.deps.settings.pipeline.max_defects - 1):
        with pytest.raises(ZeroDivisionError):
            world.run(body, checkpoint=bug)
    last = world.run(body, checkpoint=bug)
    assert last.kind is OutcomeKind.FAILED and last.reason == "internal_error"
    events = world.events()
    assert [e["data"]["reason"] for e in events if e["type"].endswith(".failed")] == ["internal_error"]


def test_process_request_without_a_body_dict_is_fine(world: World) -> None:
    body = world.request()
    outcome = process_request(body, world.deps.clients, world.deps.settings.pipeline, owner="dict-body")
    assert outcome.kind is OutcomeKind.SUCCEEDED
