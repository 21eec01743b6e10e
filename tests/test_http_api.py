"""The HTTP API, over real HTTPS with function keys, as internal tools use it.

The real Function App is hosted once for this module by ``devstack.runner.LocalHost`` against the
session's local stack, over HTTPS with the stack's certificate: the HTTP routes under ``/api`` and
the Service Bus queue trigger both run, so an accepted request goes through the queue and is
processed for real. Outcomes are read back from the HTTP API itself and from the stand-ins
(Palette's admin API, Key Vault, the queue, the events topic), never from our own clients' calls.
Every response a test sees is validated against the OpenAPI document (``tests/api_contract.py``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import function_app
from devstack.runner import LocalHost
from devstack.stack import Stack
from tests.api_contract import conforms
from tests.onboarding.conftest import World, deps, graph_add_password, wait_for, world

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding

CLOUD_ACCOUNT_CREATE = ("POST", "/v1/cloudaccounts/azure")
FINISHED = {"succeeded", "failed"}
PROBLEM_JSON = "application/problem+json"
HOST_SETTINGS = {"VALIDATION_BUDGET_SECONDS": "5", "RETRY_DELAYS_SECONDS": "1,1,1"}


@contextmanager
def hosted_app(stack: Stack, *, tls: bool = True, settings: dict[str, str] | None = None,
               **kwargs: Any) -> Iterator[LocalHost]:
    """The real app, hosted locally (HTTPS with the stack's certificate unless ``tls`` is off);
    short budgets so a failing request finishes quickly; ``settings`` override app settings. The
    environment is put back afterwards."""
    settings = {**stack.settings, **HOST_SETTINGS, **(settings or {})}
    saved = {name: os.environ.get(name) for name in settings}
    assert stack.certificate is not None
    local = LocalHost(function_app.app, settings, tls=stack.certificate if tls else None, **kwargs)
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
    """The HTTP API with the function key; every response is checked against the OpenAPI document,
    and every body kept so a test can check none leaks a secret."""

    def __init__(self, base_url: str, function_key: str | None) -> None:
        self.base_url = base_url
        self.function_key = function_key
        self.bodies: list[str] = []

    def call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.function_key is not None:
            headers.setdefault("x-functions-key", self.function_key)
        response = requests.request(method, url if "://" in url else self.base_url + url, timeout=30,
                                    headers=headers, **kwargs)
        self.bodies.append(response.text)
        conforms(response)
        if response.status_code >= 400 and response.content:
            assert response.headers["Content-Type"].startswith(PROBLEM_JSON), response.text
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
    return Api(host.http_url, host.function_key)


def call(host: LocalHost, method: str, path: str, **kwargs: Any) -> requests.Response:
    """One call with the host's function key, its answer checked against the OpenAPI document."""
    return Api(host.http_url, host.function_key).call(method, path, **kwargs)


def _creates(world: World, method_path: tuple[str, str]) -> list[dict[str, Any]]:
    method, path = method_path
    return [r for r in world.palette_requests() if r["method"] == method and r["path"] == path]


def _peek_queue(stack: Stack) -> list[Any]:
    """Every message on the onboarding queue, locked ones included, without receiving any."""
    from azure.servicebus import ServiceBusClient

    with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(stack.settings["ONBOARDING_QUEUE"]) as receiver:
        return list(receiver.peek_messages(max_message_count=100))


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _body_of(message: Any) -> dict[str, Any]:
    raw = message.body if isinstance(message.body, bytes) else b"".join(message.body)
    result: dict[str, Any] = json.loads(raw)
    return result


# -- health ----------------------------------------------------------------------------------------

def test_health_is_ready_when_settings_table_queue_and_topic_answer(host: LocalHost) -> None:
    response = conforms(requests.get(f"{host.http_url}/health", timeout=30))  # no function key: anonymous

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert [(c["name"], c["outcome"]) for c in body["checks"]] == [
        ("settings", "ok"), ("stateTable", "ok"), ("queue", "ok"), ("backgroundQueue", "ok"), ("topic", "ok")]


def test_health_names_missing_settings_with_a_503(host: LocalHost, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import dependencies

    monkeypatch.delenv("KEY_VAULT_URL")
    monkeypatch.delenv("PALETTE_API_KEY")
    dependencies.reset()
    try:
        response = conforms(requests.get(f"{host.http_url}/health", timeout=30))
    finally:
        monkeypatch.undo()
        dependencies.reset()

    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert "KEY_VAULT_URL" in problem["detail"] and "PALETTE_API_KEY" in problem["detail"]
    assert [(c["name"], c["outcome"]) for c in problem["checks"]] == [
        ("settings", "missing"), ("stateTable", "skipped"), ("queue", "skipped"), ("backgroundQueue", "skipped"),
        ("topic", "skipped")]


def test_health_names_an_unreachable_queue_with_a_503(host: LocalHost, stack: Stack,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import dependencies

    monkeypatch.setenv("ONBOARDING_QUEUE", "no-such-queue")
    dependencies.reset()
    try:
        response = conforms(requests.get(f"{host.http_url}/health", timeout=30))
    finally:
        monkeypatch.undo()
        dependencies.reset()

    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["queue"]["outcome"] == "unavailable"
    assert checks["topic"]["outcome"] == checks["stateTable"]["outcome"] == "ok"
    for value in (stack.settings["ServiceBusConnection"], stack.settings["AzureWebJobsStorage"]):
        assert value not in response.text


# -- submit ----------------------------------------------------------------------------------------

def test_submit_is_accepted_then_completes_through_the_queue(api: Api, world: World) -> None:
    body = world.request()
    response = api.submit(body)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted == {"id": body["requestId"], "status": "queued",
                        "statusUrl": f"{api.base_url}/onboardings/{body['requestId']}"}
    assert response.headers["Location"] == accepted["statusUrl"]
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


def test_a_body_error_is_told_without_an_empty_path(api: Api) -> None:
    response = api.submit(b"{this is not json")

    assert response.status_code == 400
    assert response.json()["detail"] == ("The onboarding request is invalid: the request body is not valid JSON "
                                         "(line 1, column 2)")


@pytest.mark.parametrize("empty", [b"", b"  \n"])
def test_an_empty_body_is_a_400_saying_it_is_empty(api: Api, world: World, empty: bytes) -> None:
    response = api.submit(empty)

    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["errors"] == [{"path": "", "message": "the request body is empty; send the request as a JSON "
                                                         "object"}]
    assert problem["detail"] == "The onboarding request is invalid: " + problem["errors"][0]["message"]
    assert world.state_rows() == []


def test_an_offboarding_body_is_pointed_to_delete_and_told_nothing_else(api: Api, world: World) -> None:
    body = {"operation": "offboard", "requestId": "OFF-1", "accountName": "some-account", "removeSshKey": True}

    response = api.submit(body)

    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["path"] == "operation" and "DELETE /api/accounts/{name}" in error["message"]
    assert "is required" not in response.json()["detail"]
    assert world.state_rows() == []
    assert _peek_queue(world.stack) == []


def test_same_request_id_with_a_different_body_is_a_409(api: Api, world: World) -> None:
    body = world.request()
    first = api.submit(body)
    assert first.status_code == 202

    other = api.submit({**body, "accountName": body["accountName"] + "-other"})

    assert other.status_code == 409, other.text
    assert body["requestId"] in other.json()["detail"]
    assert other.json()["type"] == "urn:palette-onboarding:problem:request-id-conflict"
    assert [e["path"] for e in other.json()["errors"]] == ["requestId"]
    assert "new requestId" in other.json()["errors"][0]["message"]
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


def test_inline_secret_is_staged_and_only_a_reference_is_queued(api: Api, world: World) -> None:
    """The value is kept under a staging name of its own (never the account's secret, which rotation,
    drift and offboarding read) until the request passed its checks; then it becomes the account's
    client secret and the staged copy is deleted."""
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
    assert message["azure"]["secret"]["source"] == "staged"
    assert set(message["azure"]["secret"]) == {"source", "secretName", "version"}
    staged = message["azure"]["secret"]["secretName"]
    assert staged.startswith("palette-staged-")
    assert value not in json.dumps(message)

    state = api.wait_finished(response.json()["statusUrl"])
    assert state["status"] == "succeeded", state
    secret_id = state["palette"]["keyVaultSecretId"]
    name, _, version = urlsplit(secret_id).path.split("/secrets/", 1)[1].partition("/")
    assert name == f"palette-{body['accountName']}-client-secret"
    with SecretClient(world.stack.settings["KEY_VAULT_URL"], DefaultAzureCredential()) as vault:
        assert vault.get_secret(name, version).value == value
        assert not [p for p in vault.list_properties_of_secrets() if p.name == staged]  # deleted once promoted
    # The given secret was used: Graph issued no other one.
    assert len(world.graph_passwords(client_id)) == 1
    api.call("GET", "/onboardings")
    events = world.events()
    assert any(e["type"] == "palette.onboarding.secret.stored" and e["data"]["source"] == "inline"
               for e in events)
    assert value not in json.dumps(events)
    assert value not in json.dumps(world.state_row(body["requestId"]), default=str)
    assert api.bodies and not [text for text in api.bodies if value in text]


def test_a_refused_inline_request_runs_again_with_its_secret_once_corrected(api: Api, world: World) -> None:
    """The first run's staged secret was taken back (soft-deleted, so Key Vault refuses its name):
    the corrected body's run stages the secret under a name of its own and onboards with it."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    client_id = world.register_app()
    value = graph_add_password(world, client_id)["secretText"]
    body = world.request(client_id=client_id, palette={"project": "No-Such-Project"})
    body["azure"]["secret"] = {"source": "inline", "value": value}
    refused = api.wait_finished(api.submit(body).json()["statusUrl"])
    assert (refused["status"], refused["error"]["reason"]) == ("failed", "project_not_found"), refused

    corrected = {**body, "palette": {"project": "Default"}}
    accepted = api.submit(corrected)

    assert (accepted.status_code, accepted.json()["status"]) == (202, "queued"), accepted.text
    state = api.wait_finished(accepted.json()["statusUrl"])
    assert (state["status"], state["run"]) == ("succeeded", 2), state
    name = f"palette-{body['accountName']}-client-secret"
    with SecretClient(world.stack.settings["KEY_VAULT_URL"], DefaultAzureCredential()) as vault:
        assert vault.get_secret(name).value == value
        assert not [p.name for p in vault.list_properties_of_secrets() if p.name.startswith("palette-staged-")]
    assert len(world.graph_passwords(client_id)) == 1  # the given secret, no other
    assert value not in json.dumps(world.state_row(body["requestId"]), default=str)


def test_inline_secret_over_plain_http_is_refused(stack: Stack, world: World) -> None:
    """Only HTTPS may carry a raw secret; loopback is no exception (the local runner serves HTTPS)."""
    body = world.request()
    body["azure"]["secret"] = {"source": "inline", "value": "a-secret-value-that-must-not-travel"}

    with hosted_app(stack, tls=False) as plain:
        assert plain.http_url.startswith("http://127.0.0.1")
        api = Api(plain.http_url, plain.function_key)
        response = api.call("POST", "/onboardings", json=body)

    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == ["azure.secret.source"]
    assert "a-secret-value-that-must-not-travel" not in response.text
    assert world.state_rows() == []
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
    assert state["palette"]["sshKeyOwned"] is True  # a flag, not the text "true"
    assert (state["currentStep"], state["run"]) == ("done", 1)
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


# -- errors, limits, paging ----------------------------------------------------------------------------

def test_every_error_is_a_problem_with_every_member(api: Api) -> None:
    response = api.state("NO-SUCH-TICKET-2")

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail", "errors"}
    assert (problem["type"], problem["status"], problem["errors"]) == ("about:blank", 404, [])


def test_a_body_over_64_kib_is_a_413_before_it_is_parsed(api: Api, world: World) -> None:
    body = world.request()
    body["azure"]["tenantName"] = "x" * (64 * 1024)

    for route in ("/onboardings", "/onboardings/validate"):
        response = api.call("POST", route, json=body)
        assert response.status_code == 413, response.text
        assert response.json()["status"] == 413
    assert world.state_rows() == []
    assert _peek_queue(world.stack) == []


def test_a_20_mb_chunked_body_is_a_413_too(api: Api, world: World) -> None:
    """A body sent in chunks (no Content-Length) reaches the app whole, as the host passes it, and
    is measured there."""
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * (1024 * 1024)

    response = requests.post(f"{api.base_url}/onboardings", data=chunks(), verify=world.verify, timeout=30,
                             headers={"Content-Type": "application/json", "x-functions-key": api.function_key or ""})

    assert response.status_code == 413, response.text
    assert response.json()["status"] == 413
    assert world.state_rows() == []


def test_without_the_function_key_every_route_but_health_and_openapi_is_a_401(host: LocalHost) -> None:
    base = host.http_url
    assert requests.get(f"{base}/onboardings", timeout=10).status_code == 401
    assert requests.get(f"{base}/onboardings", headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
    assert requests.post(f"{base}/onboardings/validate", json={}, timeout=10).status_code == 401
    assert requests.get(f"{base}/accounts", timeout=10).status_code == 401
    assert conforms(requests.get(f"{base}/onboardings", params={"code": host.function_key}, timeout=10)).ok
    assert conforms(requests.get(f"{base}/openapi.json", timeout=10)).ok


def test_the_served_document_is_the_one_in_the_repository(api: Api) -> None:
    from tests.api_contract import document

    response = api.call("GET", "/openapi.json", headers={"x-functions-key": ""})

    assert response.status_code == 200
    assert response.json() == document()
    assert response.json()["openapi"].startswith("3.1")


@pytest.mark.parametrize(("params", "path"), [({"top": "0"}, "top"), ({"top": "many"}, "top"),
                                              ({"top": "201"}, "top"),
                                              ({"continuationToken": "not-a-token"}, "continuationToken"),
                                              ({"status": "finished-ish"}, "status")])
def test_a_bad_list_parameter_is_a_400_naming_it(api: Api, params: dict[str, str], path: str) -> None:
    response = api.call("GET", "/onboardings", params=params)

    assert response.status_code == 400, response.text
    assert [error["path"] for error in response.json()["errors"]] == [path]


#: Every route that takes an account name, with the name of its path parameter.
ACCOUNT_NAME_ROUTES = [("GET", "/accounts/{}", "name"), ("DELETE", "/accounts/{}", "name"),
                       ("POST", "/accounts/{}/previous-api-key/reactivate", "name"),
                       ("POST", "/rotations/{}", "accountName")]


@pytest.mark.parametrize(("method", "route", "parameter"), ACCOUNT_NAME_ROUTES,
                         ids=[f"{m} {r}" for m, r, _ in ACCOUNT_NAME_ROUTES])
def test_a_malformed_account_name_is_the_same_400_on_every_route(api: Api, method: str, route: str,
                                                                  parameter: str) -> None:
    """A name that breaks the schema is a 400 naming the path parameter and the rule; a well-formed
    name the product does not manage stays a 404."""
    malformed = api.call(method, route.format("Not_A_Name"))
    unknown = api.call(method, route.format("no-such-account"))

    assert malformed.status_code == 400, malformed.text
    problem = malformed.json()
    assert problem["type"] == "urn:palette-onboarding:problem:invalid-parameter"
    assert problem["errors"] == [{"path": parameter, "message": "must be 3-64 characters: lower-case letters, "
                                                                "digits or '-', starting with a letter"}]
    assert problem["detail"].startswith(f"{parameter} must be 3-64 characters")
    assert unknown.status_code == 404, unknown.text


def test_a_dependency_down_is_a_503_that_says_how_to_retry(api: Api, world: World,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A read says it can be retried; a submission that sending it again is safe; both with
    Retry-After."""
    from devstack.httpbase import Fault
    from devstack.tableproxy import connection_string, start_table_proxy
    from functions import dependencies

    endpoint = next(part.split("=", 1)[1] for part in world.stack.settings["AzureWebJobsStorage"].split(";")
                    if part.startswith("TableEndpoint="))
    proxy = start_table_proxy(endpoint)
    proxy.add_fault(Fault(method=None, path_regex=".*", status=403))
    monkeypatch.setenv("AzureWebJobsStorage", connection_string(proxy))
    dependencies.reset()
    try:
        read = api.state("T-503")
        submitted = api.submit(world.request())
    finally:
        monkeypatch.undo()
        dependencies.reset()
        proxy.stop()

    for response in (read, submitted):
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "urn:palette-onboarding:problem:dependency-unavailable"
        assert int(response.headers["Retry-After"]) > 0
    assert "the read can be retried" in read.json()["detail"]
    assert "submit" not in read.json()["detail"].lower() and "sending" not in read.json()["detail"].lower()
    assert "sending the same request again is safe" in submitted.json()["detail"]


# -- the dry run -----------------------------------------------------------------------------------------

def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def test_a_dry_run_reports_every_check_and_changes_nothing(api: Api, world: World) -> None:
    body = world.request(sshKey={"name": "dry-run-key", "generate": True},
                         apiKey={"name": "dry-run-api-key", "user": "admin@example.com", "expiresInDays": 7},
                         palette={"privateCloudGateway": "pcg-east"})
    world.events()
    before = world.snapshot()

    response = api.call("POST", "/onboardings/validate", json=body)

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["valid"], report["requestId"], report["accountName"]) == (True, body["requestId"],
                                                                             body["accountName"])
    checks = _checks(report)
    assert list(checks) == ["schema", "names", "requestId", "palette.project", "palette.privateCloudGateway",
                            "palette.user", "palette.apiKey", "palette.account", "palette.sshKey", "palette.limits",
                            "keyVault.client-secret", "keyVault.ssh-key", "keyVault.api-key", "graph.application"]
    assert all(check["outcome"] == "ok" for check in checks.values()), report
    assert {name: check.get("action") for name, check in checks.items() if "action" in check} == {
        "requestId": "create", "palette.apiKey": "create", "palette.account": "create", "palette.sshKey": "create",
        "keyVault.client-secret": "create", "keyVault.ssh-key": "create", "keyVault.api-key": "create",
        "graph.application": "update"}
    assert "nothing was written" in checks["graph.application"]["detail"]
    assert f"palette-{body['accountName']}-client-secret" in checks["names"]["detail"]
    # No side effect anywhere: every stand-in holds what it held, and only reads were made.
    assert world.snapshot() == before
    assert world.events() == []
    searches = {("POST", "/v1/users/summary")}  # Palette's user search is a POST that only reads
    writes = [(r["method"], r["path"]) for r in world.palette_requests() + _requests_of(world, "identity")
              + _requests_of(world, "keyvault") if r["method"] != "GET" and (r["method"], r["path"]) not in searches]
    assert writes == []


def _requests_of(world: World, service: str) -> list[dict[str, Any]]:
    server = world.stack.identity_https if service == "identity" else world.stack.keyvault
    assert server is not None
    return requests.get(f"{server.url}/_devstack/requests", verify=world.verify, timeout=10).json()["items"]


def test_a_dry_run_names_each_clash_and_the_pipeline_fails_on_the_first_one(api: Api, world: World) -> None:
    """Every problem at once, with the field to change; the check step of a real run stops at the
    first of them with the same reason."""
    body = world.request(client_id=str(uuid.uuid4()),  # an app nobody registered
                         sshKey={"name": "clash-key", "generate": True},
                         palette={"project": "No-Such-Project", "privateCloudGateway": "pcg-west"})
    world.deps.clients.secrets.set_secret(f"palette-{body['accountName']}-client-secret", _secret("someone else's"),
                                          content_type="text/plain", tags={})
    before = world.snapshot()

    report = api.call("POST", "/onboardings/validate", json=body).json()

    checks = _checks(report)
    assert report["valid"] is False
    assert {name: (c["outcome"], c.get("reason"), c.get("field")) for name, c in checks.items()
            if c["outcome"] != "ok"} == {
        "palette.project": ("missing", "project_not_found", "palette.project"),
        "palette.privateCloudGateway": ("notReady", "pcg_not_running", "palette.privateCloudGateway"),
        "palette.sshKey": ("skipped", None, None),
        "keyVault.client-secret": ("clash", "secret_name_clash", "accountName"),
        "graph.application": ("missing", "app_not_found", "azure.clientId"),
    }
    assert checks["palette.account"]["action"] == "create"
    assert world.snapshot() == before

    outcome = world.run(body)
    assert (outcome.kind.value, outcome.reason) == ("failed", "project_not_found")


def test_a_dry_run_sees_an_account_someone_else_made(api: Api, world: World) -> None:
    body = world.request()
    by_hand = graph_add_password(world, body["azure"]["clientId"])["secretText"]
    made = world.palette_call("POST", "/v1/cloudaccounts/azure", body={
        "metadata": {"name": body["accountName"]},
        "spec": {"tenantId": body["azure"]["tenantId"], "clientId": body["azure"]["clientId"],
                 "clientSecret": by_hand, "azureEnvironment": "AzurePublicCloud"}})
    assert made.status_code == 201, made.text

    checks = _checks(api.call("POST", "/onboardings/validate", json=body).json())

    assert (checks["palette.account"]["outcome"], checks["palette.account"]["action"],
            checks["palette.account"]["reason"]) == ("clash", "clash", "account_name_clash")
    assert by_hand not in json.dumps(checks)
    outcome = world.run(body)
    assert outcome.reason == "account_name_clash"


def test_a_dry_run_of_a_bad_body_is_one_schema_check_with_field_errors(api: Api, world: World) -> None:
    body = {"requestId": "DRY-1", "accountName": "Bad_Name", "azure": {"tenantId": "nope", "clientId": "nope"}}

    response = api.call("POST", "/onboardings/validate", json=body)

    assert response.status_code == 200
    report = response.json()
    assert (report["valid"], report["requestId"]) == (False, "DRY-1")
    [schema] = report["checks"]
    assert (schema["name"], schema["outcome"]) == ("schema", "invalid")
    assert sorted(e["path"] for e in schema["errors"]) == ["accountName", "azure.clientId", "azure.tenantId"]
    assert world.palette_requests() == []


def test_a_dry_run_after_a_submission_says_the_request_id_is_taken(intake: Api, api: Api, world: World) -> None:
    body = world.request()
    assert intake.submit(body).status_code == 202

    same = _checks(api.call("POST", "/onboardings/validate", json=body).json())
    other = _checks(api.call("POST", "/onboardings/validate",
                             json={**body, "accountName": body["accountName"] + "-x"}).json())["requestId"]

    assert (same["requestId"]["outcome"], same["requestId"]["action"]) == ("ok", "reuse")
    assert "was submitted with this body" in same["requestId"]["detail"]
    assert "starts nothing new" in same["requestId"]["detail"]
    assert list(same) == ["schema", "names", "requestId"]  # no lookup: submitting it again runs nothing
    assert (other["outcome"], other["action"], other["reason"]) == ("clash", "clash", "request_id_conflict")


def test_a_dry_run_of_a_body_that_succeeded_says_submitting_it_again_does_nothing(api: Api, world: World) -> None:
    """The dry run decides as the submission does: a body that succeeded is not "account would be
    updated, a password would be added" but "already done by request X"."""
    body = world.request()
    state = api.wait_finished(api.submit(body).json()["statusUrl"])
    assert state["status"] == "succeeded", state
    calls = len(world.palette_requests())

    report = api.call("POST", "/onboardings/validate", json=body).json()

    assert report["valid"] is True
    checks = _checks(report)
    assert list(checks) == ["schema", "names", "requestId"]
    request_id = checks["requestId"]
    assert (request_id["outcome"], request_id["action"]) == ("ok", "reuse")
    assert f"request {body['requestId']} already succeeded" in request_id["detail"]
    assert "does nothing" in request_id["detail"] and f"/api/onboardings/{body['requestId']}" in request_id["detail"]
    assert len(world.palette_requests()) == calls  # not even a lookup
    again = api.submit(body)
    assert (again.status_code, again.json()["status"]) == (202, "succeeded")
    assert len(_creates(world, CLOUD_ACCOUNT_CREATE)) == 1
    assert len(world.graph_passwords(body["azure"]["clientId"])) == 1


def test_a_request_that_failed_at_validate_names_validate_as_its_step(api: Api, world: World) -> None:
    """The status names the step that failed, not the last step another branch recorded."""
    body = world.request(apiKey={"name": f"key-{uuid.uuid4().hex[:8]}", "user": "admin@example.com",
                                 "expiresInDays": 7})
    body["azure"]["secret"] = {"source": "inline", "value": "not-a-secret-entra-ever-issued"}

    state = api.wait_finished(api.submit(body).json()["statusUrl"])

    assert (state["status"], state["error"]["reason"]) == ("failed", "credentials_invalid"), state
    assert state["currentStep"] == "validate"
    assert state["steps"]["validate"]["outcome"] == "failed"
    assert state["steps"]["apikey"]["outcome"] == "succeeded"  # recorded after the secret, before the failure

