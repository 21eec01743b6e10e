"""Recovery after hard kills: 8 onboardings on the queue, the host killed three times in a few seconds.

On a fresh local stack, ``python -m devstack run`` hosts the real app in a child process
(``devstack.hostproc``); 8 onboardings (every option: generated SSH key, API key) go on the queue
at once, and the host is SIGKILLed three times a few seconds apart, mid-work, then started again.
Prints the time from the last kill to the last onboarding finished (the figure the lease design
is for: a killed host's requests resume once its message locks expire, not after a fixed
10-minute lease), and what an independent subscriber received: finished, duplicates, lost events.

The floor: after a kill the broker redelivers a message only when its lock expires (the queue's
lock duration, 60 s here and in Azure), so the figure cannot be under about one lock duration
plus one onboarding. Target: at most 90 s. Asserts nothing.

    .venv/bin/python -m bench kill-recovery [--n 8] [--lease-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import ROOT, figure, say

#: The events of each onboarding: requested, secret.stored, account.registered, sshkey.uploaded,
#: apikey.created, validated.
EXPECTED_EVENTS = 6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench kill-recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--lease-seconds", type=float, default=30.0, help="LEASE_SECONDS (the app's default: 30)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    import requests
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    from devstack.hostproc import HostProcess
    from devstack.stack import DEVSTACK_TENANT_ID, Stack, StackOptions
    from shared.settings import Settings
    from shared.state import TableStateStore

    with tempfile.TemporaryDirectory(prefix="kill-recovery-") as tmp:
        stack = Stack(StackOptions(workdir=Path(tmp) / "stack", tools_dir=ROOT / ".devstack" / "tools"))
        settings = stack.start()
        try:
            assert stack.identity_https is not None
            bodies: list[dict[str, Any]] = []
            for i in range(args.n):
                client_id = str(uuid.uuid4())
                requests.post(f"{stack.identity_https.url}/_devstack/applications",
                              json={"appId": client_id, "tenantId": DEVSTACK_TENANT_ID},
                              verify=settings["REQUESTS_CA_BUNDLE"], timeout=10).raise_for_status()
                tag = uuid.uuid4().hex[:6]
                bodies.append({"requestId": f"KILL-{tag}-{i}", "accountName": f"kill-{tag}-{i}",
                               "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id},
                               "sshKey": {"name": f"kill-{tag}-{i}", "generate": True},
                               "apiKey": {"name": f"kill-{tag}-{i}", "user": "admin@example.com",
                                          "expiresInDays": 30}})
            host = HostProcess(Path(tmp) / "host", {**settings, "LEASE_SECONDS": str(args.lease_seconds)})
            with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
                    client.get_queue_sender(settings["ONBOARDING_QUEUE"]) as sender:
                sender.send_messages([ServiceBusMessage(json.dumps(b), message_id=b["requestId"]) for b in bodies])
            say(f"{args.n} onboardings on the queue; killing the host three times ...")
            started = time.monotonic()
            for number, pause in enumerate((3.0, 2.0, 2.0), start=1):
                host.start()
                host.wait_serving()
                time.sleep(pause)
                host.kill()
                say(f"kill {number}: SIGKILL after {pause:g} s serving")
            last_kill = time.monotonic()
            host.start()
            say("host started again; waiting for every onboarding to finish ...")
            store = TableStateStore.from_connection_string(settings["AzureWebJobsStorage"],
                                                           Settings.from_mapping(settings).state_table)
            deadline = last_kill + args.timeout
            finished_at = None
            while time.monotonic() < deadline:
                records = [store.get(b["requestId"]) for b in bodies]
                if all(r is not None and r.status.finished for r in records):
                    finished_at = time.monotonic()
                    break
                time.sleep(0.5)
            host.stop()
            records = [store.get(b["requestId"]) for b in bodies]
            succeeded = sum(1 for r in records if r is not None and r.status.value == "succeeded")
            events = _drain(settings)
            store.close()
        finally:
            stack.stop()
    per_request = Counter(e["data"]["requestId"] for e in events)
    ids = Counter(e["id"] for e in events)
    expected = EXPECTED_EVENTS
    duplicates = sum(count - 1 for count in ids.values() if count > 1)
    lost = sum(max(expected - len({str(e["type"]) for e in events if e["data"]["requestId"] == b["requestId"]}), 0)
               for b in bodies)
    recovery = (finished_at - last_kill) if finished_at is not None else float("nan")
    figure("kill recovery, last kill to the last onboarding finished", recovery, "s", "<= 90", digits=1)
    figure("total time, enqueue to the last onboarding finished", (finished_at or time.monotonic()) - started, "s",
           "none", digits=1)
    figure("onboardings succeeded", succeeded, "", str(args.n))
    figure("duplicate events", duplicates, "", "0")
    figure("lost events", lost, "", "0")
    figure("events per onboarding", sum(per_request.values()) / max(len(bodies), 1), "", str(expected), digits=1)
    return 0


def _drain(settings: dict[str, str]) -> list[dict[str, Any]]:
    from azure.servicebus import ServiceBusClient

    found = []
    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
            client.get_subscription_receiver(settings["EVENTS_TOPIC"], settings["EVENTS_SUBSCRIPTION"],
                                             max_wait_time=2) as receiver:
        while batch := receiver.receive_messages(max_message_count=100, max_wait_time=2):
            for message in batch:
                found.append(json.loads(b"".join(message.body)))
                receiver.complete_message(message)
    return found


if __name__ == "__main__":
    sys.exit(main())
