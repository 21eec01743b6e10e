"""Other holders of an account's client secret, end to end against the local stack: Azure backup
locations another team pointed at the same service principal. Rotation gives the new secret to
each one the product may change (its annotations, or named in ``rotation.alsoUpdate``), never
touches any other, and prunes the older passwords only once every holder has the new one; the drift
pass reports a holder whose secret no longer works; an offboarding names the ones it leaves.

Outcomes are read from the stand-ins (Palette's locations by their secret's SHA-256, Graph's
passwords) and from the events, never from the app's own clients.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests

from devstack.stack import DEVSTACK_TENANT_ID
from shared.engine import OutcomeKind
from shared.rotation.drift import drift_pass
from shared.rotation.sweep import RotateNow, rotate_now
from tests.onboarding.test_resilience import HostKilled, kill_at, short_leases
from tests.rotation.test_rotation import onboard, ours, palette_holds_key_vaults_secret, rotate

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

PRODUCT_ANNOTATIONS = {"palette-onboarding/managed-by": "palette-onboarding"}
NOT_OURS = "not made by this product and not named in rotation.alsoUpdate"


def seed_location(world: World, name: str, client_id: str, secret: str, *, project_uid: str | None = None,
                  annotations: dict[str, str] | None = None, tenant_id: str = DEVSTACK_TENANT_ID) -> str:
    """An Azure backup location as another team makes it in the console (the stand-in's admin API)."""
    assert world.stack.palette is not None
    body: dict[str, Any] = {"name": name, "tenantId": tenant_id, "clientId": client_id, "clientSecret": secret}
    if project_uid:
        body["projectUid"] = project_uid
    if annotations:
        body["annotations"] = annotations
    made = requests.post(f"{world.stack.palette.url}/_devstack/locations/azure", json=body, timeout=10)
    assert made.status_code == 201, made.text
    return str(made.json()["uid"])


def location(world: World, uid: str) -> dict[str, Any]:
    return dict(next(loc for loc in world.palette_state()["backupLocations"] if loc["uid"] == uid))


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def current_secret(world: World, account: str) -> str:
    return world.secret_value(f"palette-{account}-client-secret")


def holds_current(world: World, uid: str, account: str) -> bool:
    """The location holds Key Vault's current client secret of the account."""
    return bool(location(world, uid)["clientSecretSha256"] == sha(current_secret(world, account)))


def with_location(world: World, *, named: bool = False, annotated: bool = False,
                  **overrides: Any) -> tuple[dict[str, Any], str, str]:
    """An onboarded account and a backup location on its principal holding its secret: the body,
    the location's uid and name. ``named``: the request names it (in another case) in
    ``rotation.alsoUpdate``; ``annotated``: it carries the product's annotations."""
    name = f"backups-{uuid.uuid4().hex[:8]}"
    if named:
        overrides["rotation"] = {"alsoUpdate": [name.upper()]}
    body = onboard(world, **overrides)
    project = body.get("palette", {}).get("project") if body.get("palette", {}).get("scope") == "project" else None
    uid = seed_location(world, name, body["azure"]["clientId"], current_secret(world, body["accountName"]),
                        project_uid=world.project_uid(project) if project else None,
                        annotations=PRODUCT_ANNOTATIONS if annotated else None)
    return body, uid, name


def events_of(world: World, short_type: str) -> list[dict[str, Any]]:
    return [e for e in world.events() if e["type"] == f"palette.onboarding.{short_type}"]


def test_a_location_named_in_also_update_keeps_working_across_two_rotations(world: World) -> None:
    body, uid, name = with_location(world, named=True)
    account = body["accountName"]
    first = world.deps.clients.inventory.get(account)
    assert first is not None
    for _ in range(2):
        before = world.deps.clients.inventory.get(account)
        assert before is not None
        rotate(world, account)
        after = world.deps.clients.inventory.get(account)
        assert after is not None
        assert holds_current(world, uid, account)
        assert palette_holds_key_vaults_secret(world, account)
        assert sorted(ours(world, body)) == sorted([before.current_key_id, after.current_key_id])  # older pruned
        assert after.holders == {uid: after.current_key_id} and after.blocked_holders == []
        [rotated] = events_of(world, "secret.rotated")
        assert rotated["data"]["holdersUpdated"] == [{"uid": uid, "name": name}]
    assert first.current_key_id not in [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    final = world.deps.clients.inventory.get(account)
    assert final is not None
    public = final.to_public()
    assert public["holders"] == [{"uid": uid, "keyId": final.current_key_id}] and public["blockedHolders"] == []
    assert location(world, uid)["name"] == name  # the rest of the location as it was


def test_a_location_with_the_products_annotations_is_updated_without_being_named(world: World) -> None:
    body, uid, _ = with_location(world, annotated=True)
    rotate(world, body["accountName"])
    assert holds_current(world, uid, body["accountName"])
    assert location(world, uid)["annotations"]["palette-onboarding/managed-by"] == "palette-onboarding"


def test_a_project_accounts_holder_is_found_in_its_project(world: World) -> None:
    body, uid, _ = with_location(world, named=True, palette={"scope": "project", "project": "Team-A"})
    rotate(world, body["accountName"])
    assert holds_current(world, uid, body["accountName"])
    assert location(world, uid)["projectUid"] == world.project_uid("Team-A")


def test_a_location_the_product_may_not_change_is_never_touched_and_blocks_the_prune(world: World) -> None:
    body, theirs, name = with_location(world)
    account = body["accountName"]
    first = world.deps.clients.inventory.get(account)
    assert first is not None
    other_app = world.register_app()
    elsewhere = seed_location(world, f"other-{uuid.uuid4().hex[:8]}", other_app, "another app's secret",
                              annotations=PRODUCT_ANNOTATIONS)
    untouched = {uid: location(world, uid) for uid in (theirs, elsewhere)}
    rotate(world, account)
    rotate(world, account)
    assert {uid: location(world, uid) for uid in (theirs, elsewhere)} == untouched
    keys = [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    assert first.current_key_id in keys  # the password the location holds still works
    assert len(ours(world, body)) == 3
    assert palette_holds_key_vaults_secret(world, account)
    [blocked] = events_of(world, "rotation.blocked")
    assert blocked["data"]["holders"] == [{"uid": theirs, "name": name, "why": NOT_OURS}]
    assert blocked["data"]["keptKeyIds"] == [first.current_key_id]
    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.holders == {}
    assert row.blocked_holders == [{"uid": theirs, "name": name, "why": NOT_OURS}]
    assert row.last_rotation_outcome == "succeeded"
    assert world.deps.clients.state.get(row.last_rotation_id).results["blockedBy"]  # type: ignore[union-attr]


def test_a_holder_palette_refuses_to_update_blocks_the_prune_and_is_named(world: World) -> None:
    body, uid, name = with_location(world, named=True)
    account = body["accountName"]
    first = world.deps.clients.inventory.get(account)
    assert first is not None
    world.palette_fault(method="PUT", path=f"^/v1/users/assets/locations/azure/{uid}$", status=403)
    rotate(world, account)
    rotate(world, account)
    assert first.current_key_id in [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    assert location(world, uid)["clientSecretSha256"] == sha_of_first(world, body, first.secret_version)
    [blocked] = events_of(world, "rotation.blocked")
    [holder] = blocked["data"]["holders"]
    assert (holder["uid"], holder["name"]) == (uid, name) and "refused its update (403)" in holder["why"]


def sha_of_first(world: World, body: dict[str, Any], version: str) -> str:
    return sha(world.secret_value(f"palette-{body['accountName']}-client-secret", version))


def test_a_transient_failure_is_retried_without_a_second_password(world: World) -> None:
    body, uid, _ = with_location(world, named=True)
    account = body["accountName"]
    before = world.deps.clients.inventory.get(account)
    assert before is not None
    world.palette_fault(method="PUT", path=f"^/v1/users/assets/locations/azure/{uid}$", status=503, times=6)
    outcome, _ = rotate_now(world.deps.clients, world.deps.queue, account)
    assert outcome is RotateNow.ACCEPTED
    [(message, message_id, _)] = world.queued()
    done = world.run_to_the_end(message, message_id=message_id)
    assert done.kind is OutcomeKind.SUCCEEDED, (done.reason, done.message)
    after = world.deps.clients.inventory.get(account)
    assert after is not None
    assert holds_current(world, uid, account)
    assert sorted(ours(world, body)) == sorted([before.current_key_id, after.current_key_id])


@pytest.mark.parametrize("point", ["plan.saved", "rotate.stored", "rotate.holder", "prune.saved"])
def test_killed_around_the_holders_then_redelivered_ends_as_an_uninterrupted_rotation(world: World,
                                                                                     point: str) -> None:
    body, uid, _ = with_location(world, named=True)
    account = body["accountName"]
    before = world.deps.clients.inventory.get(account)
    assert before is not None
    outcome, _ = rotate_now(world.deps.clients, world.deps.queue, account)
    assert outcome is RotateNow.ACCEPTED
    [(message, message_id, _)] = world.queued()
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(message, config=config, checkpoint=kill_at(point), message_id=message_id)
    time.sleep(1.2)
    done = world.run_to_the_end(message, config=config, message_id=message_id)
    assert done.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.DUPLICATE), (done.reason, done.message)
    after = world.deps.clients.inventory.get(account)
    assert after is not None and after.holders == {uid: after.current_key_id}
    assert holds_current(world, uid, account) and palette_holds_key_vaults_secret(world, account)
    assert sorted(ours(world, body)) == sorted([before.current_key_id, after.current_key_id])


# -- the drift pass --------------------------------------------------------------------------------

def run_pass(world: World) -> Any:
    return drift_pass(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, whole=True)


def drift_events(world: World) -> list[dict[str, Any]]:
    return [e for e in world.events() if e["type"].startswith("palette.onboarding.drift.")]


def test_drift_reports_a_holder_whose_password_was_removed_and_resolves_it_after_the_rotation(
        world: World) -> None:
    body, uid, name = with_location(world, named=True)
    account = body["accountName"]
    rotate(world, account)
    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.holders == {uid: row.current_key_id}
    world.deps.clients.graph.remove_password(body["azure"]["clientId"], row.current_key_id)  # type: ignore[union-attr]
    run_pass(world)
    detected = {e["data"]["kind"]: e["data"] for e in drift_events(world) if e["data"]["outcome"] == "detected"}
    assert detected["holder_secret_invalid"]["holders"] == [{"uid": uid, "name": name, "keyId": row.current_key_id}]
    assert "holder_secret_invalid" in world.deps.clients.inventory.get(account).drift  # type: ignore[union-attr]
    assert [o.kind for o in world.deliver_queued()] == [OutcomeKind.SUCCEEDED]  # the rotation the pass started
    assert holds_current(world, uid, account)
    world.events()
    run_pass(world)
    resolved = {e["data"]["kind"] for e in drift_events(world) if e["data"]["outcome"] == "resolved"}
    assert "holder_secret_invalid" in resolved
    assert world.deps.clients.inventory.get(account).drift == []  # type: ignore[union-attr]


def test_drift_reports_a_holder_the_product_may_not_change_until_a_rotation_knows_it(world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    run_pass(world)
    assert drift_events(world) == []
    name = f"backups-{uuid.uuid4().hex[:8]}"
    uid = seed_location(world, name, body["azure"]["clientId"], current_secret(world, account))
    run_pass(world)
    [detected] = drift_events(world)
    assert detected["data"]["kind"] == "holder_unmanaged"
    assert detected["data"]["holders"] == [{"uid": uid, "name": name, "why": NOT_OURS}]
    rotate(world, account)  # it blocks nothing yet (nothing older to prune), and is recorded
    world.events()
    run_pass(world)
    assert [(e["data"]["outcome"], e["data"]["kind"]) for e in drift_events(world)] == [
        ("resolved", "holder_unmanaged")]
