"""Offboarding end to end, through the real SDKs against the local stack: what the product made
for an account is taken out (the Palette account, the SSH key when asked, the API key unless told
not to, its Graph passwords, its Key Vault secrets soft-deleted), what it did not make is left
and reported, and a crash or a lost response at any point ends as an uninterrupted run would."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared.credentials import SecretKind, secret_name
from shared.engine import OutcomeKind
from shared.offboarding.models import OffboardingRequest
from shared.state.inventory import MANAGED, OFFBOARDED
from tests.onboarding.conftest import graph_add_password
from tests.onboarding.test_resilience import HostKilled, exactly_once, kill_at, short_leases

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

API_USER = "admin@example.com"


# ------------------------------------------------------------------------------------ helpers

def onboard(world: World, **overrides: Any) -> dict[str, Any]:
    body = world.request(**overrides)
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    world.events()
    return body


def offboarding(account: str, **options: Any) -> dict[str, Any]:
    body = {"operation": "offboard", "requestId": f"OFF-{uuid.uuid4().hex[:10]}", "accountName": account}
    body.update(options)
    return body


def offboard(world: World, account: str, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one offboarding to the end; returns its body and its ``offboarded`` event."""
    body = offboarding(account, **options)
    outcome = world.run_to_the_end(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    [event] = [e for e in world.events() if e["type"] == "palette.onboarding.offboarded"]
    return body, event


def ed25519_public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def our_passwords(world: World, body: dict[str, Any]) -> list[str]:
    prefix = f"palette-onboarding {body['accountName']} "
    return [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])
            if str(p.get("displayName", "")).startswith(prefix)]


def live_secrets(world: World, account: str) -> list[str]:
    names = {secret_name(account, kind) for kind in SecretKind}
    return sorted(s["name"] for s in world.keyvault_state()["secrets"] if s["name"] in names)


def deleted_secrets(world: World, account: str) -> list[str]:
    names = {secret_name(account, kind) for kind in SecretKind}
    return sorted(s["name"] for s in world.keyvault_state()["deletedSecrets"] if s["name"] in names)


def ssh_keys(world: World, name: str) -> list[dict[str, Any]]:
    return [k for k in world.palette_state()["sshKeys"] if k["name"] == name]


def api_keys(world: World, name: str) -> list[dict[str, Any]]:
    return [k for k in world.palette_state()["apiKeys"] if k["name"] == name]


def seed_cluster(world: World, name: str, account_uid: str, project_uid: str | None = None) -> str:
    """A Palette cluster that uses the cloud account; returns its uid."""
    assert world.stack.palette is not None
    spec = {"name": name, "cloudAccountUid": account_uid, **({"projectUid": project_uid} if project_uid else {})}
    response = requests.post(f"{world.stack.palette.url}/_devstack/clusters", json=spec, timeout=10)
    response.raise_for_status()
    return str(response.json()["uid"])


def remove_cluster(world: World, uid: str) -> None:
    assert world.stack.palette is not None
    requests.delete(f"{world.stack.palette.url}/_devstack/clusters/{uid}", timeout=10).raise_for_status()


def services(world: World) -> dict[str, Any]:
    """What Palette, Key Vault and Entra hold (the state table and queue left out)."""
    snapshot = world.snapshot()
    return {key: snapshot[key] for key in ("palette", "keyVault", "identity")}


def assert_offboarded(world: World, body: dict[str, Any], *, ssh_key_kept: bool = True) -> None:
    """Nothing the product made for the account is live any more (but a kept SSH key)."""
    account = body["accountName"]
    assert world.palette_accounts(account) == []
    assert our_passwords(world, body) == []
    assert live_secrets(world, account) == []
    if body.get("apiKey"):
        assert api_keys(world, body["apiKey"]["name"]) == []
    if body.get("sshKey"):
        assert len(ssh_keys(world, body["sshKey"]["name"])) == (1 if ssh_key_kept else 0)
    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.status == OFFBOARDED


def full_request(world: World) -> dict[str, Any]:
    body = world.request(sshKey={"name": "off-key", "generate": True}, clusterTypes=["aks"])
    body["apiKey"] = {"name": f"key-{body['requestId'][-12:]}", "user": API_USER, "expiresInDays": 30}
    return body


# ------------------------------------------------------------------- after each onboarding option

OPTIONS: dict[str, dict[str, Any]] = {
    "generated-secret": {},
    "project-scope": {"palette": {"scope": "project", "project": "Team-A"}},
    "given-ssh-key": {"sshKey": {"name": "given-key", "publicKey": ed25519_public_key()}},
    "generated-ssh-key": {"sshKey": {"name": "made-key", "generate": True}},
    "api-key": {"apiKey": {"name": "off-api-key", "user": API_USER, "expiresInDays": 30}},
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("remove_ssh_key", [False, True], ids=["keep-ssh-key", "remove-ssh-key"])
def test_offboarding_after_each_onboarding_option_takes_out_what_the_product_made(
        world: World, option: str, remove_ssh_key: bool) -> None:
    body = onboard(world, **OPTIONS[option])
    account = body["accountName"]
    written = live_secrets(world, account)
    assert written

    _, event = offboard(world, account, removeSshKey=remove_ssh_key)

    assert_offboarded(world, body, ssh_key_kept=not remove_ssh_key)
    assert deleted_secrets(world, account) == written  # soft-deleted, recoverable, never purged
    removed = event["data"]["removed"]
    assert any(item.startswith("Palette cloud account") for item in removed)
    assert sum(item.startswith("Graph password") for item in removed) == 1
    assert sum(item.startswith("Key Vault secret") for item in removed) == len(written)
    if body.get("sshKey"):
        mentioned = removed if remove_ssh_key else event["data"]["left"]
        assert any(item.startswith(f"SSH key {body['sshKey']['name']}") for item in mentioned)
    assert event["subject"] == account and event["data"]["outcome"] == "offboarded"


def test_a_key_vault_sourced_secret_and_its_password_are_the_operators_and_stay(world: World) -> None:
    client_id = world.register_app()
    added = graph_add_password(world, client_id, "made by the app owner")
    world.deps.clients.secrets.set_secret(f"ops-{client_id[:8]}", _secret(added["secretText"]),
                                          content_type="text/plain", tags={})
    body = onboard(world, client_id=client_id, azure={
        "tenantId": world.request()["azure"]["tenantId"], "clientId": client_id,
        "secret": {"source": "keyVault", "secretName": f"ops-{client_id[:8]}"}})

    _, event = offboard(world, body["accountName"])

    assert world.palette_accounts(body["accountName"]) == []
    assert [p["keyId"] for p in world.graph_passwords(client_id)] == [added["keyId"]]
    assert world.secret_versions(f"ops-{client_id[:8]}")  # the operator's secret is untouched
    left = " ".join(event["data"]["left"])
    assert added["keyId"] in left and "not made by this product" in left
    assert f"ops-{client_id[:8]}" in left


def test_every_option_at_once_with_both_removals(world: World) -> None:
    body = onboard(world, **{k: v for k, v in full_request(world).items() if k not in ("requestId", "accountName")})
    _, event = offboard(world, body["accountName"], removeSshKey=True)
    assert_offboarded(world, body, ssh_key_kept=False)
    assert event["data"]["left"] == []


def test_the_api_key_is_kept_when_asked_and_still_authenticates(world: World) -> None:
    body = onboard(world, apiKey={"name": "kept-api-key", "user": API_USER, "expiresInDays": 30})
    value = world.secret_value(secret_name(body["accountName"], SecretKind.API_KEY))

    _, event = offboard(world, body["accountName"], removeApiKey=False)

    [key] = api_keys(world, "kept-api-key")
    assert key["isActive"]
    assert world.palette_call("GET", "/v1/users/info", api_key=value).status_code == 200
    assert any("removeApiKey is false" in item for item in event["data"]["left"])


def test_a_password_someone_else_added_to_the_app_survives_and_is_reported(world: World) -> None:
    body = onboard(world)
    client_id = body["azure"]["clientId"]
    foreign = graph_add_password(world, client_id, "break-glass, added by hand")

    _, event = offboard(world, body["accountName"])

    assert [p["keyId"] for p in world.graph_passwords(client_id)] == [foreign["keyId"]]
    assert f"Graph password {foreign['keyId']}: not made by this product" in event["data"]["left"]


def test_a_backup_location_on_the_same_principal_is_left_unchanged_and_named(world: World) -> None:
    """Another team's backup location signs in with the account's secret: the offboarding neither
    deletes nor changes it, and says, in the event and in its state, that it leaves it behind."""
    from tests.rotation.test_holders import current_secret, location, seed_location

    body = onboard(world, rotation={"alsoUpdate": ["backups-prod"]})
    uid = seed_location(world, "backups-prod", body["azure"]["clientId"], current_secret(world, body["accountName"]))
    before = location(world, uid)

    offboarding_body, event = offboard(world, body["accountName"])

    assert location(world, uid) == before
    [named] = [entry for entry in event["data"]["left"] if entry.startswith("Azure backup location ")]
    assert f"backups-prod ({uid})" in named and body["azure"]["clientId"] in named
    state = world.deps.clients.state.get(offboarding_body["requestId"])
    assert state is not None and any(f"({uid})" in entry for entry in json.loads(state.results["_left:passwords"]))


def test_rotated_accounts_lose_both_the_current_and_the_previous_password(world: World) -> None:
    from shared.rotation.sweep import rotate_now

    body = onboard(world)
    rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    assert [o.kind for o in world.deliver_queued()] == [OutcomeKind.SUCCEEDED]
    assert len(our_passwords(world, body)) == 2
    world.events()

    offboard(world, body["accountName"])

    assert our_passwords(world, body) == []


def test_an_ssh_key_another_managed_account_uses_is_kept(world: World) -> None:
    public_key = ed25519_public_key()
    first = onboard(world, sshKey={"name": "team-key", "publicKey": public_key})
    second = onboard(world, sshKey={"name": "team-key", "publicKey": public_key})

    _, event = offboard(world, first["accountName"], removeSshKey=True)

    assert len(ssh_keys(world, "team-key")) == 1
    assert any(second["accountName"] in item for item in event["data"]["left"])
    _, last = offboard(world, second["accountName"], removeSshKey=True)
    assert ssh_keys(world, "team-key") == []
    assert any(item.startswith("SSH key team-key") for item in last["data"]["removed"])


def test_an_ssh_key_the_product_did_not_upload_is_kept(world: World) -> None:
    public_key = ed25519_public_key()
    project = world.project_uid("Default")
    world.palette_call("POST", "/v1/users/assets/sshkeys", project_uid=project,
                       body={"metadata": {"name": "hand-key"}, "spec": {"publicKey": public_key}}).raise_for_status()
    body = onboard(world, sshKey={"name": "hand-key", "publicKey": public_key})

    _, event = offboard(world, body["accountName"], removeSshKey=True)

    assert len(ssh_keys(world, "hand-key")) == 1
    assert any("not uploaded by this product" in item for item in event["data"]["left"])


# ------------------------------------------------------------------------ refusals: nothing removed

def test_a_cluster_using_the_account_blocks_it_names_the_cluster_and_removes_nothing(world: World) -> None:
    body = onboard(world, apiKey={"name": "busy-api-key", "user": API_USER, "expiresInDays": 30})
    account = body["accountName"]
    [palette_account] = world.palette_accounts(account)
    seed_cluster(world, "prod-east-1", palette_account["uid"], world.project_uid("Default"))
    before = services(world)

    outcome = world.run_to_the_end(offboarding(account, removeSshKey=True))

    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "account_in_use"
    assert "prod-east-1" in outcome.message and "nothing was removed" in outcome.message
    assert services(world) == before
    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.status == MANAGED
    [failed] = [e for e in world.events() if e["type"] == "palette.onboarding.failed"]
    assert failed["data"]["reason"] == "account_in_use" and failed["data"]["step"] == "check"


def test_an_account_the_product_does_not_manage_is_refused(world: World) -> None:
    outcome = world.run(offboarding("never-onboarded"))
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "not_managed"


def test_an_account_whose_annotations_were_removed_by_hand_is_not_provably_ours(world: World) -> None:
    body = onboard(world)
    [held] = world.palette_accounts(body["accountName"])
    current = world.palette_call("GET", f"/v1/cloudaccounts/azure/{held['uid']}").json()
    current["metadata"]["annotations"] = {}
    current["spec"]["clientSecret"] = world.secret_value(secret_name(body["accountName"], SecretKind.CLIENT_SECRET))
    world.palette_call("PUT", f"/v1/cloudaccounts/azure/{held['uid']}", body=current).raise_for_status()
    before = services(world)

    outcome = world.run(offboarding(body["accountName"]))

    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "account_not_provably_ours"
    assert services(world) == before


def test_a_scope_that_does_not_match_the_inventory_is_refused(world: World) -> None:
    body = onboard(world)
    outcome = world.run(offboarding(body["accountName"], palette={"scope": "project", "project": "Team-A"}))
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "scope_mismatch"
    assert world.palette_accounts(body["accountName"])


def test_a_bad_offboarding_body_names_each_field(world: World) -> None:
    outcome = world.run({"operation": "offboard", "requestId": "OFF-1", "accountName": "Bad!",
                         "removeSshKey": "yes", "azure": {}})
    assert outcome.kind is OutcomeKind.REJECTED
    assert {"accountName", "removeSshKey", "azure"} <= {e["path"] for e in outcome.errors}


# ------------------------------------------------------------------------- idempotent, resumable

def test_a_second_offboarding_of_the_same_account_is_a_no_op(world: World) -> None:
    body = onboard(world, sshKey={"name": "twice-key", "generate": True})
    first, _ = offboard(world, body["accountName"], removeSshKey=True)
    before = services(world)

    _, again = offboard(world, body["accountName"], removeSshKey=True)

    assert services(world) == before
    assert again["data"]["outcome"] == "alreadyOffboarded" and again["data"]["removed"] == []
    assert again["data"]["offboardedBy"] == first["requestId"]
    redelivered = world.run(first)
    assert redelivered.kind is OutcomeKind.DUPLICATE
    assert world.events() == []


def test_the_palette_account_deleted_by_hand_first_is_already_gone_and_the_rest_goes(world: World) -> None:
    body = onboard(world)
    [held] = world.palette_accounts(body["accountName"])
    world.palette_call("DELETE", f"/v1/cloudaccounts/azure/{held['uid']}").raise_for_status()

    _, event = offboard(world, body["accountName"])

    assert_offboarded(world, body)
    assert "Palette cloud account: already gone" in event["data"]["left"]


CHECKPOINTS = ["claimed.saved", "check.saved", "account.removed", "account.saved", "keys.removed", "keys.saved",
               "passwords.removed", "passwords.saved", "secrets.removed", "secrets.saved", "inventory.saved",
               "inventory.sent"]


@pytest.mark.parametrize("point", CHECKPOINTS)
def test_killed_at_each_point_then_redelivered_ends_as_an_uninterrupted_offboarding(world: World,
                                                                                    point: str) -> None:
    body = onboard(world, **{k: v for k, v in full_request(world).items() if k not in ("requestId", "accountName")})
    message = offboarding(body["accountName"], removeSshKey=True)
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(message, config=config, checkpoint=kill_at(point))
    time.sleep(1.2)

    outcome = world.run_to_the_end(message, config=config)

    assert outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.DUPLICATE), (outcome.reason, outcome.message)
    assert_offboarded(world, body, ssh_key_kept=False)
    events = world.events()
    exactly_once(events, ["offboarded"])
    [done] = events
    assert len([item for item in done["data"]["removed"] if item.startswith("Key Vault secret")]) == 3
    assert any(item.startswith("Palette API key") for item in done["data"]["removed"])
    assert any(item.startswith("SSH key off-key") for item in done["data"]["removed"])


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", r"^/v1/cloudaccounts/azure/"), ("DELETE", r"^/v1/users/assets/sshkeys/"),
    ("PUT", r"^/v1/apiKeys/[^/]+/state$"), ("DELETE", r"^/v1/apiKeys/")])
def test_a_palette_response_lost_after_the_removal_is_finished_on_the_next_try(world: World, method: str,
                                                                              path: str) -> None:
    body = onboard(world, **{k: v for k, v in full_request(world).items() if k not in ("requestId", "accountName")})
    world.palette_fault(method=method, path=path, dropAfterHandling=True, times=1)

    offboard(world, body["accountName"], removeSshKey=True)

    assert_offboarded(world, body, ssh_key_kept=False)


def test_graph_and_key_vault_answers_lost_after_the_removal_are_finished_on_the_next_try(world: World) -> None:
    body = onboard(world)
    world.identity_fault(method="POST", path=r"removePassword$", dropAfterHandling=True, times=1)
    world.keyvault_fault(method="DELETE", path=r"^/secrets/", dropAfterHandling=True, times=1)

    offboard(world, body["accountName"])

    assert_offboarded(world, body)


def test_a_delete_retried_or_repeated_names_the_same_offboarding_and_queues_it_once(world: World) -> None:
    from shared.engine.enqueue import enqueue
    from shared.offboarding.intake import OffboardNow, next_offboarding_id, offboard_now
    from shared.offboarding.plan import OFFBOARDING

    body = onboard(world)
    account = body["accountName"]
    row = world.deps.clients.inventory.get(account)
    assert row is not None
    # A DELETE that queued its request and died before naming it in the account's row...
    expected = next_offboarding_id(row)
    enqueue(world.deps.clients, world.deps.queue, OFFBOARDING, OffboardingRequest.of(expected, account))

    # ... is finished by the next one, and any further one answers with it.
    first = offboard_now(world.deps.clients, world.deps.queue, account, remove_ssh_key=False, remove_api_key=True)
    again = offboard_now(world.deps.clients, world.deps.queue, account, remove_ssh_key=False, remove_api_key=True)

    assert first == (OffboardNow.ACCEPTED, expected) and again == (OffboardNow.IN_FLIGHT, expected)
    assert [o.kind for o in world.deliver_queued()] == [OutcomeKind.SUCCEEDED]
    assert offboard_now(world.deps.clients, world.deps.queue, account, remove_ssh_key=False,
                        remove_api_key=True) == (OffboardNow.DONE, expected)


def test_after_a_failed_offboarding_the_next_delete_starts_a_new_one(world: World) -> None:
    from shared.offboarding.intake import OffboardNow, offboard_now

    body = onboard(world)
    account = body["accountName"]
    [palette_account] = world.palette_accounts(account)
    cluster = seed_cluster(world, "blocking", palette_account["uid"])
    _, failed_id = offboard_now(world.deps.clients, world.deps.queue, account, remove_ssh_key=False,
                                remove_api_key=True)
    assert [o.reason for o in world.deliver_queued()] == ["account_in_use"]
    remove_cluster(world, cluster)  # the team moved the cluster to another account

    outcome, second_id = offboard_now(world.deps.clients, world.deps.queue, account, remove_ssh_key=False,
                                      remove_api_key=True)

    assert outcome is OffboardNow.ACCEPTED and second_id != failed_id
    assert [o.kind for o in world.deliver_queued()] == [OutcomeKind.SUCCEEDED]
    assert_offboarded(world, body)


# --------------------------------------------------------------------- offboard, then onboard again

def test_onboarding_again_after_an_offboarding_must_say_what_to_do_with_the_deleted_secrets(world: World) -> None:
    body = onboard(world, sshKey={"name": "again-key", "generate": True})
    account = body["accountName"]
    offboard(world, account)
    before = services(world)

    again = dict(body, requestId=f"AGAIN-{uuid.uuid4().hex[:8]}")
    refused = world.run(again)

    assert refused.kind is OutcomeKind.FAILED and refused.reason == "secret_name_deleted"
    assert "recoverDeletedSecrets" in refused.message
    assert services(world) == before  # nothing made, nothing recovered unasked
    world.events()

    recovered = world.run(dict(again, requestId=f"AGAIN-{uuid.uuid4().hex[:8]}", recoverDeletedSecrets=True))

    assert recovered.kind is OutcomeKind.SUCCEEDED, (recovered.reason, recovered.message)
    assert deleted_secrets(world, account) == []
    client_secret = world.secret_versions(secret_name(account, SecretKind.CLIENT_SECRET))
    assert len(client_secret) == 2  # the old version came back as history; a new one is current
    assert len(our_passwords(world, body)) == 1  # only the new password: the old one was removed
    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.status == MANAGED and row.offboarded_by == "" and row.previous_key_id == ""
    assert row.current_key_id == our_passwords(world, body)[0]
    [palette_account] = world.palette_accounts(account)
    assert palette_account["uid"] == row.palette_uid


def test_onboarding_again_with_nothing_deleted_in_the_way_needs_no_flag(world: World) -> None:
    client_id = world.register_app()
    added = graph_add_password(world, client_id, "made by the app owner")
    name = f"ops-{client_id[:8]}"
    world.deps.clients.secrets.set_secret(name, _secret(added["secretText"]), content_type="text/plain", tags={})
    body = onboard(world, client_id=client_id, azure={
        "tenantId": world.request()["azure"]["tenantId"], "clientId": client_id,
        "secret": {"source": "keyVault", "secretName": name}})
    offboard(world, body["accountName"])

    outcome = world.run(dict(body, requestId=f"AGAIN-{uuid.uuid4().hex[:8]}"))

    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)


def test_a_deleted_secret_the_product_did_not_write_is_never_recovered(world: World) -> None:
    account = f"foreign-{uuid.uuid4().hex[:6]}"
    name = secret_name(account, SecretKind.CLIENT_SECRET)
    store = world.deps.clients.secrets
    store.set_secret(name, _secret("someone else's"), content_type="text/plain", tags={"owner": "ops"})
    store.delete_secret(name)

    outcome = world.run(world.request(accountName=account, recoverDeletedSecrets=True))

    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "secret_name_deleted"
    assert "will not recover it" in outcome.message
    assert store.get_deleted_secret(name) is not None


def test_offboarding_request_model_defaults() -> None:
    request = OffboardingRequest.of("OFF-1", "some-account")
    assert (request.remove_ssh_key, request.remove_api_key, request.palette) == (False, True, None)


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)
