"""Only what the product can prove is its own: a hand-made Palette account submitted through the
HTTP API, with its secret inline, is refused by the check, and neither the refusal, the drift
timer nor the DELETE route ever changes it or writes anything where rotation, drift or offboarding
read. Driven end to end: the real app hosted locally (its HTTP routes, queue trigger and timers)
against the stand-ins, through the real SDKs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.runner import LocalHost
from devstack.stack import DEVSTACK_TENANT_ID, Stack
from tests.onboarding.conftest import World, deps, graph_add_password, world
from tests.test_http_api import Api, hosted_app

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding

#: The drift pass every two seconds, so the test sees several passes.
DRIFT_EVERY_TWO_SECONDS = {"DRIFT_SCHEDULE": "*/2 * * * * *"}


@pytest.fixture(scope="module")
def host(stack: Stack) -> Iterator[LocalHost]:
    with hosted_app(stack, settings=DRIFT_EVERY_TWO_SECONDS) as local:
        yield local


@pytest.fixture
def api(host: LocalHost, world: World) -> Api:
    return Api(host.http_url, host.function_key)


def foreign_account(world: World, name: str) -> tuple[dict[str, Any], str, str]:
    """Another team's account, made by hand in Palette for its own app: (account, client id, secret)."""
    client_id = world.register_app()
    secret = graph_add_password(world, client_id, "made by hand")["secretText"]
    made = world.palette_call("POST", "/v1/cloudaccounts/azure", body={
        "metadata": {"name": name}, "spec": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id,
                                             "clientSecret": secret, "azureEnvironment": "AzurePublicCloud"}})
    assert made.status_code == 201, made.text
    [account] = world.palette_accounts(name)
    return account, client_id, secret


def key_vault_names(world: World) -> dict[str, list[dict[str, Any]]]:
    """Every secret in the vault, live or deleted, with its versions."""
    state = world.keyvault_state()
    return {secret["name"]: secret.get("versions", []) for secret in state["secrets"]}


def test_a_hand_made_account_submitted_inline_is_never_adopted_changed_or_deleted(api: Api, world: World) -> None:
    name = f"team-x-{int(time.time() * 1000) % 10**8}"
    account, client_id, secret = foreign_account(world, name)
    before_vault = key_vault_names(world)
    body = {"requestId": f"TEAM-X-{name}", "accountName": name,
            "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id,
                      "secret": {"source": "inline", "value": secret}}}

    response = api.submit(body)
    assert response.status_code == 202, response.text
    state = api.wait_finished(response.json()["statusUrl"])
    assert state["status"] == "failed" and state["error"]["reason"] == "account_name_clash", state

    # Nothing from the refused request is left in Key Vault: not under the account's name, and its
    # staged copy was taken back.
    after_vault = key_vault_names(world)
    assert f"palette-{name}-client-secret" not in after_vault
    staged = [n for n in after_vault if n not in before_vault]
    assert all(not [v for v in after_vault[n] if v.get("enabled", True)] or n.startswith("palette-staged-")
               for n in staged)
    assert not [n for n in staged if n.startswith("palette-staged-") and not _deleted(world, n)]

    time.sleep(5)  # two drift passes at least
    assert api.call("GET", f"/accounts/{name}").status_code == 404
    assert api.call("DELETE", f"/accounts/{name}").status_code == 404
    time.sleep(3)  # and another pass after the DELETE

    [still] = world.palette_accounts(name)
    assert still["uid"] == account["uid"]
    assert still["annotations"] == account["annotations"]  # no product annotations stamped on it
    assert still["clientSecretSha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert world.deps.clients.inventory.get(name) is None


def test_a_refused_inline_resubmission_leaves_the_managed_accounts_secret_alone(api: Api, world: World) -> None:
    body = world.request()
    response = api.submit(body)
    assert api.wait_finished(response.json()["statusUrl"])["status"] == "succeeded"
    versions = [(v.version, v.enabled) for v in world.secret_versions(f"palette-{body['accountName']}-client-secret")]

    refused = dict(body, requestId=f"{body['requestId']}-inline", palette={"project": "No-Such-Project"})
    refused["azure"] = {**body["azure"], "secret": {"source": "inline", "value": "not-a-secret-entra-issued"}}
    response = api.submit(refused)
    assert response.status_code == 202, response.text
    state = api.wait_finished(response.json()["statusUrl"])
    assert state["status"] == "failed" and state["error"]["reason"] == "project_not_found"
    after = [(v.version, v.enabled) for v in world.secret_versions(f"palette-{body['accountName']}-client-secret")]
    assert after == versions  # the account's current secret is still the one it had


def _deleted(world: World, name: str) -> bool:
    try:
        return world.deps.clients.secrets.get_deleted_secret(name) is not None
    except Exception:  # noqa: BLE001 - purged or never there: not live either way
        return True
