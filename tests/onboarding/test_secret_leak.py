"""No secret ever appears in a log line, an event, a state row, an exception or an outcome.

Secrets made during real runs (the Graph client secret, the generated SSH private key, the Palette
API key value, all read back from Key Vault afterwards), a canary client secret handed in through
Key Vault and through the HTTP intake, and the app's own Palette API key are searched for in
everything the app produced: every log record at DEBUG from every logger (ours and the SDKs'),
every event on the topic, every raw row of the state table, every outcome and exception text.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.credentials import SecretKind, secret_name
from shared.engine import OutcomeKind
from shared.errors import RequestValidationError
from shared.onboarding.intake import submit

from .conftest import World

CANARY = "canary-Secret-7f3a9c1e5b2d4086aa11"


def _needles(secret: str) -> list[str]:
    """The secret and the distinctive parts that would betray it if it were cut or wrapped."""
    lines = [line for line in secret.splitlines() if len(line) >= 24 and "-----" not in line]
    return [secret, *lines[:3]] if lines else [secret]


def test_no_secret_reaches_logs_events_state_or_errors(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    produced: list[str] = []

    # A full onboarding that makes every kind of secret.
    body = world.request(sshKey={"name": "leak-key", "generate": True},
                         apiKey={"name": "leak-api-key", "user": "admin@example.com", "expiresInDays": 7})
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    produced.append(repr(outcome))

    # A canary client secret handed in through Key Vault; Entra refuses it, so it shows up in a
    # failure path too.
    world.deps.clients.secrets.set_secret("leak-canary", _secret(CANARY), content_type="text/plain", tags={})
    failing = world.request(azure={"tenantId": body["azure"]["tenantId"], "clientId": world.register_app(),
                                   "secret": {"source": "keyVault", "secretName": "leak-canary"}})
    failed = world.run(failing)
    assert failed.kind is OutcomeKind.FAILED and failed.reason == "credentials_invalid"
    produced.append(repr(failed))

    # The canary through the HTTP intake (inline) and a request that is invalid while carrying it.
    inline = world.request(azure={"tenantId": body["azure"]["tenantId"], "clientId": world.register_app(),
                                  "secret": {"source": "inline", "value": CANARY}})
    record = submit(json.dumps(inline).encode(), world.deps.clients, world.deps.queue, allow_inline_secret=True,
                    config=world.deps.settings.pipeline)
    produced.append(repr(record.to_public()))
    bad = dict(inline, accountName="Not Valid!")
    with pytest.raises(RequestValidationError) as invalid:
        submit(json.dumps(bad).encode(), world.deps.clients, world.deps.queue, allow_inline_secret=True,
               config=world.deps.settings.pipeline)
    produced.append(str(invalid.value))
    produced.append(repr(invalid.value.errors))
    queued_to_pipeline = world.run(json.dumps(inline).encode())
    produced.append(repr(queued_to_pipeline))
    rejected = world.run(dict(inline))  # inline on the queue is refused, naming the field only
    assert rejected.kind in (OutcomeKind.REJECTED, OutcomeKind.CONFLICT, OutcomeKind.DUPLICATE)
    produced.append(repr(rejected))

    _assert_nowhere([*_made_secrets(world, body), CANARY], world, caplog, produced)


def _assert_nowhere(secrets: list[str], world: World, caplog: pytest.LogCaptureFixture,
                    produced: list[str]) -> None:
    """No form of any secret (nor of the Palette API key) in the logs, the events, the state and
    inventory rows, or what the calls returned and raised."""
    haystacks = {
        # Every attribute of every record: the message, the traceback and the structured fields.
        "logs": "\n".join(f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records),
        "events": json.dumps(world.events()),
        "state rows": json.dumps(_all_rows(world), default=str) + json.dumps(_all_rows(world, "accounts"),
                                                                              default=str),
        "outcomes and errors": "\n".join(produced),
    }
    for where, text in haystacks.items():
        for secret in [*secrets, world.stack.settings["PALETTE_API_KEY"]]:
            for needle in _needles(secret):
                assert needle not in text, f"a secret value appears in the {where}"


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _made_secrets(world: World, body: dict[str, Any]) -> list[str]:
    store = world.deps.clients.secrets
    account = body["accountName"]
    names = [secret_name(account, kind) for kind in SecretKind]
    values = [store.get_secret(name)[0].get_secret_value() for name in names]
    assert all(len(v) >= 16 for v in values)
    return values


def _all_rows(world: World, table_name: str | None = None) -> list[dict[str, Any]]:
    """Every entity of the state table (or another) as stored, with the compressed columns (the
    queued request, the outbox) opened up, so nothing hides from the search."""
    rows = []
    with TableClient.from_connection_string(world.stack.settings["AzureWebJobsStorage"],
                                            table_name=table_name or world.deps.settings.state_table) as table:
        for entity in table.list_entities():
            row = dict(entity)
            for name, value in row.items():
                if isinstance(value, bytes):
                    row[name] = zlib.decompress(value).decode()
            rows.append(row)
    return rows


def test_no_secret_from_rotation_reaches_logs_events_state_or_errors(world: World,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Rotation, API key renewal and the drift pass make and handle new secrets: none of the old or
    new values shows up anywhere the product writes."""
    import datetime as dt

    from shared.rotation.drift import drift_pass
    from shared.rotation.sweep import rotate_now, sweep

    caplog.set_level(logging.DEBUG)
    body = world.request(apiKey={"name": "leak-rotated-key", "user": "admin@example.com", "expiresInDays": 5})
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    account = body["accountName"]
    store = world.deps.clients.secrets
    names = [secret_name(account, SecretKind.CLIENT_SECRET), secret_name(account, SecretKind.API_KEY)]
    before = [store.get_secret(name)[0].get_secret_value() for name in names]
    produced: list[str] = []
    rotate_now(world.deps.clients, world.deps.queue, account)
    config = world.deps.settings.pipeline.rotation
    sweep(world.deps.clients, world.deps.queue, config)  # the API key is due too
    produced += [repr(o) for o in world.deliver_queued()]
    drift_pass(world.deps.clients, world.deps.queue, config, whole=True)
    sweep(world.deps.clients, world.deps.queue, config, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    after = [store.get_secret(name)[0].get_secret_value() for name in names]
    assert after != before
    row = world.deps.clients.inventory.get(account)
    produced.append(repr(row))

    _assert_nowhere([*before, *after], world, caplog, produced)


def test_no_secret_given_to_other_holders_reaches_logs_events_state_or_errors(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Rotation gives the new secret to a backup location on the same principal (and one update is
    refused), keeps the older passwords for another team's location, the drift pass reads them and
    an offboarding names them: neither the secrets they held nor the ones they were given show up."""
    from shared.rotation.drift import drift_pass
    from shared.rotation.sweep import rotate_now
    from tests.rotation.test_holders import PRODUCT_ANNOTATIONS, seed_location

    caplog.set_level(logging.DEBUG)
    body = world.request(rotation={"alsoUpdate": ["leak-named", "leak-refused"]})
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    account, client_id = body["accountName"], body["azure"]["clientId"]
    store = world.deps.clients.secrets
    first = store.get_secret(secret_name(account, SecretKind.CLIENT_SECRET))[0].get_secret_value()
    for name in ("leak-named", "leak-refused"):
        seed_location(world, name, client_id, first)
    seed_location(world, "leak-annotated", client_id, first, annotations=PRODUCT_ANNOTATIONS)
    seed_location(world, "leak-theirs", client_id, CANARY)
    world.palette_fault(method="PUT", path="^/v1/users/assets/locations/azure/", status=403, times=1)
    produced: list[str] = []
    given = []
    for _ in range(2):
        rotate_now(world.deps.clients, world.deps.queue, account)
        produced += [repr(o) for o in world.deliver_queued()]
        given.append(store.get_secret(secret_name(account, SecretKind.CLIENT_SECRET))[0].get_secret_value())
    row = world.deps.clients.inventory.get(account)
    assert row is not None and len(row.holders) == 3 and len(row.blocked_holders) == 1
    config = world.deps.settings.pipeline.rotation
    drift_pass(world.deps.clients, world.deps.queue, config, whole=True)
    produced.append(repr(world.deps.clients.inventory.get(account)))
    produced.append(json.dumps(world.deps.clients.inventory.get(account).to_public()))  # type: ignore[union-attr]
    offboarding = {"operation": "offboard", "requestId": "LEAK-HOLDERS-1", "accountName": account}
    produced.append(repr(world.run(offboarding)))

    _assert_nowhere([first, *given, CANARY], world, caplog, produced)


def test_no_secret_from_offboarding_reaches_logs_events_state_or_errors(world: World,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Offboarding reads the account's secrets' tags, removes the passwords and soft-deletes the
    secrets; onboarding again recovers them: none of the values shows up anywhere."""
    from shared.offboarding.intake import offboard_now
    from shared.operations import dry_run

    caplog.set_level(logging.DEBUG)
    body = world.request(sshKey={"name": "leak-off-key", "generate": True},
                         apiKey={"name": "leak-off-api-key", "user": "admin@example.com", "expiresInDays": 7})
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    secrets = _made_secrets(world, body)
    account = body["accountName"]
    produced: list[str] = []
    offboarding = {"operation": "offboard", "requestId": "LEAK-OFF-1", "accountName": account, "removeSshKey": True}
    produced.append(json.dumps(dry_run(json.dumps(offboarding), world.deps.clients, allow_inline_secret=False,
                                       config=world.deps.settings.pipeline).as_dict()))
    produced.append(repr(offboard_now(world.deps.clients, world.deps.queue, account, remove_ssh_key=True,
                                      remove_api_key=True)))
    produced += [repr(o) for o in world.deliver_queued()]
    produced.append(repr(world.deps.clients.inventory.get(account)))
    again = dict(body, requestId="LEAK-AGAIN-1", recoverDeletedSecrets=True)
    produced.append(json.dumps(dry_run(json.dumps(again), world.deps.clients, allow_inline_secret=False,
                                       config=world.deps.settings.pipeline).as_dict()))
    recovered = world.run(again)
    assert recovered.kind is OutcomeKind.SUCCEEDED, (recovered.reason, recovered.message)
    produced.append(repr(recovered))
    secrets += _made_secrets(world, body)

    _assert_nowhere(secrets, world, caplog, produced)


def test_no_secret_reaches_a_response_of_the_api_routes(world: World) -> None:
    """The dry run (which reads a Key Vault-sourced secret's value, as the pipeline does), health,
    the document, the list, rotation, offboarding and its dry run answer without any secret in them."""
    import requests

    from tests.test_http_api import hosted_app

    stack = world.stack
    world.deps.clients.secrets.set_secret("leak-canary-http", _secret(CANARY), content_type="text/plain", tags={})
    tenant = world.request()["azure"]["tenantId"]
    from_vault = world.request(azure={"tenantId": tenant, "clientId": world.register_app(),
                                      "secret": {"source": "keyVault", "secretName": "leak-canary-http"}})
    inline = world.request(azure={"tenantId": tenant, "clientId": world.register_app(),
                                  "secret": {"source": "inline", "value": CANARY}})
    bad_inline = dict(inline, accountName="Not Valid!")
    with hosted_app(stack) as host:
        key = {"x-functions-key": host.function_key}
        base = host.http_url
        answers = [
            requests.post(f"{base}/onboardings/validate", json=from_vault, headers=key, timeout=30),
            requests.post(f"{base}/onboardings/validate", json=inline, headers=key, timeout=30),
            requests.post(f"{base}/onboardings/validate", json=bad_inline, headers=key, timeout=30),
            requests.post(f"{base}/onboardings", json=bad_inline, headers=key, timeout=30),
            requests.get(f"{base}/health", timeout=30),
            requests.get(f"{base}/openapi.json", timeout=30),
            requests.get(f"{base}/onboardings", headers=key, timeout=30),
            requests.post(f"{base}/rotations/{inline['accountName']}", headers=key, timeout=30),
            requests.get(f"{base}/accounts", headers=key, timeout=30),
            requests.delete(f"{base}/accounts/{inline['accountName']}", headers=key, timeout=30),
            requests.post(f"{base}/onboardings/validate", headers=key, timeout=30, json={
                "operation": "offboard", "requestId": "LEAK-DRY-1", "accountName": inline["accountName"]}),
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 200, 200, 200, 404, 200, 404, 200]
    settings = stack.settings
    secrets = [CANARY, settings["PALETTE_API_KEY"], settings["IDENTITY_HEADER"],
               settings["ServiceBusConnection"].split("SharedAccessKey=")[-1].split(";")[0]]
    text = "\n".join(a.text for a in answers)
    for secret in secrets:
        for needle in _needles(secret):
            assert needle not in text, "a secret value appears in an HTTP response"
