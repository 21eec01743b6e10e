"""Each kind of drift planted by hand, as it happens in real tenants, then found by the drift pass,
announced once, recorded on the account, and (where the product can) repaired and resolved."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from devstack.stack import DEVSTACK_TENANT_ID
from shared.engine import OutcomeKind
from shared.rotation.drift import drift_pass
from tests.onboarding.conftest import graph_add_password
from tests.rotation.test_rotation import NOW, onboard, palette_holds_key_vaults_secret

if TYPE_CHECKING:
    from tests.onboarding.conftest import World


def run_pass(world: World, now: dt.datetime = NOW) -> Any:
    return drift_pass(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=now,
                      whole=True)


def drift_events(world: World) -> list[tuple[str, str]]:
    return [(e["type"].removeprefix("palette.onboarding."), e["data"]["kind"]) for e in world.events()
            if e["type"].startswith("palette.onboarding.drift.")]


def drift_of(world: World, account: str) -> list[str]:
    row = world.deps.clients.inventory.get(account)
    assert row is not None
    return row.drift


def test_a_clean_account_has_no_drift(world: World) -> None:
    body = onboard(world)
    report = run_pass(world)
    assert (report.accounts, report.detected) == (1, 0)
    assert drift_of(world, body["accountName"]) == [] and drift_events(world) == []


def test_a_stale_secret_put_by_someone_else_is_found_and_put_back(world: World) -> None:
    """Someone put an old secret into the account, keeping the product's annotations but not its
    record of the secret it put there."""
    body = onboard(world)
    account = world.palette_accounts(body["accountName"])[0]
    stale = graph_add_password(world, body["azure"]["clientId"], "someone's")
    kept = {k: v for k, v in account["annotations"].items() if k != "palette-onboarding/secret"}
    put = world.palette_call("PUT", f"/v1/cloudaccounts/azure/{account['uid']}", body={
        "metadata": {"name": account["name"], "uid": account["uid"], "annotations": kept},
        "spec": {"tenantId": body["azure"]["tenantId"], "clientId": body["azure"]["clientId"],
                 "clientSecret": stale["secretText"]}})
    assert put.status_code == 204, put.text
    assert not palette_holds_key_vaults_secret(world, body["accountName"])
    report = run_pass(world)
    assert report.repaired == 1
    assert drift_events(world) == [("drift.detected", "secret_changed"), ("drift.resolved", "secret_changed")]
    assert palette_holds_key_vaults_secret(world, body["accountName"])
    assert drift_of(world, body["accountName"]) == []


def test_an_account_someone_replaced_without_the_products_annotations_is_reported_and_left_alone(
        world: World) -> None:
    """A Terraform apply: a full PUT that drops the product's annotations. The product can no longer
    prove it made the account, so it neither repairs nor rotates it; it says so."""
    body = onboard(world)
    account = world.palette_accounts(body["accountName"])[0]
    stale = graph_add_password(world, body["azure"]["clientId"], "terraform's")
    put = world.palette_call("PUT", f"/v1/cloudaccounts/azure/{account['uid']}", body={
        "metadata": {"name": account["name"], "uid": account["uid"], "annotations": {"scope": "tenant"}},
        "spec": {"tenantId": body["azure"]["tenantId"], "clientId": body["azure"]["clientId"],
                 "clientSecret": stale["secretText"]}})
    assert put.status_code == 204, put.text
    replaced = world.palette_accounts(body["accountName"])[0]
    report = run_pass(world)
    assert report.repaired == 0
    assert drift_events(world) == [("drift.detected", "not_ours")]
    assert drift_of(world, body["accountName"]) == ["not_ours"]
    assert world.palette_accounts(body["accountName"])[0] == replaced  # unchanged
    assert world.deliver_queued() == []  # and no rotation started for it


def test_a_secret_palette_no_longer_accepts_is_found_and_rotated_away(world: World) -> None:
    body = onboard(world)
    row = world.deps.clients.inventory.get(body["accountName"])
    assert row is not None
    world.deps.clients.graph.remove_password(body["azure"]["clientId"], row.current_key_id)  # type: ignore[union-attr]
    run_pass(world)
    assert drift_events(world) == [("drift.detected", "secret_invalid")]
    assert drift_of(world, body["accountName"]) == ["secret_invalid"]
    outcomes = world.deliver_queued()  # the rotation the pass started
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED]
    world.events()
    run_pass(world)
    assert drift_of(world, body["accountName"]) == []


def test_an_account_deleted_in_palette_is_reported(world: World) -> None:
    body = onboard(world)
    uid = world.palette_accounts(body["accountName"])[0]["uid"]
    assert world.palette_call("DELETE", f"/v1/cloudaccounts/azure/{uid}").status_code == 204
    run_pass(world)
    assert drift_events(world) == [("drift.detected", "account_missing")]
    run_pass(world)  # still there: announced once
    assert drift_events(world) == []
    assert drift_of(world, body["accountName"]) == ["account_missing"]


def test_a_secret_deleted_from_key_vault_is_reported(world: World) -> None:
    body = onboard(world)
    world.deps.clients.secrets._client.begin_delete_secret(f"palette-{body['accountName']}-client-secret").wait()
    run_pass(world)
    assert drift_events(world) == [("drift.detected", "secret_missing")]


def test_an_orphaned_password_is_reported_then_removed_after_the_grace_period(world: World) -> None:
    body = onboard(world)
    orphan = graph_add_password(world, body["azure"]["clientId"],
                                f"palette-onboarding {body['accountName']} LOST-REQUEST")
    run_pass(world)
    assert drift_events(world) == [("drift.detected", "orphan_password")]
    assert orphan["keyId"] in [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    grace = world.deps.settings.pipeline.rotation.orphan_grace_hours
    report = run_pass(world, NOW + dt.timedelta(hours=grace + 1))
    assert report.orphans_removed == 1
    assert orphan["keyId"] not in [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    assert drift_events(world) == [("drift.resolved", "orphan_password")]


def test_a_lost_inventory_is_rebuilt_from_key_vault_tags(world: World) -> None:
    body = onboard(world)
    before = world.deps.clients.inventory.get(body["accountName"])
    world.deps.clients.inventory.delete_all()
    report = run_pass(world)
    assert report.objects_recorded == 1
    after = world.deps.clients.inventory.get(body["accountName"])
    assert after is not None and before is not None
    for attribute in ("palette_uid", "tenant_id", "client_id", "secret_version", "current_key_id", "secret_source",
                      "onboarded_by", "scope"):
        assert getattr(after, attribute) == getattr(before, attribute), attribute
    assert drift_of(world, body["accountName"]) == []


# -- the safety net: product-annotated objects that no inventory row records --------------------

def annotated_account(world: World, name: str, request_id: str) -> dict[str, Any]:
    """An account carrying the product's annotations for ``request_id`` (as a leak would leave it)."""
    client_id = world.register_app()
    secret = graph_add_password(world, client_id, "leaked")["secretText"]
    made = world.palette_call("POST", "/v1/cloudaccounts/azure", body={
        "metadata": {"name": name, "annotations": {"palette-onboarding/managed-by": "palette-onboarding",
                                                   "palette-onboarding/request-id": request_id}},
        "spec": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id, "clientSecret": secret}})
    assert made.status_code == 201, made.text
    return dict(world.palette_accounts(name)[0])


def test_an_object_of_a_failed_request_is_removed_after_the_grace(world: World) -> None:
    failed = world.request(palette={"project": "No-Such-Project"})
    assert world.run(failed).kind is OutcomeKind.FAILED
    leaked = annotated_account(world, f"{failed['accountName']}-leak", failed["requestId"])
    world.events()
    assert run_pass(world).objects_removed == 0  # within the grace: its request may still be taking it back
    assert world.palette_accounts(leaked["name"]) != []
    grace = world.deps.settings.pipeline.rotation.orphan_grace_hours
    report = run_pass(world, NOW + dt.timedelta(hours=grace + 1))
    assert report.objects_removed == 1
    assert world.palette_accounts(leaked["name"]) == []
    assert drift_events(world) == [("drift.detected", "orphaned_object"), ("drift.resolved", "orphaned_object")]
    run_pass(world, NOW + dt.timedelta(hours=grace + 2))
    assert drift_events(world) == []  # once


def test_an_object_of_an_unknown_request_is_removed_and_the_request_explained(world: World) -> None:
    leaked = annotated_account(world, f"ghost-{NOW.microsecond}", "NO-SUCH-REQUEST-7")
    grace = world.deps.settings.pipeline.rotation.orphan_grace_hours
    assert run_pass(world, NOW + dt.timedelta(hours=grace + 1)).objects_removed == 1
    assert world.palette_accounts(leaked["name"]) == []
    row = world.deps.clients.state.get("NO-SUCH-REQUEST-7")
    assert row is not None and row.error_reason == "unknown_request"


def test_an_account_without_product_annotations_is_never_touched_by_the_safety_net(world: World) -> None:
    client_id = world.register_app()
    secret = graph_add_password(world, client_id, "by hand")["secretText"]
    name = f"hand-made-{NOW.microsecond}"
    assert world.palette_call("POST", "/v1/cloudaccounts/azure", body={
        "metadata": {"name": name}, "spec": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id,
                                             "clientSecret": secret}}).status_code == 201
    before = world.palette_accounts(name)
    report = run_pass(world, NOW + dt.timedelta(days=30))
    assert (report.objects_removed, report.objects_recorded) == (0, 0)
    assert world.palette_accounts(name) == before
    assert world.deps.clients.inventory.get(name) is None
