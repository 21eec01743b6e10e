"""Fencing: nothing is created or destroyed by a delivery that may have lost its request, and a
request is never announced failed while a delivery is still making things for it.

* a copy of a running request's message is dead-lettered while the delivery waits on Palette: the
  dead-letter handler only asks the delivery to stop; the delivery fails the request itself, at its
  next fence, and takes back what it made;
* a delivery whose Table writes fail (its heartbeat cannot renew the lease) while a second delivery
  claims the request stops before its next create: exactly one of everything is made;
* a message dead-lettered before any delivery wrote a row leaves a row the state route answers;
* the sweeper never fails a request a live delivery holds.

Outcomes are read from the stand-ins and from an independent subscriber on the events topic: no
event twice, and nothing announced after ``failed``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.httpbase import Fault, RunningServer
from shared.engine import OutcomeKind
from shared.operations import handle_dead_letter, sweep
from shared.state import TableStateStore

from .conftest import World, wait_for
from .test_resilience import REFERENCE, end_state, exactly_once, full_request


@pytest.fixture
def table_proxy(world: World) -> Iterator[RunningServer]:
    """A proxy in front of the stack's Azurite, whose requests can be made to fail."""
    from devstack.tableproxy import start_table_proxy

    endpoint = next(part.split("=", 1)[1] for part in world.stack.settings["AzureWebJobsStorage"].split(";")
                    if part.startswith("TableEndpoint="))
    proxy = start_table_proxy(endpoint)
    yield proxy
    proxy.stop()


def state_through(proxy: RunningServer, world: World) -> TableStateStore:
    """The state table as one delivery sees it, through the proxy; no SDK retries, so a fault is
    seen at once (the real SDK's retries only postpone it)."""
    from azure.data.tables import TableClient

    from devstack.tableproxy import connection_string

    return TableStateStore(TableClient.from_connection_string(
        connection_string(proxy), table_name=world.deps.settings.state_table, retry_total=0))


def row_of(world: World, request_id: str) -> dict[str, Any]:
    try:
        return world.state_row(request_id)
    except Exception:  # noqa: BLE001 - not written yet
        return {}


def step_done(world: World, request_id: str, step: str) -> bool:
    steps = json.loads(row_of(world, request_id).get("Steps") or "{}")
    return steps.get(step, {}).get("outcome") == "succeeded"


def nothing_after_failed(events: list[dict[str, Any]]) -> None:
    types = [e["type"].removeprefix("palette.onboarding.") for e in events]
    assert "failed" in types and types[-1] == "failed", types
    assert "validated" not in types


def held_in_validation_behind(proxy: RunningServer, world: World, body: dict[str, Any],
                              latency_ms: int) -> tuple[threading.Thread, list[Any], Any]:
    """A delivery with 2-second leases that reaches the state table through ``proxy``, held in
    Palette's validation for ``latency_ms``; returns once its secret step is recorded."""
    config = dataclasses.replace(world.deps.settings.pipeline, lease_seconds=2.0)
    clients = dataclasses.replace(world.deps.clients, state=state_through(proxy, world))
    world.palette_fault(method="POST", path="^/v1/clouds/azure/account/validate$", times=1, latencyMs=latency_ms)
    thread, outcome = run_in_thread(world, body, config=config, clients=clients)
    wait_for(lambda: step_done(world, body["requestId"], "secret"), "the delivery's secret step")
    return thread, outcome, config


def run_in_thread(world: World, body: dict[str, Any], **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def deliver() -> None:
        try:
            outcome.append(world.run(body, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
    thread = threading.Thread(target=deliver)
    thread.start()
    return thread, outcome


def test_a_copy_dead_lettered_while_the_account_is_being_created_fails_the_request_after_it(world: World) -> None:
    body = world.request()
    world.palette_fault(method="POST", path="^/v1/cloudaccounts/azure$", times=1, latencyMs=2500)
    delivery, outcome = run_in_thread(world, body)
    wait_for(lambda: json.loads(row_of(world, body["requestId"]).get("Made") or "{}").get("account"),
             "the account's fence")
    asked = handle_dead_letter(json.dumps(body).encode(), world.deps.clients, message_id="copy-1",
                               reason="MaxDeliveryCountExceeded", description="a stale copy")
    assert asked.kind is OutcomeKind.BUSY  # the delivery holds it: it was asked to stop, not failed under it
    assert row_of(world, body["requestId"])["Status"] == "running"
    delivery.join(timeout=60)
    assert outcome[0].kind is OutcomeKind.FAILED and outcome[0].reason == "dead_lettered"
    # What the delivery made before and after the dead-lettering is taken back, not left unrecorded.
    assert world.palette_accounts(body["accountName"]) == []
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    assert [v.enabled for v in world.secret_versions(f"palette-{body['accountName']}-client-secret")] == [False]
    assert world.deps.clients.inventory.get(body["accountName"]) is None
    row = world.state_row(body["requestId"])
    assert row["Status"] == "failed" and row["ErrorReason"] == "dead_lettered" and row["CleanupPending"] is False
    events = world.events()
    exactly_once(events, ["requested", "secret.stored", "account.registered", "failed"])
    nothing_after_failed(events)
    failed = events[-1]["data"]
    assert "MaxDeliveryCountExceeded" in failed["message"] and len(failed["removed"]) == 3


def test_dead_lettered_before_any_palette_create_the_new_password_is_taken_back(world: World) -> None:
    body = world.request()
    world.palette_fault(method="POST", path="^/v1/clouds/azure/account/validate$", times=1, latencyMs=2500)
    delivery, outcome = run_in_thread(world, body)
    wait_for(lambda: step_done(world, body["requestId"], "secret"), "the secret step")
    asked = handle_dead_letter(json.dumps(body).encode(), world.deps.clients, message_id="copy-2",
                               reason="TTLExpiredException", description="")
    assert asked.kind is OutcomeKind.BUSY
    delivery.join(timeout=60)
    assert outcome[0].kind is OutcomeKind.FAILED and outcome[0].reason == "dead_lettered"
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    assert world.palette_accounts(body["accountName"]) == []  # its fence stopped it before the create
    events = world.events()
    exactly_once(events, ["requested", "secret.stored", "failed"])
    nothing_after_failed(events)


def test_a_delivery_that_cannot_renew_its_lease_stops_before_its_next_create(world: World,
                                                                             table_proxy: RunningServer) -> None:
    """Delivery A reaches the state table through a proxy; while it waits on Palette's validation,
    every Table call through the proxy fails, so its heartbeat cannot renew its lease. Delivery B
    (another host) claims the request once that lease lapsed and finishes it. When A's wait ends,
    it stops before its next create: there is one of everything, and each event once."""
    body = full_request(world)
    a, a_outcome, config = held_in_validation_behind(table_proxy, world, body, 9000)
    table_proxy.add_fault(Fault(method=None, path_regex=".*", status=503))
    time.sleep(2.5)  # A's leases lapse: its heartbeat cannot write them
    b = world.run(body, config=config)
    assert b.kind is OutcomeKind.SUCCEEDED, (b.reason, b.message)
    table_proxy.clear_faults()
    a.join(timeout=60)
    assert not isinstance(a_outcome[0], BaseException) and a_outcome[0].kind is OutcomeKind.BUSY, a_outcome
    assert end_state(world, body) == REFERENCE
    exactly_once(world.events(), ["requested", "secret.stored", "account.registered", "sshkey.uploaded",
                                  "apikey.created", "validated"])


def test_a_message_dead_lettered_before_it_ever_ran_leaves_a_row_to_read(world: World) -> None:
    body = world.request()
    outcome = handle_dead_letter(json.dumps(body).encode(), world.deps.clients, message_id="never-ran",
                                 reason="TTLExpiredException", description="expired on the queue")
    assert outcome.kind is OutcomeKind.FAILED
    record = world.deps.clients.state.get(body["requestId"])
    assert record is not None and record.status.value == "failed" and record.error_reason == "dead_lettered"
    assert "TTLExpiredException" in record.error_message
    # The same body delivered later is the same request, already failed: nothing is made.
    assert world.run(body).kind is OutcomeKind.DUPLICATE
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    exactly_once(world.events(), ["failed"])


def test_the_sweeper_never_fails_a_request_a_live_delivery_holds(world: World) -> None:
    body = world.request()
    world.palette_fault(method="POST", path="^/v1/clouds/azure/account/validate$", times=1, latencyMs=3000)
    sweep_config = dataclasses.replace(world.deps.settings.sweep, max_redrives=0, grace_seconds=0)
    delivery, outcome = run_in_thread(world, body)
    wait_for(lambda: step_done(world, body["requestId"], "secret"), "the secret step")
    report = sweep(world.deps.clients, world.deps.queue, sweep_config)
    assert report.failed == 0
    delivery.join(timeout=60)
    assert outcome[0].kind is OutcomeKind.SUCCEEDED


def test_a_delivery_whose_heartbeat_failed_but_nobody_took_over_proves_its_lease_and_finishes(
        world: World, table_proxy: RunningServer) -> None:
    """The same outage with nobody else claiming: past its lease, the delivery proves it again with
    a conditional write before its next step, and finishes; nothing waits for the sweeper."""
    body = world.request()
    a, a_outcome, _config = held_in_validation_behind(table_proxy, world, body, 4000)
    table_proxy.add_fault(Fault(method=None, path_regex=".*", status=503))
    time.sleep(2.5)  # its lease lapses: the heartbeat cannot write
    table_proxy.clear_faults()
    a.join(timeout=60)
    assert a_outcome[0].kind is OutcomeKind.SUCCEEDED, a_outcome
    assert len(world.palette_accounts(body["accountName"])) == 1
    exactly_once(world.events(), ["requested", "secret.stored", "account.registered", "validated"])
