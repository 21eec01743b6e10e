"""Rotation end to end, through the real SDKs against the local stack: an onboarded account gets a
new secret in Palette and Key Vault, keeps exactly two of the product's passwords, and is left on
a working secret whatever fails or crashes.

Time is injected, never waited for: an account is made due by writing its inventory row's expiry
(as a secret that ages would), and the sweep takes ``now`` as an argument.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from typing import TYPE_CHECKING, Any

import pytest

from shared.engine import OutcomeKind
from shared.rotation.sweep import RotateNow, near_expiry, rotate_now, sweep
from shared.state.records import iso, parse_iso
from tests.onboarding.conftest import wait_for

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

NOW = dt.datetime.now(dt.UTC)


def onboard(world: World, **overrides: Any) -> dict[str, Any]:
    body = world.request(**overrides)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    world.events()
    return body


def make_due(world: World, account: str, *, expires_in_days: float = 5, age_hours: float = 2) -> None:
    """As if the account's secret had aged: it expires soon and was made a while ago."""
    def age(row: Any) -> None:
        row.expires_on = iso(NOW + dt.timedelta(days=expires_in_days))
        row.secret_created_on = iso(NOW - dt.timedelta(hours=age_hours))
    assert world.deps.clients.inventory.update(account, age) is not None


def ours(world: World, body: dict[str, Any]) -> list[str]:
    prefix = f"palette-onboarding {body['accountName']} "
    return [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])
            if str(p.get("displayName", "")).startswith(prefix)]


def palette_holds_key_vaults_secret(world: World, account: str) -> bool:
    held = world.palette_accounts(account)[0]["clientSecretSha256"]
    current = world.secret_value(f"palette-{account}-client-secret")
    return held == hashlib.sha256(current.encode()).hexdigest()


def rotate(world: World, account: str) -> str:
    outcome, rotation = rotate_now(world.deps.clients, world.deps.queue, account)
    assert outcome is RotateNow.ACCEPTED
    results = world.deliver_queued()
    assert [r.kind for r in results] == [OutcomeKind.SUCCEEDED], [(r.reason, r.message) for r in results]
    return rotation


def test_an_on_demand_rotation_replaces_the_secret_everywhere(world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    before = world.deps.clients.inventory.get(account)
    assert before is not None and before.current_key_id
    rotation = rotate(world, account)

    after = world.deps.clients.inventory.get(account)
    assert after is not None
    assert after.previous_key_id == before.current_key_id
    assert after.current_key_id not in ("", before.current_key_id)
    assert after.secret_version != before.secret_version
    assert after.last_rotation_id == rotation and after.last_rotation_outcome == "succeeded"
    assert after.rotation_in_flight == ""
    assert sorted(ours(world, body)) == sorted([before.current_key_id, after.current_key_id])
    assert palette_holds_key_vaults_secret(world, account)
    assert len(world.secret_versions(f"palette-{account}-client-secret")) == 2
    rotated = [e for e in world.events() if e["type"] == "palette.onboarding.secret.rotated"]
    assert len(rotated) == 1
    data = rotated[0]["data"]
    assert data["graphKeyId"] == after.current_key_id and data["replacedKeyId"] == before.current_key_id
    account_row = world.palette_accounts(account)[0]
    assert account_row["annotations"]["palette-onboarding/secret"] == f"key:{after.current_key_id}"


def test_two_rotations_in_a_row_leave_exactly_two_passwords(world: World) -> None:
    body = onboard(world)
    rotate(world, body["accountName"])
    rotate(world, body["accountName"])
    after = world.deps.clients.inventory.get(body["accountName"])
    assert after is not None
    assert sorted(ours(world, body)) == sorted([after.current_key_id, after.previous_key_id])
    assert palette_holds_key_vaults_secret(world, body["accountName"])


def test_a_password_the_product_did_not_make_is_never_touched_and_is_reported(world: World) -> None:
    from tests.onboarding.conftest import graph_add_password

    body = onboard(world)
    theirs = graph_add_password(world, body["azure"]["clientId"], "the app team's own")
    rotate(world, body["accountName"])
    rotate(world, body["accountName"])
    keys = [p["keyId"] for p in world.graph_passwords(body["azure"]["clientId"])]
    assert theirs["keyId"] in keys
    after = world.deps.clients.inventory.get(body["accountName"])
    assert after is not None and after.foreign_key_ids == [theirs["keyId"]]


def test_the_sweep_starts_only_what_is_due(world: World) -> None:
    config = world.deps.settings.pipeline.rotation
    due = onboard(world)
    at_threshold = onboard(world)
    young = onboard(world)
    later = onboard(world)
    make_due(world, due["accountName"])
    make_due(world, at_threshold["accountName"], expires_in_days=config.threshold_days)  # exactly at it: due
    make_due(world, young["accountName"], age_hours=0.1)  # born inside the threshold, not an hour old
    make_due(world, later["accountName"], expires_in_days=config.threshold_days + 0.01)  # just outside
    report = sweep(world.deps.clients, world.deps.queue, config, now=NOW)
    assert (report.due, report.enqueued, report.too_young) == (3, 2, 1)
    outcomes = world.deliver_queued()
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 2
    rotated = {e["subject"] for e in world.events() if e["type"] == "palette.onboarding.secret.rotated"}
    assert rotated == {due["accountName"], at_threshold["accountName"]}


def test_a_sweep_run_twice_in_a_day_asks_once(world: World) -> None:
    body = onboard(world)
    make_due(world, body["accountName"])
    config = world.deps.settings.pipeline.rotation
    assert sweep(world.deps.clients, world.deps.queue, config, now=NOW).enqueued == 1
    assert sweep(world.deps.clients, world.deps.queue, config, now=NOW).enqueued == 0  # in flight
    assert len(world.deliver_queued()) == 1


def test_the_near_expiry_event_and_the_timer_start_one_rotation(world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    make_due(world, account)
    row = world.deps.clients.inventory.get(account)
    assert row is not None
    name = f"palette-{account}-client-secret"
    data = {"Id": f"{world.stack.settings['KEY_VAULT_URL']}secrets/{name}/{row.secret_version}",
            "VaultName": "local", "ObjectType": "Secret", "ObjectName": name,
            "Version": row.secret_version, "NBF": None, "EXP": int((NOW + dt.timedelta(days=5)).timestamp())}
    config = world.deps.settings.pipeline.rotation
    assert near_expiry(data, world.deps.clients, world.deps.queue, config, now=NOW).startswith("rotation started")
    sweep(world.deps.clients, world.deps.queue, config, now=NOW)
    outcomes = world.deliver_queued()
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED]


def test_a_stale_near_expiry_event_is_ignored(world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    old = world.deps.clients.inventory.get(account)
    assert old is not None
    rotate(world, account)
    answer = near_expiry({"objectName": f"palette-{account}-client-secret", "version": old.secret_version},
                         world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=NOW)
    assert answer.startswith("ignored: version") and "stale" in answer
    assert world.queued() == []


@pytest.mark.parametrize("data", [{}, {"ObjectName": "someone-elses-secret"}, {"objectname": 12},
                                  {"ObjectName": "palette-no-such-account-client-secret", "Version": "x"}])
def test_near_expiry_events_about_other_secrets_are_ignored(world: World, data: dict[str, Any]) -> None:
    answer = near_expiry(data, world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation)
    assert answer.startswith("ignored")


def test_on_demand_for_an_account_not_managed_is_not_found_and_a_running_one_conflicts(world: World) -> None:
    assert rotate_now(world.deps.clients, world.deps.queue, "no-such-account")[0] is RotateNow.NOT_MANAGED
    body = onboard(world)
    outcome, first = rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    assert outcome is RotateNow.ACCEPTED
    again, running = rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    assert again is RotateNow.IN_FLIGHT and running == first
    world.deliver_queued()


def test_an_account_whose_secret_is_not_ours_is_never_rotated_but_warned_about(world: World) -> None:
    from tests.onboarding.conftest import graph_add_password

    client_id = world.register_app()
    added = graph_add_password(world, client_id)
    from pydantic import SecretStr

    world.deps.clients.secrets.set_secret("ops-their-secret", SecretStr(added["secretText"]), content_type="text/plain",
                                          tags={}, expires_on=NOW + dt.timedelta(days=20))
    body = world.request(client_id=client_id)
    body["azure"]["secret"] = {"source": "keyVault", "secretName": "ops-their-secret"}
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    world.events()
    config = world.deps.settings.pipeline.rotation
    assert sweep(world.deps.clients, world.deps.queue, config, now=NOW).warned == 1
    assert sweep(world.deps.clients, world.deps.queue, config, now=NOW).warned == 0  # once per milestone
    assert sweep(world.deps.clients, world.deps.queue, config, now=NOW + dt.timedelta(days=14)).warned == 1
    assert sweep(world.deps.clients, world.deps.queue, config, now=NOW + dt.timedelta(days=19, hours=1)).warned == 1
    warnings = [e for e in world.events() if e["type"] == "palette.onboarding.secret.expiring"]
    assert [w["data"]["milestoneDays"] for w in warnings] == [30, 7, 1]
    assert warnings[0]["data"]["requestId"] == body["requestId"]
    assert world.queued() == []  # never rotated
    outcome, _ = rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    assert outcome is RotateNow.ACCEPTED
    [failed] = world.deliver_queued()
    assert failed.kind is OutcomeKind.FAILED and failed.reason == "not_rotatable"


def test_a_rotation_and_an_onboarding_of_one_account_never_run_at_once(world: World) -> None:
    body = onboard(world)
    outcome, _ = rotate_now(world.deps.clients, world.deps.queue, body["accountName"])
    assert outcome is RotateNow.ACCEPTED
    [(message, message_id, _)] = world.queued()
    again = dict(body, requestId=body["requestId"] + "-again")
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def deliver(name: str, payload: Any, **kwargs: Any) -> None:
        barrier.wait()
        results[name] = world.run_to_the_end(payload, **kwargs)

    threads = [threading.Thread(target=deliver, args=("rotation", message), kwargs={"message_id": message_id}),
               threading.Thread(target=deliver, args=("onboarding", again))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert {k: v.kind for k, v in results.items()} == {"rotation": OutcomeKind.SUCCEEDED,
                                                       "onboarding": OutcomeKind.SUCCEEDED}
    assert palette_holds_key_vaults_secret(world, body["accountName"])


def _renewed_api_key(world: World, *, hosted: bool = False, expires_in_days: int = 10) -> tuple[str, str, str]:
    """An account onboarded with an API key, then the key renewed by the sweep (the renewal carried
    out here, or by the ``hosted`` app's queue trigger): the account's name, the replaced key's uid
    and the value it had (the value consumers may still hold)."""
    body = world.request()
    body["apiKey"] = {"name": f"robot-{body['requestId'][-8:]}", "user": "admin@example.com",
                      "expiresInDays": expires_in_days}
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    world.events()
    account = body["accountName"]
    first = world.deps.clients.inventory.get(account)
    assert first is not None and first.api_key_uid and first.api_key_expires_on
    old_value = world.secret_value(f"palette-{account}-api-key")
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=NOW)
    assert report.api_keys == 1
    if hosted:
        wait_for(lambda: (row := world.deps.clients.inventory.get(account)) is not None
                 and row.previous_api_key_uid == first.api_key_uid, "the renewal")
    else:
        [renewed] = world.deliver_queued()
        assert renewed.kind is OutcomeKind.SUCCEEDED, (renewed.reason, renewed.message)
    return account, first.api_key_uid, old_value


def _palette_accepts(world: World, api_key_value: str) -> bool:
    import requests

    info = requests.get(f"{world.stack.settings['PALETTE_ENDPOINT']}/v1/users/info", headers={"ApiKey": api_key_value},
                        timeout=10)
    assert info.status_code in (200, 401), info.text
    return info.status_code == 200


def test_a_replaced_api_key_is_deactivated_reactivated_on_demand_then_deleted(world: World) -> None:
    from shared.rotation.apikeys import reactivate_replaced_key

    config = world.deps.settings.pipeline.rotation
    overlap, grace = dt.timedelta(days=config.api_key_overlap_days), dt.timedelta(days=config.api_key_delete_after_days)
    account, old_uid, old_value = _renewed_api_key(world)
    after = world.deps.clients.inventory.get(account)
    assert after is not None and after.api_key_uid != old_uid and after.previous_api_key_uid == old_uid
    keys = {k["uid"]: k for k in world.palette_state()["apiKeys"]}
    assert keys[after.api_key_uid]["name"] + "-replaced" == keys[old_uid]["name"]
    assert _palette_accepts(world, world.secret_value(f"palette-{account}-api-key"))  # consumers get the new one
    assert _palette_accepts(world, old_value)  # the overlap: the old key still works

    def stage() -> tuple[str, str]:
        row = world.deps.clients.inventory.get(account)
        assert row is not None
        return row.previous_api_key_uid, row.previous_api_key_state

    moment = NOW + overlap + dt.timedelta(hours=1)
    sweep(world.deps.clients, world.deps.queue, config, now=moment)
    assert stage() == (old_uid, "deactivated")
    assert not _palette_accepts(world, old_value)

    reactivated = reactivate_replaced_key(account, world.deps.clients, config, moment + dt.timedelta(hours=1))
    assert reactivated is not None and reactivated.previous_api_key_state == ""
    assert _palette_accepts(world, old_value)  # a consumer that still needed it works again ...
    sweep(world.deps.clients, world.deps.queue, config, now=moment + dt.timedelta(hours=2))
    assert _palette_accepts(world, old_value)  # ... for another overlap

    moment += dt.timedelta(hours=1) + overlap + dt.timedelta(hours=1)
    sweep(world.deps.clients, world.deps.queue, config, now=moment)
    assert stage() == (old_uid, "deactivated")
    assert not _palette_accepts(world, old_value)
    sweep(world.deps.clients, world.deps.queue, config, now=moment + grace + dt.timedelta(hours=1))
    assert stage() == ("", "")
    assert old_uid not in {k["uid"] for k in world.palette_state()["apiKeys"]}
    assert reactivate_replaced_key(account, world.deps.clients, config, moment + grace + dt.timedelta(hours=2)) is None

    kinds = [(e["type"].removeprefix("palette.onboarding."), e["data"]["outcome"]) for e in world.events()
             if e["type"].startswith("palette.onboarding.apikey.")]
    assert kinds == [("apikey.renewed", "renewed"), ("apikey.deactivated", "deactivated"),
                     ("apikey.reactivated", "reactivated"), ("apikey.deactivated", "deactivated"),
                     ("apikey.deleted", "deleted")]


def test_a_stage_whose_holder_died_is_finished_once_and_a_held_one_is_not_raced(world: World) -> None:
    """The sweep took the deactivation in the row and was killed before its Palette call: while
    the hold lasts nobody acts (a reactivation is told to wait); once it lapses the next sweep
    carries it out, and it is announced once."""
    from shared.rotation.apikeys import STAGE_LEASE, StageHeld, reactivate_replaced_key

    config = world.deps.settings.pipeline.rotation
    account, old_uid, old_value = _renewed_api_key(world)
    moment = NOW + dt.timedelta(days=config.api_key_overlap_days, hours=1)

    def held(row: Any) -> None:
        row.previous_api_key_state = "deactivating"
        row.previous_api_key_revoke_after = iso(moment + STAGE_LEASE)
    world.deps.clients.inventory.update(account, held)

    with pytest.raises(StageHeld) as waiting:
        reactivate_replaced_key(account, world.deps.clients, config, moment)
    assert waiting.value.stage == "deactivate"
    sweep(world.deps.clients, world.deps.queue, config, now=moment)  # the hold has not lapsed: nothing
    assert _palette_accepts(world, old_value)

    later = moment + STAGE_LEASE + dt.timedelta(seconds=1)
    sweep(world.deps.clients, world.deps.queue, config, now=later)
    sweep(world.deps.clients, world.deps.queue, config, now=later + dt.timedelta(seconds=1))
    assert not _palette_accepts(world, old_value)
    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.previous_api_key_state == "deactivated"
    deactivated = [e for e in world.events() if e["type"] == "palette.onboarding.apikey.deactivated"]
    assert len(deactivated) == 1 and deactivated[0]["data"]["palette"]["replacedApiKeyUid"] == old_uid


def test_a_key_shorter_than_the_threshold_is_renewed_once_per_overlap_and_the_twice_replaced_one_deleted(
        world: World) -> None:
    """A 5-day key is due from the start (the threshold is 30 days): renewed once, it is not
    renewed again while the key it replaced is in its overlap (7 days), until a day before it
    expires; that second renewal deletes the key replaced first (still in its overlap, and holding
    the ``-replaced`` name) and succeeds."""
    config = world.deps.settings.pipeline.rotation
    account, first_uid, _ = _renewed_api_key(world, expires_in_days=5)
    for hours in (1, 24 * 3):
        assert sweep(world.deps.clients, world.deps.queue, config, now=NOW + dt.timedelta(hours=hours)).api_keys == 0
    assert world.queued() == []

    row = world.deps.clients.inventory.get(account)
    assert row is not None and row.previous_api_key_uid == first_uid and row.previous_api_key_state == ""
    second_uid = row.api_key_uid
    expires = parse_iso(row.api_key_expires_on)
    assert expires is not None
    report = sweep(world.deps.clients, world.deps.queue, config, now=expires - dt.timedelta(hours=12))
    assert report.api_keys == 1
    [renewed] = world.deliver_queued()
    assert renewed.kind is OutcomeKind.SUCCEEDED, (renewed.reason, renewed.message)

    after = world.deps.clients.inventory.get(account)
    assert after is not None and after.previous_api_key_uid == second_uid
    assert after.api_key_uid not in (first_uid, second_uid)
    keys = {k["uid"]: k["name"] for k in world.palette_state()["apiKeys"]}
    assert first_uid not in keys
    assert keys[second_uid] == keys[after.api_key_uid] + "-replaced"
    assert _palette_accepts(world, world.secret_value(f"palette-{account}-api-key"))
    kinds = [(e["type"].removeprefix("palette.onboarding."), e["data"]["palette"].get("replacedApiKeyUid"))
             for e in world.events() if e["type"].startswith("palette.onboarding.apikey.")]
    assert kinds == [("apikey.renewed", first_uid), ("apikey.deleted", first_uid), ("apikey.renewed", second_uid)]
