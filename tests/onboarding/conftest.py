"""Fixtures for onboarding tests: the real app clients over the session's local stack, a clean
slate per test, and helpers that read outcomes back from the stand-ins (never from our clients)."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import requests

from devstack.stack import DEVSTACK_TENANT_ID, Stack
from functions.dependencies import Dependencies, build
from shared.engine.outcome import Outcome
from shared.operations import process_request
from shared.services import Services
from shared.settings import PipelineConfig, Settings

_counter = itertools.count(1)
_T = TypeVar("_T")


@pytest.fixture(scope="session")
def deps(stack: Stack) -> Iterator[Dependencies]:
    settings = Settings.from_mapping({**stack.settings, "VALIDATION_BUDGET_SECONDS": "5",
                                      "RETRY_DELAYS_SECONDS": "1,1,1"})
    built = build(settings)
    yield built
    built.close()


@dataclass
class World:
    """One test's view of the stack."""

    stack: Stack
    deps: Dependencies
    verify: str
    apps: list[str] = field(default_factory=list)

    # -- Azure side ---------------------------------------------------------------------------
    def register_app(self, client_id: str | None = None, tenant_id: str = DEVSTACK_TENANT_ID) -> str:
        client_id = client_id or str(uuid.uuid4())
        assert self.stack.identity_https is not None
        requests.post(f"{self.stack.identity_https.url}/_devstack/applications",
                      json={"appId": client_id, "tenantId": tenant_id}, verify=self.verify,
                      timeout=10).raise_for_status()
        self.apps.append(client_id)
        return client_id

    def graph_passwords(self, client_id: str) -> list[dict[str, Any]]:
        state = self.identity_state()
        for tenant in state.get("tenants", []) if isinstance(state.get("tenants"), list) else []:
            for app in tenant.get("applications", []):
                if app.get("appId") == client_id:
                    return list(app.get("passwordCredentials", []))
        for app in _walk_apps(state):
            if app.get("appId") == client_id:
                return list(app.get("passwordCredentials") or app.get("passwords") or [])
        raise AssertionError(f"app {client_id} not in the identity stand-in")

    def identity_state(self) -> dict[str, Any]:
        assert self.stack.identity_https is not None
        return requests.get(f"{self.stack.identity_https.url}/_devstack/state", verify=self.verify,
                            timeout=10).json()

    # -- the request ---------------------------------------------------------------------------
    def request(self, **overrides: Any) -> dict[str, Any]:
        """A valid schema-v1 request for a freshly registered app; ``overrides`` replace top-level
        keys (pass ``azure={...}`` to replace the whole azure object)."""
        number = next(_counter)
        client_id = overrides.pop("client_id", None) or self.register_app()
        body: dict[str, Any] = {
            "requestId": f"TEST-{uuid.uuid4().hex[:8]}-{number}",
            "accountName": f"acct-{number}-{uuid.uuid4().hex[:6]}",
            "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id},
        }
        body.update(overrides)
        return body

    def run(self, body: dict[str, Any] | bytes, *, config: PipelineConfig | None = None,
            clients: Services | None = None, **kwargs: Any) -> Outcome:
        """One delivery of ``body``, as the queue trigger makes it (a fresh owner each time)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        kwargs.setdefault("owner", f"test-{uuid.uuid4().hex[:8]}")
        return process_request(raw, clients or self.deps.clients, config or self.deps.settings.pipeline, **kwargs)

    def run_to_the_end(self, body: dict[str, Any] | bytes, *, config: PipelineConfig | None = None,
                       limit: int = 20, **kwargs: Any) -> Outcome:
        """Deliver ``body`` and then each delayed copy the outcome asks for (at its time, with its
        retry token), as the queue would, until the request is done."""
        retry_token = ""
        for _ in range(limit):
            outcome = self.run(body, config=config, retry_token=retry_token, **kwargs)
            if outcome.retry_in_seconds is None:
                return outcome
            time.sleep(min(outcome.retry_in_seconds, 5))
            retry_token = outcome.retry_token
        raise AssertionError(f"request not done after {limit} deliveries")

    def queued(self, wait: float = 1.0, *, queue: str = "ONBOARDING_QUEUE") -> list[tuple[bytes, str, dict[str, str]]]:
        """Take every message off the onboarding queue (or the queue the setting ``queue`` names):
        (body, message id, application properties)."""
        from azure.servicebus import ServiceBusClient

        settings = self.stack.settings
        found = []
        with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
                client.get_queue_receiver(settings[queue], max_wait_time=wait) as receiver:
            while batch := receiver.receive_messages(max_message_count=50, max_wait_time=wait):
                for message in batch:
                    properties = {(k.decode() if isinstance(k, bytes) else str(k)):
                                  (v.decode() if isinstance(v, bytes) else str(v))
                                  for k, v in (message.application_properties or {}).items()}
                    found.append((b"".join(message.body), str(message.message_id), properties))
                    receiver.complete_message(message)
        return found

    def deliver_queued(self, **kwargs: Any) -> list[Outcome]:
        """Run every message waiting on the queue once, as the queue trigger would."""
        return [self.run(body, message_id=message_id, retry_token=properties.get("retryToken", ""), **kwargs)
                for body, message_id, properties in self.queued()]

    def palette_config(self, **config: Any) -> None:
        assert self.stack.palette is not None
        requests.post(f"{self.stack.palette.url}/_devstack/config", json=config, timeout=10).raise_for_status()

    def secret_value(self, name: str, version: str | None = None) -> str:
        value, _ = self.deps.clients.secrets.get_secret(name, version)
        return value.get_secret_value()

    # -- what the services hold -----------------------------------------------------------------
    def palette_state(self) -> dict[str, Any]:
        assert self.stack.palette is not None
        return requests.get(f"{self.stack.palette.url}/_devstack/state", timeout=10).json()

    def palette_accounts(self, name: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.palette_state()["cloudAccounts"] if name is None or a["name"] == name]

    def palette_call(self, method: str, path: str, *, project_uid: str | None = None,
                     api_key: str | None = None, body: Any = None) -> requests.Response:
        """A call to the Palette stand-in's public API, as an operator or another tool would make."""
        settings = self.stack.settings
        headers = {"ApiKey": api_key or settings["PALETTE_API_KEY"]}
        if project_uid:
            headers["ProjectUid"] = project_uid
        return requests.request(method, f"{settings['PALETTE_ENDPOINT']}{path}", headers=headers, json=body,
                                timeout=10)

    def project_uid(self, name: str) -> str:
        return str(next(p["uid"] for p in self.palette_state()["projects"] if p["name"] == name))

    def palette_requests(self) -> list[dict[str, Any]]:
        assert self.stack.palette is not None
        return requests.get(f"{self.stack.palette.url}/_devstack/requests", timeout=10).json()["items"]

    def palette_fault(self, **fault: Any) -> None:
        assert self.stack.palette is not None
        requests.post(f"{self.stack.palette.url}/_devstack/faults", json=fault, timeout=10).raise_for_status()

    def identity_fault(self, **fault: Any) -> None:
        assert self.stack.identity_https is not None
        requests.post(f"{self.stack.identity_https.url}/_devstack/faults", json=fault, verify=self.verify,
                      timeout=10).raise_for_status()

    def keyvault_fault(self, **fault: Any) -> None:
        assert self.stack.keyvault is not None
        requests.post(f"{self.stack.keyvault.url}/_devstack/faults", json=fault, verify=self.verify,
                      timeout=10).raise_for_status()

    def keyvault_state(self) -> Any:
        assert self.stack.keyvault is not None
        return requests.get(f"{self.stack.keyvault.url}/_devstack/state", verify=self.verify, timeout=10).json()

    def secret_versions(self, name: str) -> list[Any]:
        return self.deps.clients.secrets.list_versions(name)

    def state_row(self, request_id: str) -> dict[str, Any]:
        """The raw Table entity, as stored."""
        from azure.data.tables import TableClient

        with TableClient.from_connection_string(self.stack.settings["AzureWebJobsStorage"],
                                                table_name=self.deps.settings.state_table) as table:
            return dict(table.get_entity(request_id, "onboarding"))

    def state_rows(self) -> list[dict[str, Any]]:
        """Every entity of the state table (requests and leases), as stored."""
        from azure.data.tables import TableClient

        with TableClient.from_connection_string(self.stack.settings["AzureWebJobsStorage"],
                                                table_name=self.deps.settings.state_table) as table:
            try:
                return [dict(entity) for entity in table.list_entities()]
            except Exception as exc:
                if type(exc).__name__ == "ResourceNotFoundError":  # no table yet: nothing written
                    return []
                raise

    def snapshot(self) -> dict[str, Any]:
        """What every stand-in holds, for a before-and-after comparison: Palette, Key Vault, the
        identity stand-in (apps and their passwords), the state table, and the onboarding queue."""
        from azure.servicebus import ServiceBusClient

        settings = self.stack.settings
        with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
                client.get_queue_receiver(settings["ONBOARDING_QUEUE"]) as receiver:
            queued = [str(m.message_id) for m in receiver.peek_messages(max_message_count=100)]
        return {"palette": self.palette_state(), "keyVault": self.keyvault_state(),
                "identity": self.identity_state(), "stateTable": self.state_rows(), "queue": queued}

    def events(self, wait: float = 1.0) -> list[dict[str, Any]]:
        """Every event published since the last call (drained from the events subscription)."""
        from azure.servicebus import ServiceBusClient

        settings = self.stack.settings
        found: list[dict[str, Any]] = []
        with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
                client.get_subscription_receiver(settings["EVENTS_TOPIC"], settings["EVENTS_SUBSCRIPTION"],
                                                 max_wait_time=wait) as receiver:
            while True:
                batch = receiver.receive_messages(max_message_count=50, max_wait_time=wait)
                if not batch:
                    break
                for message in batch:
                    found.append(json.loads(b"".join(message.body)))
                    receiver.complete_message(message)
        return found


def _walk_apps(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "appId" in node:
            yield node
        for value in node.values():
            yield from _walk_apps(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_apps(value)


@pytest.fixture
def world(stack: Stack, deps: Dependencies) -> Iterator[World]:
    stack.reset()
    deps.clients.state.delete_all()  # type: ignore[attr-defined]
    deps.clients.inventory.delete_all()
    yield World(stack=stack, deps=deps, verify=stack.settings["REQUESTS_CA_BUNDLE"])
    stack.reset()


# -- helpers shared with tests outside this folder (HTTP API, local runner) ----------------------

def wait_for(probe: Callable[[], _T | None], what: str, timeout: float = 60.0, interval: float = 0.2) -> _T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def graph_add_password(world: World, client_id: str, display_name: str = "issued by a test") -> dict[str, Any]:
    """Graph's ``addPassword`` answer (``keyId``, ``secretText``...) for a real client secret of
    ``client_id``, issued as the app's owner would."""
    from azure.identity import DefaultAzureCredential

    settings = world.stack.settings
    token = DefaultAzureCredential().get_token(settings["GRAPH_SCOPE"]).token
    response = requests.post(f"{settings['GRAPH_ENDPOINT']}/v1.0/applications(appId='{client_id}')/addPassword",
                             json={"passwordCredential": {"displayName": display_name}},
                             headers={"Authorization": f"Bearer {token}"}, verify=world.verify, timeout=10)
    response.raise_for_status()
    added: dict[str, Any] = response.json()
    return added
