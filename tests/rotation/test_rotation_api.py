"""The rotation and inventory routes over real HTTP, with the app hosted by the local runner (its
queue trigger carries the rotation out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from tests.onboarding.conftest import wait_for
from tests.rotation.test_rotation import onboard, palette_holds_key_vaults_secret
from tests.test_http_api import call

if TYPE_CHECKING:
    from devstack.runner import LocalHost
    from tests.onboarding.conftest import World


def test_rotate_now_is_accepted_and_its_state_can_be_followed(host: LocalHost, world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    accepted = call(host, "POST", f"/rotations/{account}")
    assert accepted.status_code == 202, accepted.text
    answer = accepted.json()
    assert answer["statusUrl"].endswith(f"/api/rotations/{answer['id']}")
    assert accepted.headers["Location"] == answer["statusUrl"]

    def finished() -> dict[str, Any] | None:
        state: dict[str, Any] = call(host, "GET", answer["statusUrl"]).json()
        return state if state["status"] in ("succeeded", "failed") else None
    state = wait_for(finished, "the rotation to finish")
    assert state["status"] == "succeeded" and state["operation"] == "rotate", state
    assert type(state["palette"]["lifetimeDays"]) is int and state["palette"]["lifetimeDays"] > 0  # a number
    assert palette_holds_key_vaults_secret(world, account)

    listed = call(host, "GET", "/accounts").json()
    row = next(item for item in listed["items"] if item["accountName"] == account)
    assert row["lastRotation"]["id"] == answer["id"] and row["lastRotation"]["outcome"] == "succeeded"
    single = call(host, "GET", f"/accounts/{account}")
    assert single.status_code == 200 and single.json()["currentKeyId"] == row["currentKeyId"]


def test_rotation_routes_say_what_is_wrong(host: LocalHost, world: World) -> None:
    assert call(host, "POST", "/rotations/no-such-account").status_code == 404
    bad = call(host, "POST", "/rotations/Not_A_Name")
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "accountName"
    assert call(host, "GET", "/rotations/rot-unknown").status_code == 404
    assert call(host, "GET", "/accounts/no-such-account").status_code == 404
    for query, path in (("dueWithinDays=soon", "dueWithinDays"), ("drift=maybe", "drift"), ("top=0", "top"),
                        ("continuationToken=!!", "continuationToken")):
        answer = call(host, "GET", f"/accounts?{query}")
        assert answer.status_code == 400, (query, answer.text)
        assert answer.json()["errors"][0]["path"] == path


def test_accounts_are_filtered_and_paged(host: LocalHost, world: World) -> None:
    names = {onboard(world)["accountName"] for _ in range(3)}
    first = call(host, "GET", "/accounts?top=2").json()
    assert len(first["items"]) == 2 and first["continuationToken"]
    second = call(host, "GET", f"/accounts?top=2&continuationToken={first['continuationToken']}").json()
    assert {i["accountName"] for i in first["items"] + second["items"]} == names
    assert call(host, "GET", "/accounts?dueWithinDays=1").json()["items"] == []
    assert len(call(host, "GET", "/accounts?dueWithinDays=365").json()["items"]) == 3
    assert call(host, "GET", "/accounts?drift=true").json()["items"] == []


def test_key_vaults_near_expiry_event_rotates_through_the_event_grid_trigger(host: LocalHost, world: World) -> None:
    """End to end: the vault's Event Grid subscription (the host's webhook answers the handshake)
    delivers SecretNearExpiry for the account's current version; the trigger starts the rotation
    and the queue trigger carries it out. Versions written before a subscription are never
    delivered to it (as in Key Vault), so the subscription comes first."""
    import datetime as dt

    from devstack.runner_eventgrid import webhook_url
    from tests.rotation.test_rotation import make_due

    assert world.stack.keyvault is not None
    admin = f"{world.stack.keyvault.url}/_devstack/eventgrid"
    verify = world.verify
    root = host.http_url.rsplit("/api", 1)[0]
    subscribed = requests.post(f"{admin}/subscriptions", verify=verify, timeout=30, json={
        "endpoint": webhook_url(root, "rotation_near_expiry"), "eventTypes": ["Microsoft.KeyVault.SecretNearExpiry"],
        "subjectBeginsWith": "palette-"})
    assert subscribed.status_code == 201, subscribed.text
    try:
        body = onboard(world)
        account = body["accountName"]
        make_due(world, account)
        before = world.deps.clients.inventory.get(account)
        assert before is not None
        version = world.deps.clients.secrets.get_secret(f"palette-{account}-client-secret")[1]
        assert version.expires_on is not None
        answer = requests.post(f"{admin}/near-expiry", verify=verify, timeout=60,
                               json={"now": (version.expires_on - dt.timedelta(days=10)).isoformat()})
        assert answer.status_code == 200, answer.text
        delivered = [d for d in answer.json()["deliveries"] if d["subject"] == f"palette-{account}-client-secret"]
        assert [d["status"] for d in delivered] == [202]

        def rotated() -> bool:
            row = world.deps.clients.inventory.get(account)
            return row is not None and row.last_rotation_outcome == "succeeded"
        wait_for(rotated, "the rotation the event started")
        assert palette_holds_key_vaults_secret(world, account)
    finally:
        requests.delete(f"{admin}/subscriptions", verify=verify, timeout=30)
        requests.delete(f"{admin}/deliveries", verify=verify, timeout=30)


def test_a_replaced_api_key_is_reactivated_through_the_api(host: LocalHost, world: World) -> None:
    import datetime as dt

    from shared.rotation.apikeys import STAGE_LEASE, advance_replaced_key
    from shared.state.records import iso, utcnow
    from tests.rotation.test_rotation import NOW, _palette_accepts, _renewed_api_key

    account, old_uid, old_value = _renewed_api_key(world, hosted=True)
    config = world.deps.settings.pipeline.rotation
    path = f"/accounts/{account}/previous-api-key/reactivate"
    shown = call(host, "GET", f"/accounts/{account}").json()["previousApiKey"]
    assert shown["uid"] == old_uid and shown["state"] == "active"

    # The sweep's stage alone: a whole sweep would also renew the 10-day key again (it is due), and
    # that renewal deletes the key it replaced (tests/rotation/test_rotation.py).
    row = world.deps.clients.inventory.get(account)
    assert row is not None
    later = NOW + dt.timedelta(days=config.api_key_overlap_days + 1)
    assert advance_replaced_key(row, world.deps.clients, config, later) == "deactivated"
    assert not _palette_accepts(world, old_value)
    assert call(host, "GET", f"/accounts/{account}").json()["previousApiKey"]["state"] == "deactivated"

    answer = call(host, "POST", path)
    assert answer.status_code == 200, answer.text
    assert answer.json()["previousApiKey"]["uid"] == old_uid and answer.json()["previousApiKey"]["state"] == "active"
    assert _palette_accepts(world, old_value)
    assert call(host, "POST", path).status_code == 200  # already active: the same answer, nothing more
    assert [e["type"] for e in world.events() if e["type"].endswith("reactivated")] == [
        "palette.onboarding.apikey.reactivated"]

    def held(row: Any) -> None:  # the sweep has taken the deletion and is carrying it out
        row.previous_api_key_state = "deleting"
        row.previous_api_key_revoke_after = iso(utcnow() + STAGE_LEASE)
    world.deps.clients.inventory.update(account, held)
    busy = call(host, "POST", path)
    assert busy.status_code == 409 and int(busy.headers["Retry-After"]) >= 1

    other = onboard(world)["accountName"]  # onboarded without an API key: nothing was replaced
    assert call(host, "POST", f"/accounts/{other}/previous-api-key/reactivate").status_code == 404
    assert call(host, "POST", "/accounts/Not_A_Name/previous-api-key/reactivate").status_code == 400
