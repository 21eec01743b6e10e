"""Key Vault as an Event Grid source: subscriptions, the webhook protocol, the secret events.

Secrets are written by the real ``SecretClient``; the vault's subscription delivers to a small
webhook (a plain HTTP server here) that records what Event Grid sends, headers included, and
answers the validation handshake as a webhook must. The admin calls are plain ``requests``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.keyvault.secrets import KeyVaultSecretIdentifier, SecretClient

from devstack.eventgrid import format_event_time
from devstack.httpbase import RunningServer
from devstack.keyvault import DEFAULT_VAULT_NAME, create_app
from devstack.keyvault.events import vault_resource_id
from devstack.tls import make_loopback_certificate
from tests.devstack.test_keyvault import AUTHORITY, TENANT, stand_in_credential

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.tls import LoopbackCertificate

NEAR = "Microsoft.KeyVault.SecretNearExpiry"
NEW = "Microsoft.KeyVault.SecretNewVersionCreated"
EXPIRED = "Microsoft.KeyVault.SecretExpired"
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = 86400


class Webhook:
    """What a webhook endpoint receives; how it answers is set per test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[dict[str, str], Any]] = []
        self.validation_answer: str | None = "echo"  # "echo", None (wrong code) or "500"
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.received.append((headers, body))
                if headers.get("aeg-event-type") == "SubscriptionValidation":
                    answer = outer.validation_answer
                    if answer == "500":
                        self._answer(500, b"")
                    else:
                        code = body[0]["data"]["validationCode"] if answer == "echo" else "not-the-code"
                        self._answer(200, json.dumps({"validationResponse": code}).encode())
                else:
                    self._answer(outer.status, b"")

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def notifications(self) -> list[tuple[dict[str, str], Any]]:
        with self.lock:
            return [(h, b) for h, b in self.received if h.get("aeg-event-type") == "Notification"]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
        self.validation_answer = "echo"
        self.status = 200


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return make_loopback_certificate(tmp_path_factory.mktemp("eventgrid-tls"))


@pytest.fixture(scope="module")
def vault(cert: LoopbackCertificate) -> Iterator[RunningServer]:
    running = RunningServer(create_app(authority=AUTHORITY, tenant_id=TENANT), tls=cert.server_context())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def client(vault: RunningServer, cert: LoopbackCertificate, webhook: Webhook) -> Iterator[SecretClient]:
    vault.reset()
    webhook.clear()
    with SecretClient(vault.url, stand_in_credential(), connection_verify=str(cert.ca_path)) as secret_client:
        yield secret_client


def admin(vault: RunningServer, cert: LoopbackCertificate, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{vault.url}/_devstack/eventgrid/{path}", verify=str(cert.ca_path),
                            timeout=60, **kwargs)


def subscribe(vault: RunningServer, cert: LoopbackCertificate, endpoint: str, *types: str,
              **extra: Any) -> dict[str, Any]:
    response = admin(vault, cert, "POST", "subscriptions", json={"endpoint": endpoint, "eventTypes": list(types),
                                                                 **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def near_expiry(vault: RunningServer, cert: LoopbackCertificate, now: dt.datetime = NOW,
                route: str = "near-expiry") -> dict[str, Any]:
    response = admin(vault, cert, "POST", route, json={"now": now.isoformat()})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def at(moment: dt.datetime, days: float) -> dt.datetime:
    return moment + dt.timedelta(days=days)


# -- subscriptions and the validation handshake -------------------------------------------------------


def test_subscribing_runs_event_grids_validation_handshake(client: SecretClient, vault: RunningServer,
                                                           cert: LoopbackCertificate, webhook: Webhook) -> None:
    made = subscribe(vault, cert, webhook.url, NEAR, name="rotation", subjectBeginsWith="palette-")
    assert made["name"] == "rotation" and made["eventTypes"] == [NEAR] and made["subjectBeginsWith"] == "palette-"
    [(headers, body)] = webhook.received
    assert headers["aeg-event-type"] == "SubscriptionValidation"
    assert headers["aeg-subscription-name"] == "ROTATION"
    assert headers["content-type"] == "application/json; charset=utf-8"
    [event] = body
    assert event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert event["topic"] == vault_resource_id(DEFAULT_VAULT_NAME) and isinstance(event["data"]["validationCode"], str)
    assert {"id", "topic", "subject", "data", "eventType", "eventTime", "metadataVersion", "dataVersion"} <= set(event)

    listed = admin(vault, cert, "GET", "subscriptions").json()["items"]
    assert [s["name"] for s in listed] == ["rotation"]
    again = admin(vault, cert, "POST", "subscriptions", json={"endpoint": webhook.url, "eventTypes": [NEAR],
                                                              "name": "rotation"})
    assert again.status_code == 400 and "exists already" in again.json()["error"]["message"]
    assert admin(vault, cert, "DELETE", "subscriptions/rotation").status_code == 204
    assert admin(vault, cert, "DELETE", "subscriptions/rotation").status_code == 404
    subscribe(vault, cert, webhook.url, NEAR)
    assert admin(vault, cert, "DELETE", "subscriptions").status_code == 204
    assert admin(vault, cert, "GET", "subscriptions").json()["items"] == []


@pytest.mark.parametrize("answer", [None, "500"])
def test_a_webhook_that_fails_the_handshake_gets_no_subscription(client: SecretClient, vault: RunningServer,
                                                                 cert: LoopbackCertificate, webhook: Webhook,
                                                                 answer: str | None) -> None:
    webhook.validation_answer = answer
    response = admin(vault, cert, "POST", "subscriptions", json={"endpoint": webhook.url, "eventTypes": [NEAR]})
    assert response.status_code == 400
    assert "The attempt to validate the provided endpoint" in response.json()["error"]["message"]
    assert admin(vault, cert, "GET", "subscriptions").json()["items"] == []


@pytest.mark.parametrize("spec", [
    {"eventTypes": [NEAR]},
    {"endpoint": "https://hooks.example.com/x", "eventTypes": [NEAR]},
    {"endpoint": "ftp://127.0.0.1/x", "eventTypes": [NEAR]},
    {"endpoint": "http://127.0.0.1:9/x", "eventTypes": []},
    {"endpoint": "http://127.0.0.1:9/x", "eventTypes": ["Microsoft.KeyVault.KeyNearExpiry"]},
    {"endpoint": "http://127.0.0.1:9/x", "eventTypes": [NEAR], "subjectBeginsWith": 3},
    {"endpoint": "http://127.0.0.1:9/x", "eventTypes": [NEAR], "name": "a b"},
    {"endpoint": "http://127.0.0.1:9/x", "eventTypes": [NEAR], "filter": {}},
    {"endpoint": "http://127.0.0.1:9/x", "eventTypes": [NEAR]},  # nothing listens there
    [], "not json",
])
def test_malformed_subscriptions_are_clear_400s(client: SecretClient, vault: RunningServer,
                                                cert: LoopbackCertificate, spec: Any) -> None:
    data = spec if isinstance(spec, str) else json.dumps(spec)
    response = admin(vault, cert, "POST", "subscriptions", data=data, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message and "Traceback" not in response.text


# -- SecretNearExpiry -------------------------------------------------------------------------------


def test_near_expiry_announces_each_current_version_once(client: SecretClient, vault: RunningServer,
                                                         cert: LoopbackCertificate, webhook: Webhook) -> None:
    subscribe(vault, cert, webhook.url, NEAR, name="near")
    soon = client.set_secret("palette-acme-client-secret", "v1", expires_on=at(NOW, 10),
                             not_before=at(NOW, -1))
    client.set_secret("far-away", "x", expires_on=at(NOW, 40))
    client.set_secret("never-expires", "x")
    client.set_secret("switched-off", "x", expires_on=at(NOW, 5), enabled=False)
    client.set_secret("already-expired", "x", expires_on=at(NOW, -1))
    client.set_secret("superseded", "old", expires_on=at(NOW, 3))
    client.set_secret("superseded", "new", expires_on=at(NOW, 300))
    edge = client.set_secret("exactly-thirty-days", "x", expires_on=at(NOW, 30))

    answer = near_expiry(vault, cert)
    assert sorted(e["subject"] for e in answer["events"]) == ["exactly-thirty-days", "palette-acme-client-secret"]
    assert all(d["status"] == 200 and d["succeeded"] for d in answer["deliveries"])
    delivered = {body[0]["subject"]: (headers, body) for headers, body in webhook.notifications()}
    assert set(delivered) == {"exactly-thirty-days", "palette-acme-client-secret"}

    headers, body = delivered["palette-acme-client-secret"]
    assert (headers["aeg-event-type"], headers["aeg-subscription-name"]) == ("Notification", "NEAR")
    assert (headers["aeg-delivery-count"], headers["aeg-data-version"], headers["aeg-metadata-version"]) == (
        "0", "1", "1")
    [event] = body
    assert set(event) == {"id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion",
                          "metadataVersion"}
    assert event["topic"] == vault_resource_id(DEFAULT_VAULT_NAME)
    assert (event["eventType"], event["eventTime"]) == (NEAR, format_event_time(NOW))
    assert (event["dataVersion"], event["metadataVersion"]) == ("1", "1")
    assert event["data"] == {
        "Id": soon.id, "VaultName": DEFAULT_VAULT_NAME, "ObjectType": "Secret",
        "ObjectName": "palette-acme-client-secret", "Version": soon.properties.version,
        "NBF": int(at(NOW, -1).timestamp()), "EXP": int(at(NOW, 10).timestamp()),
    }
    parsed = KeyVaultSecretIdentifier(event["data"]["Id"])
    assert (parsed.vault_url, parsed.name, parsed.version) == (vault.url, soon.name, soon.properties.version)
    assert client.get_secret(parsed.name, parsed.version).value == "v1"
    assert delivered["exactly-thirty-days"][1][0]["data"]["NBF"] is None
    assert delivered["exactly-thirty-days"][1][0]["data"]["Version"] == edge.properties.version

    assert near_expiry(vault, cert)["events"] == []  # each version once
    assert near_expiry(vault, cert, at(NOW, 5))["events"] == []
    assert len(webhook.notifications()) == 2

    renewed = client.set_secret("palette-acme-client-secret", "v2", expires_on=at(NOW, 25))
    later = near_expiry(vault, cert, at(NOW, 1))
    assert [e["data"]["Version"] for e in later["events"]] == [renewed.properties.version]
    # far-away comes within 30 days later on.
    assert [e["subject"] for e in near_expiry(vault, cert, at(NOW, 11))["events"]] == ["far-away"]

    recorded = admin(vault, cert, "GET", "deliveries").json()["items"]
    assert [d["subject"] for d in recorded][-2:] == ["palette-acme-client-secret", "far-away"]
    assert all({"subscription", "endpoint", "eventType", "eventId", "event", "status", "deliveredAt"} <= set(d)
               for d in recorded)
    assert admin(vault, cert, "DELETE", "deliveries").status_code == 204
    assert admin(vault, cert, "GET", "deliveries").json()["items"] == []


def test_filters_and_the_subscriptions_age(client: SecretClient, vault: RunningServer, cert: LoopbackCertificate,
                                           webhook: Webhook) -> None:
    """Key Vault sends events only for versions made after the subscription; the subject filter holds."""
    client.set_secret("palette-before", "x", expires_on=at(NOW, 10))
    time.sleep(1.1)  # the vault stamps versions in whole seconds
    subscribe(vault, cert, webhook.url, NEAR, subjectBeginsWith="PALETTE-")
    client.set_secret("palette-after", "x", expires_on=at(NOW, 10))
    client.set_secret("other-after", "x", expires_on=at(NOW, 10))

    answer = near_expiry(vault, cert)
    assert sorted(e["subject"] for e in answer["events"]) == ["other-after", "palette-after", "palette-before"]
    assert [d["subject"] for d in answer["deliveries"]] == ["palette-after"]
    assert [body[0]["subject"] for _, body in webhook.notifications()] == ["palette-after"]


def test_a_failing_webhook_is_recorded_not_retried(client: SecretClient, vault: RunningServer,
                                                   cert: LoopbackCertificate, webhook: Webhook) -> None:
    subscribe(vault, cert, webhook.url, NEAR)
    webhook.status = 500
    client.set_secret("will-fail", "x", expires_on=at(NOW, 1))
    [delivery] = near_expiry(vault, cert)["deliveries"]
    assert (delivery["status"], delivery["succeeded"]) == (500, False)
    assert "Event Grid would retry" in delivery["error"]
    assert near_expiry(vault, cert)["deliveries"] == []  # announced once, whatever the webhook said


@pytest.mark.parametrize("body", [{}, {"now": "2030-01-01T00:00:00"}, {"now": "tomorrow"}, {"now": 5},
                                  {"now": "2030-01-01T00:00:00Z", "extra": 1}, "[", []])
def test_near_expiry_needs_a_moment_with_its_offset(client: SecretClient, vault: RunningServer,
                                                    cert: LoopbackCertificate, body: Any) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    response = admin(vault, cert, "POST", "near-expiry", data=data)
    assert response.status_code == 400 and response.json()["error"]["message"]


# -- the other secret events ---------------------------------------------------------------------------


def test_new_version_created_is_pushed_after_the_put(client: SecretClient, vault: RunningServer,
                                                     cert: LoopbackCertificate, webhook: Webhook) -> None:
    subscribe(vault, cert, webhook.url, NEW, EXPIRED)
    made = client.set_secret("fresh", "x", expires_on=at(NOW, -2))
    deadline = time.monotonic() + 10
    while not webhook.notifications() and time.monotonic() < deadline:
        time.sleep(0.05)
    [(_, [event])] = webhook.notifications()
    assert event["eventType"] == NEW and event["data"]["Id"] == made.id and event["data"]["EXP"] is not None

    expired = near_expiry(vault, cert, route="expired")
    assert [(e["eventType"], e["subject"]) for e in expired["events"]] == [(EXPIRED, "fresh")]
    assert near_expiry(vault, cert, route="expired")["events"] == []
    assert near_expiry(vault, cert)["deliveries"] == []  # not subscribed to NearExpiry


def test_reset_forgets_subscriptions_and_announcements(client: SecretClient, vault: RunningServer,
                                                       cert: LoopbackCertificate, webhook: Webhook) -> None:
    subscribe(vault, cert, webhook.url, NEAR)
    client.set_secret("once", "x", expires_on=at(NOW, 1))
    assert len(near_expiry(vault, cert)["events"]) == 1
    state = requests.get(f"{vault.url}/_devstack/state", verify=str(cert.ca_path), timeout=10).json()
    assert len(state["eventGridSubscriptions"]) == 1
    assert requests.post(f"{vault.url}/_devstack/reset", verify=str(cert.ca_path), timeout=10).status_code == 204
    assert admin(vault, cert, "GET", "subscriptions").json()["items"] == []
    assert admin(vault, cert, "GET", "deliveries").json()["items"] == []
