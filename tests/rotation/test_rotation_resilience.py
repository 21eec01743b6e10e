"""Rotation under crashes, faults and tenant limits: the end state always equals an uninterrupted
rotation (exactly two of the product's passwords, Palette and Key Vault agree), and a rotation
that stops leaves Palette on a secret that works."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from shared.engine import OutcomeKind
from shared.rotation.sweep import RotateNow, rotate_now, sweep
from tests.onboarding.test_resilience import HostKilled, exactly_once, kill_at, short_leases
from tests.rotation.test_rotation import NOW, make_due, onboard, ours, palette_holds_key_vaults_secret

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

CHECKPOINTS = ["claimed.saved", "plan.saved", "rotate.added", "rotate.proven", "rotate.updated", "rotate.saved",
               "rotate.sent", "prune.saved", "inventory.saved"]


def start(world: World, account: str) -> tuple[bytes, str]:
    outcome, _ = rotate_now(world.deps.clients, world.deps.queue, account)
    assert outcome is RotateNow.ACCEPTED
    [(body, message_id, _)] = world.queued()
    return body, message_id


def identity_config(world: World, **config: Any) -> None:
    assert world.stack.identity_https is not None
    requests.post(f"{world.stack.identity_https.url}/_devstack/config", json=config, verify=world.verify,
                  timeout=10).raise_for_status()


@pytest.mark.parametrize("point", CHECKPOINTS)
def test_killed_at_each_point_then_redelivered_ends_as_an_uninterrupted_rotation(world: World, point: str) -> None:
    body = onboard(world)
    account = body["accountName"]
    before = world.deps.clients.inventory.get(account)
    assert before is not None
    message, message_id = start(world, account)
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(message, config=config, checkpoint=kill_at(point), message_id=message_id)
    time.sleep(1.2)
    outcome = world.run_to_the_end(message, config=config, message_id=message_id)
    assert outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.DUPLICATE), (outcome.reason, outcome.message)
    after = world.deps.clients.inventory.get(account)
    assert after is not None and after.last_rotation_outcome == "succeeded" and after.rotation_in_flight == ""
    assert sorted(ours(world, body)) == sorted([before.current_key_id, after.current_key_id])
    assert after.previous_key_id == before.current_key_id
    assert palette_holds_key_vaults_secret(world, account)
    exactly_once(world.events(), ["secret.rotated"])


def test_the_password_cap_of_two_frees_the_previous_one_first(world: World) -> None:
    identity_config(world, passwordCap=2)
    body = onboard(world)
    account = body["accountName"]
    rotate_now(world.deps.clients, world.deps.queue, account)
    world.deliver_queued()
    middle = world.deps.clients.inventory.get(account)
    assert middle is not None and len(ours(world, body)) == 2  # the cap is reached
    rotate_now(world.deps.clients, world.deps.queue, account)
    [done] = world.deliver_queued()
    assert done.kind is OutcomeKind.SUCCEEDED, (done.reason, done.message)
    after = world.deps.clients.inventory.get(account)
    assert after is not None
    assert sorted(ours(world, body)) == sorted([middle.current_key_id, after.current_key_id])
    [rotated] = [e for e in world.events() if e["type"] == "palette.onboarding.secret.rotated"][-1:]
    assert rotated["data"]["freedKeyId"] == middle.previous_key_id
    assert "previous one was removed" in rotated["data"]["note"]
    assert palette_holds_key_vaults_secret(world, account)


def test_a_cap_full_of_passwords_that_are_not_ours_fails_clearly_and_keeps_the_secret(world: World) -> None:
    from tests.onboarding.conftest import graph_add_password

    body = onboard(world)
    graph_add_password(world, body["azure"]["clientId"], "the app team's own")
    identity_config(world, passwordCap=2)
    rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    [failed] = world.deliver_queued()
    assert failed.kind is OutcomeKind.FAILED and failed.reason == "too_many_passwords"
    events = [e for e in world.events() if e["type"] == "palette.onboarding.rotation.failed"]
    assert len(events) == 1 and "Remove a password" in events[0]["data"]["message"]
    assert palette_holds_key_vaults_secret(world, body["accountName"])
    row = world.deps.clients.inventory.get(body["accountName"])
    assert row is not None and row.last_rotation_outcome == "failed" and row.rotation_in_flight == ""


def test_a_new_secret_entra_never_accepts_is_taken_back_and_palette_keeps_the_old(world: World) -> None:
    body = onboard(world)
    identity_config(world, propagationDelaySeconds=600)
    config = dataclasses.replace(world.deps.settings.pipeline, validation_budget_seconds=2)
    message, message_id = start(world, body["accountName"])
    outcome = world.run(message, config=config, message_id=message_id)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "secret_not_working"
    assert len(ours(world, body)) == 1  # the new one was removed again
    assert palette_holds_key_vaults_secret(world, body["accountName"])


def test_key_vault_refusing_the_new_version_leaves_palette_on_the_new_working_secret(world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    world.keyvault_fault(method="PUT", path=f"^/secrets/palette-{account}-client-secret$", status=403)
    message, message_id = start(world, account)
    outcome = world.run(message, message_id=message_id)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "key_vault_forbidden"
    assert "Palette now uses the new client secret" in outcome.message
    # Palette holds the new secret; Key Vault's current one (the old) still works too.
    assert len(ours(world, body)) == 2
    requests.delete(f"{world.stack.keyvault.url}/_devstack/faults", verify=world.verify,  # type: ignore[union-attr]
                    timeout=10)
    # The next rotation sets it right: one new secret everywhere, the lost one pruned.
    rotate_now(world.deps.clients, world.deps.queue, account)
    [done] = world.deliver_queued()
    assert done.kind is OutcomeKind.SUCCEEDED
    assert palette_holds_key_vaults_secret(world, account)
    assert len(ours(world, body)) == 2


def test_graph_and_palette_throttling_mid_sweep_is_paced_and_finishes(world: World) -> None:
    bodies = [onboard(world) for _ in range(3)]
    for body in bodies:
        make_due(world, body["accountName"])
    world.identity_fault(method="POST", path="/addPassword$", status=429, headers={"Retry-After": "1"}, times=2)
    world.palette_fault(method="PUT", path="^/v1/cloudaccounts/azure/", status=429, times=2)
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=NOW)
    assert report.enqueued == 3
    outcomes = world.deliver_queued()
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 3
    for body in bodies:
        assert palette_holds_key_vaults_secret(world, body["accountName"])


def test_a_version_someone_else_added_is_taken_as_the_current_one(world: World) -> None:
    """Out of band: an operator wrote a new version (a value the app holds, made by hand). The
    rotation rotates from it, and never removes the password it cannot attribute."""
    from pydantic import SecretStr

    from tests.onboarding.conftest import graph_add_password

    body = onboard(world)
    account = body["accountName"]
    manual = graph_add_password(world, body["azure"]["clientId"], "rotated by hand")
    world.deps.clients.secrets.set_secret(f"palette-{account}-client-secret", SecretStr(manual["secretText"]),
                                          content_type="text/plain", tags={})
    rotate_now(world.deps.clients, world.deps.queue, account)
    [done] = world.deliver_queued()
    assert done.kind is OutcomeKind.SUCCEEDED, (done.reason, done.message)
    keys = [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    assert manual["keyId"] in keys
    assert palette_holds_key_vaults_secret(world, account)


def test_a_lifetime_policy_gets_the_longest_lifetime_it_allows(world: World) -> None:
    """The tenant allows 60-day passwords; the account's secrets last 180 days. The rotation steps
    down until the policy accepts one, and says which it used."""
    body = onboard(world)
    identity_config(world, passwordLifetimeMaxDays=60)
    rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    [done] = world.deliver_queued()
    assert done.kind is OutcomeKind.SUCCEEDED, (done.reason, done.message)
    [rotated] = [e for e in world.events() if e["type"] == "palette.onboarding.secret.rotated"]
    assert rotated["data"]["lifetimeDays"] == 60
    row = world.deps.clients.inventory.get(body["accountName"])
    assert row is not None and row.validity_days == 60
    assert palette_holds_key_vaults_secret(world, body["accountName"])


def test_a_lifetime_policy_that_refuses_every_lifetime_fails_naming_the_policy(world: World) -> None:
    body = onboard(world)
    identity_config(world, passwordLifetimeMaxDays=1)  # and yet a day is too long: nothing fits
    world.identity_fault(method="POST", path="/addPassword$", status=400, times=20, body={"error": {
        "code": "CredentialInvalidLifetimeAsPerAppPolicy",
        "message": "Credential lifetime exceeds the max value allowed as per assigned policy 'p-1'."}})
    rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    [failed] = world.deliver_queued()
    assert failed.kind is OutcomeKind.FAILED and failed.reason == "lifetime_policy"
    assert "policy" in failed.message
    assert palette_holds_key_vaults_secret(world, body["accountName"])
