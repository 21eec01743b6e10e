"""The whole local stack, as the app sees it: settings, and the real SDK chain end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from devstack.keyvault import KeyVaultApp
from devstack.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_SETTINGS = {
    "PALETTE_ENDPOINT", "PALETTE_API_KEY", "KEY_VAULT_URL", "ServiceBusConnection", "ONBOARDING_QUEUE",
    "BACKGROUND_QUEUE", "EVENTS_TOPIC", "AzureWebJobsStorage", "GRAPH_ENDPOINT", "AZURE_AUTHORITY_HOST",
    "ROTATION_SCHEDULE", "ROTATION_THRESHOLD_DAYS", "REQUESTS_CA_BUNDLE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
    "EVENTS_SUBSCRIPTION", "RESOURCE_MANAGER_ENDPOINT", "RESOURCE_MANAGER_SCOPE",
}


def test_settings_name_every_contract_setting(stack: Stack) -> None:
    assert set(stack.settings) >= CONTRACT_SETTINGS
    assert all(stack.settings[name] for name in CONTRACT_SETTINGS)


def test_default_credential_reaches_key_vault_through_the_managed_identity(stack: Stack) -> None:
    """DefaultAzureCredential, unmodified, gets a token from the managed-identity stand-in for the
    resource the vault's challenge names, and the real SecretClient, with its default settings,
    answers the 401 challenge with it over TLS it trusts by REQUESTS_CA_BUNDLE. A managed-identity
    token for any other audience (the public cloud's vault resource included) is refused."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    assert stack.keyvault is not None and stack.identity is not None
    vault = stack.keyvault.app
    assert isinstance(vault, KeyVaultApp)
    credential = DefaultAzureCredential()
    with SecretClient(stack.settings["KEY_VAULT_URL"], credential) as client:
        client.set_secret("stack-check", "value-1")
        assert client.get_secret("stack-check").value == "value-1"
    asked = {r.query["resource"][0] for r in stack.identity.requests if r.path == "/msi/token"}
    assert vault.resource in asked

    elsewhere = credential.get_token("https://vault.azure.net/.default").token
    refused = requests.get(f"{stack.settings['KEY_VAULT_URL']}secrets/stack-check?api-version=7.5",
                           headers={"Authorization": f"Bearer {elsewhere}"},
                           verify=stack.settings["REQUESTS_CA_BUNDLE"], timeout=10)
    assert refused.status_code == 401
    assert "AKV10022" in refused.json()["error"]["message"]


def test_resource_manager_is_read_with_the_managed_identity(stack: Stack) -> None:
    """DefaultAzureCredential, unmodified, gets a token for Resource Manager's audience from the
    managed-identity stand-in, and the product's AuthorizationReader (the real
    azure-mgmt-authorization client) reads the Resource Manager stand-in with it, over TLS it
    trusts by REQUESTS_CA_BUNDLE."""
    from azure.identity import DefaultAzureCredential

    from shared.clients.authorization import AuthorizationReader

    assert stack.arm is not None and stack.identity is not None
    settings = stack.settings
    endpoint = settings["RESOURCE_MANAGER_ENDPOINT"]
    assert endpoint.startswith("https://127.0.0.1:") and stack.describe()["resourceManager"] == endpoint
    assert settings["RESOURCE_MANAGER_SCOPE"] == "https://management.azure.com/.default"
    principal, scope = str(uuid.uuid4()), f"/subscriptions/{uuid.uuid4()}/resourceGroups/stack-check"
    requests.post(f"{endpoint}/_devstack/roleAssignments", json={"scope": scope, "principalId": principal,
                                                                 "roleName": "Reader"},
                  verify=settings["REQUESTS_CA_BUNDLE"], timeout=10).raise_for_status()
    try:
        credential = DefaultAzureCredential()
        with AuthorizationReader(endpoint, credential, scope=settings["RESOURCE_MANAGER_SCOPE"]) as reader:
            assert [g.role_name for g in reader.permissions_at(principal, scope).grants] == ["Reader"]
        asked = {r.query["resource"][0] for r in stack.identity.requests if r.path == "/msi/token"}
        assert "https://management.azure.com" in asked
    finally:
        stack.arm.reset()


def test_state_table_lives_in_azurite(stack: Stack) -> None:
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(stack.settings["AzureWebJobsStorage"])
    table = service.create_table_if_not_exists("stackcheck")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Value": 1})
    assert table.get_entity("p", "r")["Value"] == 1


def test_both_queues_take_messages_once_per_message_id(stack: Stack) -> None:
    """The onboarding and background queues the settings name exist in the broker, with the
    duplicate detection the app relies on (a second send of one message_id is dropped)."""
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    settings = stack.settings
    assert settings["ONBOARDING_QUEUE"] == "onboarding" and settings["BACKGROUND_QUEUE"] == "background"
    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client:
        for queue in (settings["ONBOARDING_QUEUE"], settings["BACKGROUND_QUEUE"]):
            message_id = f"stack-check-{uuid.uuid4().hex}"
            with client.get_queue_sender(queue) as sender:
                for _ in range(2):
                    sender.send_messages(ServiceBusMessage(b"{}", message_id=message_id))
            with client.get_queue_receiver(queue, max_wait_time=2) as receiver:
                received = [m for m in receiver.receive_messages(max_message_count=10, max_wait_time=2)
                            if m.message_id == message_id]
                for message in received:
                    receiver.complete_message(message)
            assert len(received) == 1, queue


def test_palette_credential_validation_asks_entra_for_real(stack: Stack) -> None:
    """A secret Graph issued validates; a made-up one is refused, as Palette does with Azure."""
    assert stack.identity_https is not None and stack.palette is not None
    settings = stack.settings
    verify = settings["REQUESTS_CA_BUNDLE"]
    tenant, app_id = "11111111-1111-4111-8111-111111111111", "55555555-5555-4555-8555-555555555555"
    requests.post(f"{stack.identity_https.url}/_devstack/applications", json={"appId": app_id, "tenantId": tenant},
                  verify=verify, timeout=10).raise_for_status()
    from azure.identity import DefaultAzureCredential

    token = DefaultAzureCredential().get_token(settings["GRAPH_SCOPE"]).token
    added = requests.post(f"{settings['GRAPH_ENDPOINT']}/v1.0/applications(appId='{app_id}')/addPassword",
                          json={"passwordCredential": {"displayName": "stack check"}},
                          headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=10)
    added.raise_for_status()
    body = {"tenantId": tenant, "clientId": app_id, "azureEnvironment": "AzurePublicCloud"}
    headers = {"ApiKey": settings["PALETTE_API_KEY"]}
    url = f"{settings['PALETTE_ENDPOINT']}/v1/clouds/azure/account/validate"
    good = requests.post(url, json={**body, "clientSecret": added.json()["secretText"]}, headers=headers, timeout=10)
    bad = requests.post(url, json={**body, "clientSecret": "not-the-secret"}, headers=headers, timeout=10)
    assert good.status_code == 204
    assert bad.status_code == 400
    assert "not-the-secret" not in bad.text


def test_up_detached_writes_settings_and_down_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CONTRACT_SETTINGS}
    tools = ROOT / ".devstack" / "tools"
    env["PYTHONPATH"] = str(ROOT)
    up = subprocess.run([sys.executable, "-m", "devstack", "up", "--detach", "--workdir", str(tmp_path)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        settings = json.loads((tmp_path / "settings.json").read_text())
        assert set(settings) >= CONTRACT_SETTINGS
        assert requests.get(f"{settings['PALETTE_ENDPOINT']}/_devstack/state", timeout=10).status_code == 200
    finally:
        down = subprocess.run([sys.executable, "-m", "devstack", "down", "--workdir", str(tmp_path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 10
    while (tmp_path / "settings.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (tmp_path / "settings.json").exists()
    assert tools.exists()
