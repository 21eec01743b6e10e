"""The HTTP API, over real HTTP, as internal tools use it.

The real Function App is hosted once for this module by ``devstack.runner.LocalHost`` against the
session's local stack: the HTTP routes under ``/api`` and the Service Bus queue trigger both run,
so an accepted request goes through the queue and is processed for real. Outcomes are read back
from the HTTP API itself and from the stand-ins (Palette's admin API, Key Vault, the queue, the
events topic), never from our own clients' calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import function_app
from devstack.runner import LocalHost
from devstack.stack import Stack
from tests.onboarding.conftest import World, deps, graph_add_password, wait_for, world

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding

CLOUD_ACCOUNT_CREATE = ("POST", "/v1/cloudaccounts/azure")
FINISHED = {"succeeded", "failed"}


@pytest.fixture(scope="module")
def host(stack: Stack) -> Iterator[LocalHost]:
    """The app, hosted locally; short budgets so a failing request finishes quickly."""
    settings = {**stack.settings, "VALIDATION_BUDGET_SECONDS": "5", "RETRY_DELAYS_SECONDS": "1,1,1"}
    saved = {name: os.environ.get(name) for name in settings}
    local = LocalHost(function_app.app, settings)
    local.start()
    try:
        yield local
    finally:
        local.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Api:
    """The HTTP API, keeping every response body so a test can check none leaks a secret."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.bodies: list[str] = []

    def call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, url if "://" in url else self.base_url + url, timeout=30, **kwargs)
        self.bodies.append(response.text)
        return response

    def submit(self, body: Any) -> requests.Response:
        if isinstance(body, bytes):
            return self.call("POST", "/onboardings", data=body, headers={"Content-Type": "application/json"})
        return self.call("POST", "/onboardings", json=body)

    def state(self, request_id: str) -> requests.Response:
        return self.call("GET", f"/onboardings/{request_id}")

    def wait_finished(self, status_url: str, timeout: float = 60.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            response = self.call("GET", status_url)
            assert response.status_code == 200, response.text
            state: dict[str, Any] = response.json()
            return state if state["status"] in FINISHED else None
        return wait_for(finished, f"{status_url} to finish", timeout=timeout)


@pytest.fixture
def api(host: LocalHost, world: World) -> Api:
    return Api(host.http_url)


def _creates(world: World, method_path: tuple[str, str]) -> list[dict[str, Any]]:
    method, path = method_path
    return [r for r in world.palette_requests() if r["method"] == method and r["path"] == path]


def _peek_queue(stack: Stack) -> list[Any]:
    """Every message on the onboarding queue, locked ones included, without receiving any."""
    from azure.servicebus import ServiceBusClient

    with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(stack.settings["ONBOARDING_QUEUE"]) as receiver:
        return list(receiver.peek_messages(max_message_count=100))


def _body_of(message: Any) -> dict[str, Any]:
    raw = message.body if isinstance(message.body, bytes) else b"".join(message.body)
    result: dict[str, Any] = json.loads(raw)
    return result


# -- health ----------------------------------------------------------------------------------------

def test_health_answers_ok(host: LocalHost) -> None:
    response = requests.get(f"{host.http_url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- submit ----------------------------------------------------------------------------------------

def test_submit_is_accepted_then_completes_through_the_queue(api: Api, world: World) -> None:
    body = world.request()
    response = api.submit(body)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted == {"id": body["requestId"], "status": "queued",
                        "statusUrl": f"{api.base_url}/onboardings/{body['requestId']}"}
    state = api.wait_finished(accepted["statusUrl"])
    assert state["status"] == "succeeded", state
    accounts = world.palette_accounts(body["accountName"])
    assert len(accounts) == 1
    assert state["palette"]["accountUid"] == accounts[0]["uid"]


def test_bad_request_gets_one_error_per_bad_field_and_creates_nothing(api: Api, world: World) -> None:
    client_id = world.register_app()
    body = {"requestId": "not a ticket!", "accountName": "Bad_Name",
            "azure": {"tenantId": "not-a-guid", "clientId": client_id, "cloud": "Mars"},
            "colour": "red"}

    response = api.submit(body)

    assert response.status_code == 400
    problem = response.json()
    paths = [error["path"] for error in problem["errors"]]
    assert sorted(paths) == sorted(["requestId", "accountName", "azure.tenantId", "azure.cloud", "colour"])
    assert all(error["message"] for error in problem["errors"])
    assert api.call("GET", "/onboardings").json()["items"] == []
    assert world.palette_requests() == []
    assert _peek_queue(world.stack) == []
    assert world.graph_passwords(client_id) == []


def test_body_that_is_not_json_is_a_400_naming_the_body(api: Api, world: World) -> None:
    response = api.submit(b"{this is not json")

    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == [""]
    assert api.call("GET", "/onboardings").json()["items"] == []


def test_same_request_id_with_a_different_body_is_a_409(api: Api, world: World) -> None:
    body = world.request()
    first = api.submit(body)
    assert first.status_code == 202

    other = api.submit({**body, "accountName": body["accountName"] + "-other"})

    assert other.status_code == 409, other.text
    assert body["requestId"] in other.json()["detail"]
    state = api.wait_finished(first.json()["statusUrl"])
    assert state["status"] == "succeeded"
    assert state["accountName"] == body["accountName"]
    assert world.palette_accounts(body["accountName"] + "-other") == []
    # Still so once the pipeline has rewritten the state row; the original body is still welcome.
    assert api.submit({**body, "accountName": body["accountName"] + "-other"}).status_code == 409
    again = api.submit(body)
    assert again.status_code == 202
    assert again.json()["status"] == "succeeded"
    assert len(_creates(world, CLOUD_ACCOUNT_CREATE)) == 1


def test_same_body_twice_is_accepted_twice_and_onboarded_once(api: Api, world: World) -> None:
    body = world.request()

    first, second = api.submit(body), api.submit(body)

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] == second.json()["id"] == body["requestId"]
    state = api.wait_finished(first.json()["statusUrl"])
    assert state["status"] == "succeeded"
    # The queue is empty once every delivery has been settled (peek shows locked messages too).
    wait_for(lambda: _peek_queue(world.stack) == [], "the onboarding queue to drain")
    assert len(world.palette_accounts(body["accountName"])) == 1
    assert len(_creates(world, CLOUD_ACCOUNT_CREATE)) == 1
    assert len(world.graph_passwords(body["azure"]["clientId"])) == 1
    items = api.call("GET", "/onboardings").json()["items"]
    assert [item["requestId"] for item in items] == [body["requestId"]]
    finals = [e for e in world.events() if e["type"] == "palette.onboarding.validated"]
    assert len(finals) == 1


def test_inline_secret_goes_to_key_vault_and_only_a_reference_is_queued(api: Api, world: World) -> None:
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    client_id = world.register_app()
    value = graph_add_password(world, client_id)["secretText"]
    body = world.request(client_id=client_id)
    body["azure"]["secret"] = {"source": "inline", "value": value}
    # Palette answers the validation slowly once, so the message is still on the queue (locked by
    # the delivery that waits on Palette) when the test peeks at it.
    world.palette_fault(method="POST", path="^/v1/clouds/azure/account/validate$", latencyMs=3000, times=1)

    response = api.submit(body)

    assert response.status_code == 202, response.text
    queued = wait_for(lambda: [m for m in _peek_queue(world.stack) if m.message_id == body["requestId"]],
                      "the request's message on the queue")
    message = _body_of(queued[0])
    assert message["azure"]["secret"]["source"] == "keyVault"
    assert set(message["azure"]["secret"]) == {"source", "secretName", "version"}
    assert value not in json.dumps(message)

    state = api.wait_finished(response.json()["statusUrl"])
    assert state["status"] == "succeeded", state
    secret_id = state["palette"]["keyVaultSecretId"]
    name, _, version = urlsplit(secret_id).path.split("/secrets/", 1)[1].partition("/")
    assert (name, version) == (message["azure"]["secret"]["secretName"], message["azure"]["secret"]["version"])
    with SecretClient(world.stack.settings["KEY_VAULT_URL"], DefaultAzureCredential()) as vault:
        assert vault.get_secret(name, version).value == value
    # The given secret was used: Graph issued no other one.
    assert len(world.graph_passwords(client_id)) == 1
    api.call("GET", "/onboardings")
    events = world.events()
    assert any(e["type"] == "palette.onboarding.secret.stored" and e["data"]["source"] == "keyVault"
               for e in events)
    assert value not in json.dumps(events)
    assert value not in json.dumps(world.state_row(body["requestId"]), default=str)
    assert api.bodies and not [text for text in api.bodies if value in text]


def test_inline_secret_over_plain_http_from_elsewhere_is_refused(api: Api, world: World) -> None:
    """Only HTTPS (or loopback, where nothing leaves the machine) may carry a raw secret."""
    body = world.request()
    body["azure"]["secret"] = {"source": "inline", "value": "a-secret-value-that-must-not-travel"}

    response = api.call("POST", "/onboardings", json=body, headers={"Host": "onboarding.example.com"})

    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == ["azure.secret.source"]
    assert "a-secret-value-that-must-not-travel" not in response.text
    assert api.call("GET", "/onboardings").json()["items"] == []
    assert _peek_queue(world.stack) == []


# -- read --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_id", ["has space", "x" * 65, "semi;colon", "%C3%A9t%C3%A9"])
def test_a_request_id_that_breaks_the_schema_is_a_400(api: Api, request_id: str) -> None:
    response = api.call("GET", f"/onboardings/{request_id}")
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == "requestId"


def test_unknown_request_is_a_404(api: Api) -> None:
    response = api.state("NO-SUCH-TICKET")

    assert response.status_code == 404
    assert "NO-SUCH-TICKET" in response.json()["detail"]


def test_state_shows_every_step_and_the_palette_uids_but_no_secret(api: Api, world: World) -> None:
    client_id = world.register_app()
    value = graph_add_password(world, client_id)["secretText"]
    body = world.request(client_id=client_id)
    body["azure"]["secret"] = {"source": "inline", "value": value}
    body["sshKey"] = {"name": f"key-{body['accountName']}", "generate": True}
    api.wait_finished(api.submit(body).json()["statusUrl"])

    response = api.state(body["requestId"])

    assert response.status_code == 200
    state = response.json()
    assert state["requestId"] == body["requestId"]
    assert state["status"] == "succeeded"
    assert set(state["steps"]) >= {"check", "secret", "validate", "register", "sshkey", "verify"}
    assert all(step["outcome"] in {"succeeded", "skipped"} and step["at"] for step in state["steps"].values())
    palette = world.palette_state()
    assert state["palette"]["accountUid"] == world.palette_accounts(body["accountName"])[0]["uid"]
    assert state["palette"]["sshKeyUid"] in {key["uid"] for key in palette["sshKeys"]}
    assert not [key for key in state["palette"] if key.startswith("_")]
    assert value not in response.text
    assert "PRIVATE KEY" not in response.text


def test_list_filters_by_status(api: Api, world: World) -> None:
    good = world.request()
    bad = world.request()
    bad["azure"]["secret"] = {"source": "inline", "value": "not-a-secret-entra-ever-issued"}
    for body in (good, bad):
        assert api.submit(body).status_code == 202
    assert api.wait_finished(f"/onboardings/{good['requestId']}")["status"] == "succeeded"
    assert api.wait_finished(f"/onboardings/{bad['requestId']}")["status"] == "failed"

    succeeded = api.call("GET", "/onboardings", params={"status": "succeeded"})
    failed = api.call("GET", "/onboardings", params={"status": "failed"})
    everything = api.call("GET", "/onboardings")

    assert succeeded.status_code == failed.status_code == everything.status_code == 200
    assert [item["requestId"] for item in succeeded.json()["items"]] == [good["requestId"]]
    assert [item["requestId"] for item in failed.json()["items"]] == [bad["requestId"]]
    assert {item["requestId"] for item in everything.json()["items"]} == {good["requestId"], bad["requestId"]}
    assert all(item["status"] == "succeeded" for item in succeeded.json()["items"])


def test_bad_status_filter_is_a_400_naming_status(api: Api) -> None:
    response = api.call("GET", "/onboardings", params={"status": "finished-ish"})

    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == ["status"]
