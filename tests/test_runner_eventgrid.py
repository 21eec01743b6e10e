"""The local runner hosts Event Grid triggers as the Functions host's Event Grid extension does.

A test-only Function App (below) with two ``event_grid_trigger`` functions is hosted by
``LocalHost`` against the session's stack. End to end: a secret written through the real
``SecretClient`` nears expiry, the vault's Event Grid subscription (validated by the host's
webhook) delivers ``SecretNearExpiry`` to ``/runtime/webhooks/eventgrid``, and the probe function
gets an ``azure.functions.EventGridEvent`` with Key Vault's data.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import TYPE_CHECKING, Any

import azure.functions as func
import pytest
import requests
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from devstack.keyvault.events import SECRET_NEAR_EXPIRY, vault_resource_id
from devstack.runner_eventgrid import webhook_url
from tests.test_runner import hosted

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.runner import LocalHost
    from devstack.stack import Stack

NOW = dt.datetime(2031, 3, 1, tzinfo=dt.UTC)


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[func.EventGridEvent] = []
        self.invocations: list[str] = []

    def add(self, event: func.EventGridEvent, invocation_id: str) -> None:
        with self.lock:
            self.events.append(event)
            self.invocations.append(invocation_id)


seen = Seen()
eventgrid_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@eventgrid_app.function_name("probe_near_expiry")
@eventgrid_app.event_grid_trigger(arg_name="event")
def probe_near_expiry(event: func.EventGridEvent, context: func.Context) -> None:
    seen.add(event, context.invocation_id)


@eventgrid_app.function_name("probe_fails")
@eventgrid_app.event_grid_trigger(arg_name="event")
def probe_fails(event: func.EventGridEvent) -> None:
    raise RuntimeError("the probe was told to fail")


@pytest.fixture
def host(stack: Stack) -> Iterator[LocalHost]:
    with seen.lock:
        seen.events.clear()
        seen.invocations.clear()
    with hosted(eventgrid_app, stack.settings) as local:
        yield local
    _admin(stack, "DELETE", "subscriptions")
    _admin(stack, "DELETE", "deliveries")


def _root(host: LocalHost) -> str:
    return host.http_url.rsplit("/api", 1)[0]


def _admin(stack: Stack, method: str, path: str, **kwargs: Any) -> requests.Response:
    assert stack.keyvault is not None
    return requests.request(method, f"{stack.keyvault.url}/_devstack/eventgrid/{path}",
                            verify=stack.settings["REQUESTS_CA_BUNDLE"], timeout=60, **kwargs)


def test_secret_near_expiry_reaches_the_event_grid_function(host: LocalHost, stack: Stack) -> None:
    subscribed = _admin(stack, "POST", "subscriptions", json={
        "endpoint": webhook_url(_root(host), "probe_near_expiry"), "eventTypes": [SECRET_NEAR_EXPIRY],
        "subjectBeginsWith": "eg-probe-"})
    assert subscribed.status_code == 201, subscribed.text  # the host answered the validation handshake
    with SecretClient(stack.settings["KEY_VAULT_URL"], DefaultAzureCredential()) as vault:
        secret = vault.set_secret("eg-probe-client-secret", "s3cr3t", expires_on=NOW + dt.timedelta(days=12))

    answer = _admin(stack, "POST", "near-expiry", json={"now": NOW.isoformat()})
    assert answer.status_code == 200
    [delivery] = [d for d in answer.json()["deliveries"] if d["subject"] == "eg-probe-client-secret"]
    assert delivery["status"] == 202  # the host accepted it once the function returned

    [event] = seen.events
    assert isinstance(event, func.EventGridEvent)
    assert (event.event_type, event.subject, event.data_version) == (SECRET_NEAR_EXPIRY, secret.name, "1")
    assert event.topic == vault_resource_id("devstack-vault")
    assert event.event_time == NOW
    data = event.get_json()
    assert data["Id"] == secret.id and data["Version"] == secret.properties.version
    assert (data["ObjectType"], data["ObjectName"]) == ("Secret", secret.name)
    assert data["EXP"] == int((NOW + dt.timedelta(days=12)).timestamp()) and data["NBF"] is None
    assert "s3cr3t" not in repr(data)
    assert seen.invocations[0]

    again = _admin(stack, "POST", "near-expiry", json={"now": NOW.isoformat()}).json()
    assert again["deliveries"] == [] and len(seen.events) == 1
    recorded = _admin(stack, "GET", "deliveries").json()["items"]
    assert [d["status"] for d in recorded if d["subject"] == secret.name] == [202]


def test_a_function_that_raises_gets_a_500_so_event_grid_would_retry(host: LocalHost, stack: Stack) -> None:
    assert _admin(stack, "POST", "subscriptions", json={
        "endpoint": webhook_url(_root(host), "probe_fails"), "eventTypes": [SECRET_NEAR_EXPIRY],
        "subjectBeginsWith": "eg-fails-"}).status_code == 201
    with SecretClient(stack.settings["KEY_VAULT_URL"], DefaultAzureCredential()) as vault:
        vault.set_secret("eg-fails-secret", "x", expires_on=NOW + dt.timedelta(days=3))
    answer = _admin(stack, "POST", "near-expiry", json={"now": NOW.isoformat()}).json()
    [delivery] = [d for d in answer["deliveries"] if d["subject"] == "eg-fails-secret"]
    assert (delivery["status"], delivery["succeeded"]) == (500, False)


def test_the_webhook_speaks_the_extensions_protocol(host: LocalHost) -> None:
    url = webhook_url(_root(host), "probe_near_expiry")
    event = {"id": "e-1", "topic": "/t", "subject": "s", "eventType": "Custom.Probe",
             "eventTime": "2031-03-01T00:00:00.0000000Z", "data": {"k": "v"}, "dataVersion": "1",
             "metadataVersion": "1"}

    validation = requests.post(url, json=[{**event, "data": {"validationCode": "CODE-1"}}],
                               headers={"aeg-event-type": "SubscriptionValidation"}, timeout=10)
    assert validation.status_code == 200 and validation.json() == {"validationResponse": "CODE-1"}
    assert seen.events == []  # a handshake calls no function

    single = requests.post(url, json=event, headers={"aeg-event-type": "Notification"}, timeout=10)
    batch = requests.post(url, json=[event, {**event, "id": "e-2"}], headers={"aeg-event-type": "Notification"},
                          timeout=10)
    assert (single.status_code, batch.status_code) == (202, 202)
    assert [e.id for e in seen.events] == ["e-1", "e-1", "e-2"]
    assert seen.events[0].get_json() == {"k": "v"}

    assert requests.post(url, json=event, headers={"aeg-event-type": "Unsubscribe"}, timeout=10).status_code == 202
    unreadable = json.dumps([event, {**event, "eventTime": "soon"}]).encode()  # the first is not called either
    for headers, body in (({"aeg-event-type": "Other"}, b"[]"), ({}, b"[]"),
                          ({"aeg-event-type": "Notification"}, b"{not json"),
                          ({"aeg-event-type": "Notification"}, b"[1, 2]"),
                          ({"aeg-event-type": "Notification"}, unreadable),
                          ({"aeg-event-type": "SubscriptionValidation"}, b"[{}]")):
        response = requests.post(url, data=body, headers=headers, timeout=10)
        assert response.status_code == 400, (headers, body, response.text)
        assert "Traceback" not in response.text
    unknown = requests.post(webhook_url(_root(host), "no_such_function"), json=[event],
                            headers={"aeg-event-type": "Notification"}, timeout=10)
    assert unknown.status_code == 404 and "cannot find function: 'no_such_function'" in unknown.text
    assert requests.get(url, timeout=10).status_code == 405
    assert len(seen.events) == 3
