"""What a real tenant and at-least-once delivery throw at the pipeline, each case end to end:
credentials never orphaned, objects never adopted without proof, names that cannot be abused,
tickets never burned, rows never stuck, and every log line traceable to its request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
from pydantic import SecretStr

from shared.credentials import SecretKind, secret_name
from shared.engine import OutcomeKind
from shared.onboarding.intake import submit
from shared.operations import handle_dead_letter, sweep
from tests.onboarding.test_failures import _assert_failed, _everything, _short
from tests.onboarding.test_resilience import HostKilled, exactly_once, full_request, kill_at, short_leases

if TYPE_CHECKING:
    from tests.onboarding.conftest import World


def _later(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)


def _failed_event(world: World) -> dict[str, Any]:
    failed = [e for e in world.events() if _short(e) == "failed"]
    assert len(failed) == 1, failed
    data: dict[str, Any] = failed[0]["data"]
    return data


# ------------------------------------------------------------ nothing made is left unheld

@pytest.mark.parametrize("status", [403, 409])
def test_key_vault_refusing_the_client_secret_takes_the_new_password_back(world: World, status: int) -> None:
    body = world.request()
    name = secret_name(body["accountName"], SecretKind.CLIENT_SECRET)
    world.keyvault_fault(method="PUT", path=f"^/secrets/{name}$", status=status)
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == {403: "key_vault_forbidden", 409: "key_vault_conflict"}[status]
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    assert world.palette_accounts(body["accountName"]) == []
    data = _failed_event(world)
    assert data["step"] == "secret"
    assert len(data["removed"]) == 1 and data["removed"][0].startswith("Graph password ")
    assert "removed again" in data["message"]


@pytest.mark.parametrize("status", [403, 409])
def test_key_vault_refusing_the_api_key_value_deletes_the_new_api_key(world: World, status: int) -> None:
    body = full_request(world)
    name = secret_name(body["accountName"], SecretKind.API_KEY)
    world.keyvault_fault(method="PUT", path=f"^/secrets/{name}$", status=status)
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason.startswith("key_vault_")
    assert [k for k in world.palette_state()["apiKeys"] if k["name"] == body["apiKey"]["name"]] == []
    data = _failed_event(world)
    assert data["step"] == "apikey" and any(item.startswith("Palette API key ") for item in data["removed"])
    # The request failed, so nothing else it made stays either: the other branches' work is taken back.
    assert world.palette_accounts(body["accountName"]) == []
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    assert [k for k in world.palette_state()["sshKeys"] if k["name"] == body["sshKey"]["name"]] == []


def test_a_password_that_cannot_be_removed_yet_is_removed_by_the_sweeper(world: World) -> None:
    body = world.request()
    name = secret_name(body["accountName"], SecretKind.CLIENT_SECRET)
    world.keyvault_fault(method="PUT", path=f"^/secrets/{name}$", status=403)
    world.identity_fault(method="POST", path="/removePassword$", status=403)  # ownership revoked meanwhile
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED
    assert len(world.graph_passwords(body["azure"]["clientId"])) == 1  # not removable just now
    data = _failed_event(world)
    assert data["left"] and data["left"][0].startswith("Graph password ")
    requests.delete(f"{world.stack.identity_https.url}/_devstack/faults", verify=world.verify,  # type: ignore[union-attr]
                    timeout=10)
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep)
    assert report.cleaned == 1
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    assert world.state_row(body["requestId"])["CleanupPending"] is False


def test_a_soft_deleted_secret_in_the_way_is_named_before_anything_is_made(world: World) -> None:
    body = world.request()
    name = secret_name(body["accountName"], SecretKind.CLIENT_SECRET)
    store = world.deps.clients.secrets
    store.set_secret(name, SecretStr("old"), content_type="text/plain", tags={})
    store._client.begin_delete_secret(name).wait()
    before = _everything(world)
    outcome = world.run(body)
    data = _assert_failed(world, body, outcome, "secret_name_deleted", step="check",
                          mentions=(name, "recover", "purge"))
    assert data["field"] == "accountName"
    assert _everything(world) == before


def test_an_operator_secret_that_has_the_products_name_is_not_overwritten(world: World) -> None:
    body = world.request()
    name = secret_name(body["accountName"], SecretKind.CLIENT_SECRET)
    world.deps.clients.secrets.set_secret(name, SecretStr("an operator's"), content_type="text/plain", tags={})
    before = _everything(world)
    outcome = world.run(body)
    _assert_failed(world, body, outcome, "secret_name_clash", step="check", mentions=(name,))
    assert _everything(world) == before


# -------------------------------------------------------------------- proof of authorship

def test_an_api_key_of_that_name_made_by_someone_else_meanwhile_is_never_deleted(world: World) -> None:
    """The create's answer was lost, and before the retry another tool made a key of the same name:
    the retry cannot prove that key is its own, so it leaves it alone and fails clearly."""
    body = full_request(world)
    world.palette_config(uniqueNames=False)
    world.palette_fault(method="POST", path="^/v1/apiKeys$", drop=True)
    first = world.run(body)
    assert first.kind is OutcomeKind.RETRY_LATER
    user = next(u["uid"] for u in world.palette_state()["users"] if u["emailId"] == "admin@example.com")
    requests.delete(f"{world.stack.palette.url}/_devstack/faults", timeout=10)  # type: ignore[union-attr]
    theirs = world.palette_call("POST", "/v1/apiKeys", body={
        "metadata": {"name": body["apiKey"]["name"]},
        "spec": {"userUid": user, "expiry": "2030-01-01T00:00:00.000Z"}})
    assert theirs.status_code == 201, theirs.text
    outcome = world.run(body, retry_token=first.retry_token)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "api_key_name_clash"
    keys = [k for k in world.palette_state()["apiKeys"] if k["name"] == body["apiKey"]["name"]]
    assert [k["uid"] for k in keys] == [theirs.json()["uid"]]


def test_everything_the_product_creates_carries_its_proof(world: World) -> None:
    body = full_request(world)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    palette = world.palette_state()
    proof = {"palette-onboarding/managed-by": "palette-onboarding", "palette-onboarding/request-id": body["requestId"]}
    account = world.palette_accounts(body["accountName"])[0]
    assert proof.items() <= account["annotations"].items()
    key = next(k for k in palette["apiKeys"] if k["name"] == body["apiKey"]["name"])
    assert proof.items() <= key["annotations"].items()
    ssh = world.palette_call("GET", "/v1/users/assets/sshkeys", project_uid=world.project_uid("Default")).json()
    assert proof.items() <= ssh["items"][0]["metadata"]["annotations"].items()
    passwords = world.graph_passwords(body["azure"]["clientId"])
    assert [p["displayName"] for p in passwords] == [f"palette-onboarding {body['accountName']} {body['requestId']}"]


# ---------------------------------------------------------- what a request may name

def _product_secrets(world: World) -> dict[str, str]:
    """Onboard an account with every option; the names of what the product keeps for it."""
    body = full_request(world)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    return {kind.value: secret_name(body["accountName"], kind) for kind in SecretKind} | {
        "account": body["accountName"], "clientId": body["azure"]["clientId"]}


@pytest.mark.parametrize("kind", ["client-secret", "ssh-key", "api-key"])
def test_a_request_cannot_name_another_accounts_secret(world: World, kind: str) -> None:
    theirs = _product_secrets(world)
    world.events()
    body = world.request(client_id=theirs["clientId"])
    body["azure"]["secret"] = {"source": "keyVault", "secretName": theirs[kind]}
    before = _everything(world)
    outcome = world.run(body)
    data = _assert_failed(world, body, outcome, "secret_not_allowed", step="check", mentions=(theirs[kind],))
    assert data["field"] == "azure.secret.secretName"
    assert _everything(world) == before


def test_an_accounts_own_client_secret_may_be_named(world: World) -> None:
    mine = _product_secrets(world)
    body = world.request(client_id=mine["clientId"], accountName=mine["account"])
    body["azure"]["secret"] = {"source": "keyVault", "secretName": mine["client-secret"]}
    assert world.run(body).kind is OutcomeKind.SUCCEEDED


def test_the_allowed_prefix_setting_limits_which_secrets_a_request_may_name(world: World) -> None:
    config = dataclasses.replace(world.deps.settings.pipeline, allowed_secret_prefix="ops-")
    body = world.request()
    body["azure"]["secret"] = {"source": "keyVault", "secretName": "payroll-db-password"}
    outcome = world.run(body, config=config)
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.errors == [{"path": "azure.secret.secretName", "message": outcome.errors[0]["message"]}]
    assert "'ops-'" in outcome.errors[0]["message"]


def test_a_name_valid_in_the_request_never_fails_later(world: World) -> None:
    """An API key named "!!!" is a valid Palette name; every name made from it is made at parse time,
    and the onboarding goes through instead of dying after the account was registered."""
    body = world.request(apiKey={"name": "!!!", "user": "admin@example.com", "expiresInDays": 5})
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert world.secret_versions(secret_name(body["accountName"], SecretKind.API_KEY))


# ------------------------------------------------------------------- tickets never burned

def test_an_invalid_body_can_be_replaced_by_a_valid_one_under_the_same_request_id(world: World) -> None:
    body = world.request()
    bad = json.loads(json.dumps(body))
    bad["azure"]["clientId"] = "not-a-guid"
    assert world.run(bad).kind is OutcomeKind.REJECTED
    fixed = world.run(body)
    assert fixed.kind is OutcomeKind.SUCCEEDED, (fixed.reason, fixed.message)
    events = world.events()
    assert _short(events[0]) == "failed"
    exactly_once(events[1:], ["requested", "secret.stored", "account.registered", "validated"])


def test_a_valid_body_over_http_replaces_one_rejected_on_the_queue(world: World) -> None:
    body = world.request()
    bad = dict(body, clusterTypes="aks")
    assert world.run(bad).kind is OutcomeKind.REJECTED
    record = submit(json.dumps(body).encode(), world.deps.clients, world.deps.queue, allow_inline_secret=False,
                    config=world.deps.settings.pipeline)
    assert record.status.value == "queued"


def test_two_bad_messages_without_a_request_id_are_both_announced(world: World) -> None:
    for message_id in ("msg-1", "msg-2"):
        assert world.run(b'{"not": "a request"}', message_id=message_id).kind is OutcomeKind.REJECTED
    events = world.events()
    assert len(events) == 2 and len({e["id"] for e in events}) == 2
    # The same message redelivered is not announced again.
    assert world.run(b'{"not": "a request"}', message_id="msg-1").kind is OutcomeKind.REJECTED
    assert world.events() == []


# ---------------------------------------------------------------------------- never stuck

def _unsendable_queue(world: World) -> Any:
    from azure.servicebus import ServiceBusClient

    from shared.clients.queue import RequestQueue

    down = ServiceBusClient.from_connection_string(world.stack.settings["ServiceBusConnection"], retry_total=0)
    return RequestQueue(down.get_queue_sender("no-such-queue"), client=down)


def _queued_messages(world: World) -> list[Any]:
    from azure.servicebus import ServiceBusClient

    settings = world.stack.settings
    found = []
    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(settings["ONBOARDING_QUEUE"], max_wait_time=1) as receiver:
        for message in receiver.receive_messages(max_message_count=20, max_wait_time=1):
            found.append(message)
            receiver.complete_message(message)
    return found


def test_a_row_left_queued_by_a_failed_send_is_sent_again(world: World) -> None:
    body = world.request()
    with _unsendable_queue(world) as queue, pytest.raises(Exception):  # noqa: B017 - the SDK's own error
        submit(json.dumps(body).encode(), world.deps.clients, queue, allow_inline_secret=False,
               config=world.deps.settings.pipeline)
    assert world.state_row(body["requestId"])["Status"] == "queued"
    assert sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep).resent == 0  # too fresh
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep, now=_later(3))
    assert report.resent == 1
    [message] = _queued_messages(world)
    assert message.message_id == body["requestId"]
    assert world.run(b"".join(message.body)).kind is OutcomeKind.SUCCEEDED


def test_a_running_row_whose_message_was_lost_is_re_driven(world: World) -> None:
    body = world.request()
    with pytest.raises(HostKilled):
        world.run(body, config=short_leases(world), checkpoint=kill_at("secret.saved"))
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep, now=_later(3))
    assert report.redriven == 1
    [message] = _queued_messages(world)
    assert message.message_id == f"{body['requestId']}/redrive/1"
    assert world.run(b"".join(message.body)).kind is OutcomeKind.SUCCEEDED
    exactly_once(world.events(), ["requested", "secret.stored", "account.registered", "validated"])


def test_a_waiting_row_whose_delayed_copy_never_came_is_re_driven_with_its_token(world: World) -> None:
    body = world.request()
    world.palette_fault(path="^/v1/cloudaccounts/azure", status=503)
    settings = world.deps.settings
    from shared.clients.http import RetryPolicy
    from shared.clients.palette import PaletteClient

    impatient = PaletteClient(settings.palette_endpoint, settings.palette_api_key,
                              retry=RetryPolicy(max_attempts=1, budget_seconds=1))
    paused = world.run(body, clients=dataclasses.replace(world.deps.clients, palette=impatient))
    impatient.close()
    assert paused.kind is OutcomeKind.RETRY_LATER  # ... and the trigger's schedule call "failed"
    requests.delete(f"{world.stack.palette.url}/_devstack/faults", timeout=10)  # type: ignore[union-attr]
    assert sweep(world.deps.clients, world.deps.queue, settings.sweep).redriven == 0  # not due yet
    report = sweep(world.deps.clients, world.deps.queue, settings.sweep, now=_later(5))
    assert report.redriven == 1
    [message] = _queued_messages(world)
    token = message.application_properties[b"retryToken"].decode()
    assert token == paused.retry_token
    assert world.run(b"".join(message.body), retry_token=token).kind is OutcomeKind.SUCCEEDED


def test_a_request_that_never_finishes_is_failed_as_stuck(world: World) -> None:
    body = world.request()
    with pytest.raises(HostKilled):
        world.run(body, config=short_leases(world), checkpoint=kill_at("check.saved"))
    world.events()
    for _ in range(world.deps.settings.sweep.max_redrives):
        sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep, now=_later(3))
    _queued_messages(world)  # the re-drives, never delivered
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.sweep, now=_later(3))
    assert report.failed == 1
    row = world.state_row(body["requestId"])
    assert row["Status"] == "failed" and row["ErrorReason"] == "stuck"
    assert _failed_event(world)["reason"] == "stuck"


def test_a_dead_lettered_message_fails_its_request_with_the_reason(world: World) -> None:
    body = world.request()
    with pytest.raises(HostKilled):
        world.run(body, config=short_leases(world), checkpoint=kill_at("check.saved"))
    world.events()
    outcome = handle_dead_letter(json.dumps(body).encode(), world.deps.clients, message_id="m-1",
                                 reason="MaxDeliveryCountExceeded", description="delivered 10 times")
    assert outcome.kind is OutcomeKind.FAILED
    row = world.state_row(body["requestId"])
    assert row["Status"] == "failed" and row["ErrorReason"] == "dead_lettered"
    data = _failed_event(world)
    assert "MaxDeliveryCountExceeded" in data["message"]
    # A dead-lettered copy of a request that finished meanwhile changes nothing.
    again = handle_dead_letter(json.dumps(body).encode(), world.deps.clients, message_id="m-2", reason="x",
                               description="")
    assert again.kind is OutcomeKind.DUPLICATE


def test_a_dead_lettered_message_that_names_no_request_is_announced_by_its_message_id(world: World) -> None:
    import datetime as dt

    enqueued = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    outcome = handle_dead_letter(b"not json", world.deps.clients, message_id="m-unreadable",
                                 reason="MaxDeliveryCountExceeded", description="", enqueued_at=enqueued)
    assert outcome.kind is OutcomeKind.FAILED
    data = _failed_event(world)
    assert (data["requestId"], data["reason"]) == ("unknown", "dead_lettered")
    assert (data["messageId"], data["enqueuedTime"]) == ("m-unreadable", "2030-01-02T03:04:05.000Z")


def test_a_dead_lettered_conflicting_body_leaves_the_running_request_alone(world: World) -> None:
    body = world.request()
    with pytest.raises(HostKilled):
        world.run(body, config=short_leases(world), checkpoint=kill_at("check.saved"))
    other = dict(body, accountName=body["accountName"] + "-x")
    handle_dead_letter(json.dumps(other).encode(), world.deps.clients, message_id="m-3", reason="x", description="")
    assert world.state_row(body["requestId"])["Status"] == "running"


# --------------------------------------------------------------------------- traceable logs

def test_every_pipeline_log_line_carries_request_step_and_message(world: World,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    body = world.request()
    message_id = f"msg-{uuid.uuid4().hex[:6]}"
    from shared.logs import bind

    with bind(invocationId="inv-1"):
        assert world.run(body, message_id=message_id).kind is OutcomeKind.SUCCEEDED
    ours = [r for r in caplog.records if r.name.startswith(("shared.engine", "shared.onboarding"))]
    assert ours
    for record in ours:
        assert getattr(record, "requestId", None) == body["requestId"], record.getMessage()
        assert getattr(record, "messageId", None) == message_id
        assert getattr(record, "invocationId", None) == "inv-1"
    assert {getattr(r, "step", None) for r in ours} >= {"check", "secret", "validate", "register"}


def test_sdk_http_logging_is_off_below_warning() -> None:
    import function_app  # noqa: F401 - configures the SDK loggers, as the host's import does

    for name in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "azure.servicebus"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING


def test_a_killed_hosts_lease_lapses_within_one_lease_period(world: World) -> None:
    body = world.request()
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(body, config=config, checkpoint=kill_at("secret.saved"))
    assert world.run(body, config=config).kind is OutcomeKind.BUSY
    time.sleep(config.lease_seconds + 0.2)
    assert world.run(body, config=config).kind is OutcomeKind.SUCCEEDED
