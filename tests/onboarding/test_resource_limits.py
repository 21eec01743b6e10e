"""Palette's own resource limits (cloud accounts, SSH keys, API keys per user) are checked before
anything is made: a request that would take the tenant past one is refused at its check step,
naming the limit, how many exist and how an admin raises it; an admin's ``PATCH`` of the limit lets
the request through; what a request made already is never counted against it again.

The limits are set through Palette's own ``PATCH /v1/tenants/{tenantUid}/resourceLimits``; every
stand-in is reset (limits back at Palette's defaults) around each test.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from shared.engine import OutcomeKind
from shared.operations import dry_run

from .test_resilience import HostKilled, kill_at, short_leases

if TYPE_CHECKING:
    from tests.onboarding.conftest import World

EVENT_WAIT = 0.5


# ------------------------------------------------------------------------------------- helpers

def tenant_uid(world: World) -> str:
    return str(world.palette_state()["tenantUid"])


def set_limits(world: World, **limits: int) -> None:
    """What a tenant admin does: Palette's own PATCH, checked against the spec like any call."""
    response = world.palette_call("PATCH", f"/v1/tenants/{tenant_uid(world)}/resourceLimits",
                                  body={"resources": [{"kind": k, "limit": v} for k, v in limits.items()]})
    assert response.status_code == 204, response.text


def everything(world: World) -> dict[str, Any]:
    """What the onboarding could have made anywhere: Palette objects, Graph passwords, Key Vault
    secrets and their versions."""
    palette = world.palette_state()
    passwords = {app["appId"]: sorted(p["keyId"] for p in app["passwordCredentials"])
                 for tenant in world.identity_state()["tenants"].values() for app in tenant["applications"]}
    secrets = {s["name"]: sorted(v["version"] for v in s["versions"]) for s in world.keyvault_state()["secrets"]}
    return {"cloudAccounts": palette["cloudAccounts"], "sshKeys": palette["sshKeys"], "apiKeys": palette["apiKeys"],
            "graphPasswords": passwords, "secrets": secrets}


def refused_at_check(world: World, body: dict[str, Any], *mentions: str) -> str:
    """Run ``body``: refused at its check with ``palette_limit_reached``, nothing made anywhere, and
    the ``failed`` event's message naming each of ``mentions``; returns that message."""
    before = everything(world)
    outcome = world.run(body)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "palette_limit_reached"), outcome.message
    assert everything(world) == before
    row = world.state_row(body["requestId"])
    assert (row["Status"], row["CurrentStep"], set(json.loads(row["Steps"]))) == ("failed", "check", {"check"})
    failed = [e for e in world.events(wait=EVENT_WAIT) if e["type"] == "palette.onboarding.failed"]
    assert len(failed) == 1 and failed[0]["data"]["reason"] == "palette_limit_reached"
    message: str = failed[0]["data"]["message"]
    assert message == outcome.message
    for word in (*mentions, "nothing was made", f"PATCH /v1/tenants/{tenant_uid(world)}/resourceLimits",
                 "Tenant Settings > Resource Limits", "new requestId"):
        assert word in message, (word, message)
    return message


def seed_accounts(world: World, count: int, *, project: str | None = None) -> None:
    """Another team's accounts (in the tenant, or in ``project``), through the stand-in's admin
    route, which no limit refuses."""
    import requests

    assert world.stack.palette is not None
    seed: dict[str, Any] = {"namePrefix": f"other-{project or 'tenant'}".lower(), "count": count}
    if project is not None:
        seed["projectUid"] = world.project_uid(project)
    requests.post(f"{world.stack.palette.url}/_devstack/cloudaccounts", json=seed, timeout=10).raise_for_status()


def upload_ssh_key(world: World, name: str, project: str = "Default") -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    made = world.palette_call("POST", "/v1/users/assets/sshkeys", project_uid=world.project_uid(project),
                              body={"metadata": {"name": name}, "spec": {"publicKey": public}})
    assert made.status_code == 201, made.text


def api_key_for(world: World, name: str, email: str) -> None:
    users = world.palette_state()["users"]
    owner = next(u["uid"] for u in users if u["emailId"] == email)
    expiry = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 86400))
    made = world.palette_call("POST", "/v1/apiKeys", body={"metadata": {"name": name},
                                                           "spec": {"userUid": owner, "expiry": expiry}})
    assert made.status_code == 201, made.text


# ------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("scope", ["tenant", "project"])
def test_a_request_past_the_cloud_account_limit_is_refused_before_anything_is_made(world: World, scope: str) -> None:
    """The limit is the tenant's, whichever scope the account would go to: accounts of every scope
    count (here another team's in the tenant, and one in project Team-A)."""
    seed_accounts(world, 2)
    seed_accounts(world, 1, project="Team-A")
    set_limits(world, cloudaccount=3)
    body = world.request(palette={"scope": scope, "project": "Team-A"})
    message = refused_at_check(world, body, "'cloudaccount' limit is 3", "holds 3 cloud accounts",
                               f"account '{body['accountName']}'")
    assert '{"kind": "cloudaccount", "limit": 4}' in message


def test_a_request_past_the_ssh_key_limit_is_refused_before_anything_is_made(world: World) -> None:
    upload_ssh_key(world, "someone-elses")
    set_limits(world, sshkey=1)
    body = world.request(sshKey={"name": "new-key", "generate": True})
    refused_at_check(world, body, "'sshkey' limit is 1", "holds 1 SSH keys", "SSH key 'new-key'")
    assert world.state_row(body["requestId"])["ErrorReason"] == "palette_limit_reached"


def test_a_request_past_the_api_key_limit_of_its_user_is_refused_and_another_users_is_not(world: World) -> None:
    api_key_for(world, "admins-own", "admin@example.com")
    set_limits(world, apiKey=1)
    body = world.request(apiKey={"name": "for-admin", "user": "admin@example.com", "expiresInDays": 7})
    refused_at_check(world, body, "'apiKey' limit is 1", "user admin@example.com", "API key 'for-admin'")

    other = world.request(apiKey={"name": "for-alice", "user": "alice.ops@example.com", "expiresInDays": 7})
    assert world.run(other).kind is OutcomeKind.SUCCEEDED  # Palette's limit on API keys is per user


def test_every_limit_exceeded_is_named_at_once(world: World) -> None:
    seed_accounts(world, 1)
    upload_ssh_key(world, "taken-slot")
    set_limits(world, cloudaccount=1, sshkey=1)
    body = world.request(sshKey={"name": "another", "generate": True})
    refused_at_check(world, body, "'cloudaccount' limit is 1", "'sshkey' limit is 1")


def test_the_dry_run_reports_the_limit_and_changes_nothing(world: World) -> None:
    seed_accounts(world, 2)
    set_limits(world, cloudaccount=2)
    body = world.request()
    before = everything(world)
    config = world.deps.settings.pipeline
    report = dry_run(json.dumps(body), world.deps.clients, allow_inline_secret=False, config=config)
    limits = next(c for c in report.checks if c.name == "palette.limits")
    assert (report.valid, limits.outcome.value, limits.reason) == (False, "notReady", "palette_limit_reached")
    assert "'cloudaccount' limit is 2" in limits.detail
    assert everything(world) == before

    set_limits(world, cloudaccount=10)
    again = dry_run(json.dumps(body), world.deps.clients, allow_inline_secret=False, config=config)
    limits = next(c for c in again.checks if c.name == "palette.limits")
    assert again.valid and limits.outcome.value == "ok" and "cloud accounts: 2 of 10" in limits.detail


# ------------------------------------------------------------------------------------- raised, then through

def test_raising_the_limit_through_palette_lets_the_request_through(world: World) -> None:
    seed_accounts(world, 2)
    set_limits(world, cloudaccount=2)
    body = world.request(sshKey={"name": "raised-key", "generate": True},
                         apiKey={"name": "raised-key", "user": "admin@example.com", "expiresInDays": 7})
    refused_at_check(world, body, "'cloudaccount' limit is 2")
    assert world.run(body).kind is OutcomeKind.DUPLICATE  # the same body under its requestId only answers that

    set_limits(world, cloudaccount=3)
    again = {**body, "requestId": body["requestId"] + "-again"}
    assert world.run(again).kind is OutcomeKind.SUCCEEDED
    assert [a["name"] for a in world.palette_accounts(body["accountName"])] == [body["accountName"]]
    # The tenant is now at its limit: the next new account is refused, the same one again is not.
    assert world.run(world.request()).reason == "palette_limit_reached"


# ------------------------------------------------------------------------------------- what exists already

def test_a_redelivery_after_the_account_was_made_is_not_refused_for_it(world: World) -> None:
    """The account this request made takes the tenant to its limit; the host dies right after. The
    redelivery does not meet the check again (it was recorded before anything was made), and would
    not count the account anyway: it finishes the request."""
    set_limits(world, cloudaccount=1, sshkey=1, apiKey=1)
    body = world.request(sshKey={"name": "redelivered", "generate": True},
                         apiKey={"name": "redelivered", "user": "admin@example.com", "expiresInDays": 7})
    config = short_leases(world)
    with pytest.raises(HostKilled):
        world.run(body, config=config, checkpoint=kill_at("register.saved"))
    assert len(world.palette_accounts(body["accountName"])) == 1
    time.sleep(1.2)  # the killed delivery's leases lapse

    outcome = world.run_to_the_end(body, config=config)

    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    state = world.palette_state()
    assert (len(state["cloudAccounts"]), len(state["sshKeys"]), len(state["apiKeys"])) == (1, 1, 1)


def test_a_lost_answer_to_the_create_at_the_limit_makes_one_account(world: World) -> None:
    """Palette made the account but its answer was lost: the step finds its own account instead of
    creating another (which the limit would refuse)."""
    set_limits(world, cloudaccount=1)
    world.palette_fault(path="^/v1/cloudaccounts/azure$", method="POST", dropAfterHandling=True, times=1)
    body = world.request()
    outcome = world.run_to_the_end(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    assert len(world.palette_state()["cloudAccounts"]) == 1


def test_onboarding_again_an_account_the_product_made_is_not_refused_at_the_limit(world: World) -> None:
    first = world.request(sshKey={"name": "kept-key", "generate": True})
    assert world.run(first).kind is OutcomeKind.SUCCEEDED
    set_limits(world, cloudaccount=1, sshkey=1)  # the tenant is full

    again = world.request(client_id=first["azure"]["clientId"], accountName=first["accountName"],
                          sshKey={"name": "kept-key", "generate": True})
    outcome = world.run(again)

    assert outcome.kind is OutcomeKind.SUCCEEDED, (outcome.reason, outcome.message)
    assert json.loads(world.state_row(again["requestId"])["Results"])["accountAction"] == "updated"
    assert len(world.palette_state()["cloudAccounts"]) == 1


def test_keys_the_check_cannot_count_make_palette_refuse_and_the_request_takes_back_what_it_made(
        world: World) -> None:
    """SSH keys of another project count against the tenant's limit, but the check counts the
    project's (one call): Palette refuses the upload, and the request fails with the same reason,
    taking back its account and its Graph password."""
    upload_ssh_key(world, "elsewhere", project="Team-A")
    set_limits(world, sshkey=1)
    body = world.request(sshKey={"name": "over", "generate": True})

    outcome = world.run(body)

    assert (outcome.kind, outcome.reason) == (OutcomeKind.FAILED, "palette_limit_reached"), outcome.message
    assert "resource limits" in outcome.message and "new requestId" in outcome.message
    assert world.palette_accounts(body["accountName"]) == []
    assert world.graph_passwords(body["azure"]["clientId"]) == []
