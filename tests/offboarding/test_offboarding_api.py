"""Offboarding over real HTTP: ``DELETE /api/accounts/{name}`` and the dry run of an offboarding
body, with the app hosted by the local runner (its queue trigger carries the offboarding out).
Every answer is checked against the OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.offboarding.test_offboarding import (
    API_USER,
    assert_offboarded,
    deleted_secrets,
    offboarding,
    onboard,
    seed_cluster,
    services,
)
from tests.onboarding.conftest import wait_for
from tests.test_http_api import call

if TYPE_CHECKING:
    from devstack.runner import LocalHost
    from tests.onboarding.conftest import World


def finished(host: LocalHost, status_url: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        state: dict[str, Any] = call(host, "GET", status_url).json()
        return state if state["status"] in ("succeeded", "failed") else None
    return wait_for(done, f"{status_url} to finish")


def test_delete_offboards_and_a_second_delete_answers_with_the_same_offboarding(host: LocalHost,
                                                                              world: World) -> None:
    body = onboard(world, sshKey={"name": "http-off-key", "generate": True},
                   apiKey={"name": "http-off-api-key", "user": API_USER, "expiresInDays": 30})
    account = body["accountName"]

    accepted = call(host, "DELETE", f"/accounts/{account}?removeSshKey=true&requestId=TICKET-77")

    assert accepted.status_code == 202, accepted.text
    answer = accepted.json()
    assert answer["id"] == "TICKET-77" and accepted.headers["Location"] == answer["statusUrl"]
    assert answer["statusUrl"].endswith("/api/onboardings/TICKET-77")
    state = finished(host, answer["statusUrl"])
    assert state["status"] == "succeeded" and state["operation"] == "offboard", state
    assert any(item.startswith("Palette cloud account") for item in state["removed"])
    assert any(item.startswith("SSH key http-off-key") for item in state["removed"])
    # Each step says what it removed (by kind and uid, keyId or name), not only how many.
    steps = state["steps"]
    for item in state["removed"]:
        assert any(item in steps[name]["detail"] for name in ("account", "keys", "passwords", "secrets")), item
        assert item in steps["inventory"]["detail"], item
    assert steps["account"]["detail"].startswith("Removed: Palette cloud account ")
    assert "Graph password " in steps["passwords"]["detail"]
    assert_offboarded(world, body, ssh_key_kept=False)
    row = call(host, "GET", f"/accounts/{account}").json()
    assert row["status"] == "offboarded" and row["offboarding"]["id"] == "TICKET-77" and row["offboarding"]["at"]

    again = call(host, "DELETE", f"/accounts/{account}")
    assert again.status_code == 200 and again.json()["id"] == "TICKET-77"
    assert again.json()["status"] == "succeeded"


def test_two_deletes_at_once_start_one_offboarding(host: LocalHost, world: World) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = onboard(world)
    account = body["accountName"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: call(host, "DELETE", f"/accounts/{account}"), range(4)))
    assert {a.status_code for a in answers} <= {200, 202}
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1, ids
    [offboarding_id] = ids
    finished(host, f"/onboardings/{offboarding_id}")
    offboarded = [e for e in world.events() if e["type"] == "palette.onboarding.offboarded"]
    assert [e["data"]["requestId"] for e in offboarded] == [offboarding_id]


def test_delete_says_what_is_wrong(host: LocalHost, world: World) -> None:
    assert call(host, "DELETE", "/accounts/never-onboarded").status_code == 404
    bad = call(host, "DELETE", "/accounts/some-account?removeSshKey=yes&requestId=no%20spaces")
    assert bad.status_code == 400
    assert {e["path"] for e in bad.json()["errors"]} == {"removeSshKey", "requestId"}
    submitted = call(host, "POST", "/onboardings", json=offboarding("some-account"))
    assert submitted.status_code == 400
    assert "DELETE /api/accounts" in submitted.json()["errors"][0]["message"]


def test_a_cluster_makes_the_offboarding_fail_naming_it(host: LocalHost, world: World) -> None:
    body = onboard(world)
    [palette_account] = world.palette_accounts(body["accountName"])
    seed_cluster(world, "payments-prod", palette_account["uid"])

    answer = call(host, "DELETE", f"/accounts/{body['accountName']}").json()
    state = finished(host, answer["statusUrl"])

    assert state["status"] == "failed" and state["error"]["reason"] == "account_in_use"
    assert "payments-prod" in state["error"]["message"] and state["removed"] == []
    assert world.palette_accounts(body["accountName"])


def test_the_dry_run_of_an_offboarding_tells_what_would_be_removed_and_changes_nothing(host: LocalHost,
                                                                                    world: World) -> None:
    body = onboard(world, apiKey={"name": "dry-api-key", "user": API_USER, "expiresInDays": 30})
    before = services(world)

    report = call(host, "POST", "/onboardings/validate", json=offboarding(body["accountName"])).json()

    assert report["valid"] and report["operation"] == "offboard"
    removed = " | ".join(report["wouldRemove"])
    assert "Palette cloud account" in removed and "Palette API key dry-api-key" in removed
    assert "Graph password" in removed and removed.count("Key Vault secret") == 2
    assert {c["name"] for c in report["checks"]} >= {"schema", "requestId", "account", "palette.account",
                                                      "palette.keys", "graph.passwords", "keyVault.secrets"}
    assert services(world) == before

    [palette_account] = world.palette_accounts(body["accountName"])
    seed_cluster(world, "dry-cluster", palette_account["uid"])
    blocked = call(host, "POST", "/onboardings/validate", json=offboarding(body["accountName"])).json()
    assert not blocked["valid"]
    [account_check] = [c for c in blocked["checks"] if c["name"] == "account"]
    assert account_check["outcome"] == "clash" and "dry-cluster" in account_check["detail"]

    unknown = call(host, "POST", "/onboardings/validate", json=offboarding("never-onboarded")).json()
    assert not unknown["valid"] and unknown["checks"][-1]["outcome"] == "missing"
    bad = call(host, "POST", "/onboardings/validate", json={**offboarding("x"), "removeApiKey": "no"}).json()
    assert not bad["valid"] and bad["checks"][0]["name"] == "schema"


def test_onboarding_again_through_http_recovers_the_deleted_secrets_when_asked(host: LocalHost,
                                                                            world: World) -> None:
    body = onboard(world)
    account = body["accountName"]
    done = call(host, "DELETE", f"/accounts/{account}").json()
    finished(host, done["statusUrl"])
    again = {**body, "requestId": body["requestId"] + "-again", "recoverDeletedSecrets": True}

    report = call(host, "POST", "/onboardings/validate", json=again).json()
    assert report["valid"], report
    [secret_check] = [c for c in report["checks"] if c["name"] == "keyVault.client-secret"]
    assert secret_check["action"] == "recover"
    refused = call(host, "POST", "/onboardings/validate", json={**again, "recoverDeletedSecrets": False}).json()
    [blocked] = [c for c in refused["checks"] if c["name"] == "keyVault.client-secret"]
    assert blocked["outcome"] == "clash" and blocked["field"] == "recoverDeletedSecrets"

    accepted = call(host, "POST", "/onboardings", json=again)
    assert accepted.status_code == 202, accepted.text
    state = finished(host, accepted.json()["statusUrl"])
    assert state["status"] == "succeeded", state
    assert deleted_secrets(world, account) == []
    assert call(host, "GET", f"/accounts/{account}").json()["status"] == "managed"


def test_a_refused_onboarding_runs_again_under_its_request_id_once_corrected(host: LocalHost, world: World) -> None:
    """``secret_name_deleted`` advises setting ``recoverDeletedSecrets`` and submitting again, and that
    is what happens: the request was refused at its check and made nothing, so the corrected body
    runs under the same requestId. The dry run says beforehand what each resubmission would do."""
    body = onboard(world)
    account = body["accountName"]
    finished(host, call(host, "DELETE", f"/accounts/{account}").json()["statusUrl"])
    world.events()
    again = {**body, "requestId": body["requestId"] + "-again"}
    status_url = call(host, "POST", "/onboardings", json=again).json()["statusUrl"]
    refused = finished(host, status_url)
    assert (refused["status"], refused["error"]["reason"], refused["currentStep"]) == (
        "failed", "secret_name_deleted", "check")
    advice = refused["error"]["message"]
    assert "Set recoverDeletedSecrets to true" in advice and "and submit the request again" in advice
    assert "the corrected body runs under the same requestId" in advice

    same = call(host, "POST", "/onboardings/validate", json=again).json()
    corrected = {**again, "recoverDeletedSecrets": True}
    ahead = call(host, "POST", "/onboardings/validate", json=corrected).json()

    assert same["valid"] is False and [c["name"] for c in same["checks"]] == ["schema", "names", "requestId"]
    [told] = [c for c in same["checks"] if c["name"] == "requestId"]
    assert (told["outcome"], told["action"]) == ("clash", "reuse")
    assert "secret_name_deleted" in told["detail"] and f"/api/onboardings/{again['requestId']}" in told["detail"]
    assert ahead["valid"] is True, ahead
    checks = {c["name"]: c for c in ahead["checks"]}
    assert (checks["requestId"]["action"], checks["keyVault.client-secret"]["action"]) == ("rerun", "recover")
    assert services(world)["keyVault"] == world.snapshot()["keyVault"]  # the dry runs changed nothing

    unchanged = call(host, "POST", "/onboardings", json=again)
    assert (unchanged.status_code, unchanged.json()["status"]) == (202, "failed")  # runs nothing
    accepted = call(host, "POST", "/onboardings", json=corrected)
    assert (accepted.status_code, accepted.json()["status"]) == (202, "queued"), accepted.text
    state = finished(host, status_url)

    assert (state["status"], state["run"], state["currentStep"], state["error"]) == ("succeeded", 2, "done", None)
    assert state["steps"]["check"]["outcome"] == "succeeded"
    assert deleted_secrets(world, account) == []
    events = world.events()
    assert len({e["id"] for e in events}) == len(events)
    runs = [(e["type"].removeprefix("palette.onboarding."), e["data"].get("run", 1)) for e in events]
    assert sorted(runs) == [("account.registered", 2), ("failed", 1), ("requested", 1), ("requested", 2),
                            ("secret.stored", 2), ("validated", 2)]
