"""The host killed for real, as Azure recycles an instance: SIGKILL, no ``finally``, no message
settled, no lease released. Onboardings on the queue still finish, each exactly once, with nothing
lost, doubled or orphaned, and an independent subscriber sees every event once.

The host is ``python -m devstack run`` in a process of its own (``devstack.hostproc``). After a
kill the broker hands the killed host's messages out again only when their locks expire (the
queue's lock duration, 1 minute), so this test takes a minute or two; the leases are 3 s here, so
the redelivery never waits on them. ``bench/kill_recovery.py`` measures the same with 8 requests.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from devstack.hostproc import HostProcess
from tests.onboarding.conftest import World, deps, wait_for, world
from tests.onboarding.test_resilience import REFERENCE, end_state, exactly_once, palette_holds_key_vaults_secret

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding

FULL_EVENTS = ["requested", "secret.stored", "account.registered", "sshkey.uploaded", "apikey.created", "validated"]


def _send(world: World, bodies: list[dict[str, Any]]) -> None:
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    settings = world.stack.settings
    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
            client.get_queue_sender(settings["ONBOARDING_QUEUE"]) as sender:
        sender.send_messages([ServiceBusMessage(json.dumps(b), message_id=b["requestId"]) for b in bodies])


def test_a_host_killed_three_times_loses_doubles_and_orphans_nothing(world: World, tmp_path: Path) -> None:
    bodies = []
    for _ in range(6):
        body = world.request()
        suffix = body["requestId"][-10:]
        body["sshKey"] = {"name": f"kill-{suffix}", "generate": True}
        body["apiKey"] = {"name": f"kill-{suffix}", "user": "admin@example.com", "expiresInDays": 9}
        bodies.append(body)
    settings = {**world.stack.settings, "LEASE_SECONDS": "3", "VALIDATION_BUDGET_SECONDS": "10",
                "RETRY_DELAYS_SECONDS": "1,2,2,5,5"}
    host = HostProcess(tmp_path / "host", settings)
    _send(world, bodies)
    try:
        for pause in (2.0, 3.0, 2.5):
            host.start()
            host.wait_serving()
            time.sleep(pause)
            host.kill()
        host.start()

        def all_finished() -> bool:
            records = [world.deps.clients.state.get(b["requestId"]) for b in bodies]
            return all(r is not None and r.status.finished for r in records)
        wait_for(all_finished, "every onboarding to finish after the kills", timeout=240, interval=1)
    finally:
        host.stop()
    assert host.kills == 3
    for body in bodies:
        row = world.state_row(body["requestId"])
        assert row["Status"] == "succeeded", (row["ErrorReason"], row["ErrorMessage"])
        assert row["OutboxPending"] is False
        assert end_state(world, body) == REFERENCE
        assert palette_holds_key_vaults_secret(world, body["accountName"])
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in world.events():
        by_request[event["data"]["requestId"]].append(event)
    assert set(by_request) == {b["requestId"] for b in bodies}
    for events in by_request.values():
        exactly_once(events, FULL_EVENTS)
