"""Onboarding throughput: N requests through the queue and the real app, on a fresh local stack.

Two modes, each in its own process with its own stack (``--mode both``, the default, runs both):

* ``queue``: the N requests are put on the onboarding queue at once (one batch, ``message_id`` =
  ``requestId``) and the real Function App, hosted by ``devstack.runner.LocalHost`` with host.json's
  ``maxConcurrentCalls``, processes them.
* ``inprocess``: the same N requests go straight to ``shared.pipeline.process_request`` on a pool of
  as many threads, with no queue, which separates the queue's overhead from the pipeline's.

Prints: wall time (first send to last finish), throughput (onboardings per minute), latency per
request, p50/p95 (end to end: sent to finished, from the state row's ``updatedAt``; processing:
the state row's ``createdAt`` to ``updatedAt``), calls per onboarding and the 429s Palette sent
(from the stand-ins' ``/_devstack/requests``), events per onboarding, and the peak RSS of the
process. The stand-ins run in the same process (all but Azurite), so the RSS includes them.
Asserts nothing.

    .venv/bin/python bench/onboarding_throughput.py [--n 20] [--mode both|queue|inprocess]
        [--propagation-delay 0] [--ssh-key] [--timeout 600]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.stack import Stack
    from shared.state import OnboardingRecord

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _epoch(iso_time: str) -> float:
    return dt.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def _concurrency() -> int:
    host = json.loads((ROOT / "host.json").read_text())
    return int(host.get("extensions", {}).get("serviceBus", {}).get("maxConcurrentCalls", 16))


def _bodies(stack: Stack, n: int, ssh_key: bool) -> list[dict[str, Any]]:
    """N valid requests, each for its own app registration in the stand-in."""
    import requests

    from devstack.stack import DEVSTACK_TENANT_ID

    assert stack.identity_https is not None
    run = uuid.uuid4().hex[:6]
    bodies = []
    for i in range(n):
        client_id = str(uuid.uuid4())
        requests.post(f"{stack.identity_https.url}/_devstack/applications",
                      json={"appId": client_id, "tenantId": DEVSTACK_TENANT_ID},
                      verify=stack.settings["REQUESTS_CA_BUNDLE"], timeout=10).raise_for_status()
        body: dict[str, Any] = {"requestId": f"BENCH-{run}-{i:04d}", "accountName": f"bench-{run}-{i:04d}",
                                "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id}}
        if ssh_key:
            body["sshKey"] = {"name": f"bench-{run}-{i:04d}", "generate": True}
        bodies.append(body)
    return bodies


def _recorded(url: str, verify: str) -> list[dict[str, Any]]:
    import requests

    items: list[dict[str, Any]] = requests.get(f"{url}/_devstack/requests", verify=verify, timeout=30).json()["items"]
    return items


def _drain_events(settings: dict[str, str]) -> int:
    from azure.servicebus import ServiceBusClient

    count = 0
    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
            client.get_subscription_receiver(settings["EVENTS_TOPIC"], settings["EVENTS_SUBSCRIPTION"],
                                             max_wait_time=1) as receiver:
        while batch := receiver.receive_messages(max_message_count=100, max_wait_time=1):
            for message in batch:
                receiver.complete_message(message)
            count += len(batch)
    return count


def _wait_finished(store: Any, ids: set[str], timeout: float) -> dict[str, OnboardingRecord]:
    deadline = time.monotonic() + timeout
    while True:
        finished = {r.request_id: r for r in store.list() if r.request_id in ids and r.status.finished}
        if len(finished) == len(ids) or time.monotonic() > deadline:
            return finished
        time.sleep(0.1)


def run_mode(mode: str, n: int, propagation_delay: float, ssh_key: bool, timeout: float) -> dict[str, Any]:
    """One measurement on its own stack, in this process."""
    from devstack.stack import Stack, StackOptions
    from shared.settings import Settings
    from shared.state import TableStateStore

    concurrency = _concurrency()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as workdir:
        stack = Stack(StackOptions(workdir=Path(workdir), tools_dir=ROOT / ".devstack" / "tools",
                                   propagation_delay_seconds=propagation_delay))
        settings = stack.start()
        os.environ.update(settings)  # the SDKs find the CA bundle and the managed identity here
        store = TableStateStore.from_connection_string(settings["AzureWebJobsStorage"],
                                                       Settings.from_mapping(settings).state_table)
        try:
            bodies = _bodies(stack, n, ssh_key)
            ids = {b["requestId"] for b in bodies}
            if mode == "queue":
                began, finished = _through_queue(settings, bodies, store, timeout)
            else:
                began, finished = _in_process(settings, bodies, store, concurrency)
            ended = max((_epoch(r.updated_at) for r in finished.values()), default=time.time())
            verify = settings["REQUESTS_CA_BUNDLE"]
            assert stack.palette is not None and stack.keyvault is not None and stack.identity_https is not None
            palette = _recorded(stack.palette.url, verify)
            graph = _recorded(stack.identity_https.url, verify)
            vault = _recorded(stack.keyvault.url, verify)
            events = _drain_events(settings)
        finally:
            store.close()
            stack.stop()
    statuses = Counter(r.status.value for r in finished.values())
    statuses["unfinished"] = len(ids) - len(finished)
    wall = ended - began
    end_to_end = [_epoch(r.updated_at) - began for r in finished.values()]
    processing = [_epoch(r.updated_at) - _epoch(r.created_at) for r in finished.values()]
    prefixes = Counter("/".join(r["path"].split("/")[:3]) for r in palette if r["status"] == 429)
    return {
        "mode": mode, "n": n, "concurrency": concurrency, "propagation_delay_s": propagation_delay,
        "ssh_key": ssh_key, "statuses": dict(statuses), "wall_s": wall,
        "per_minute": len(finished) / wall * 60 if wall > 0 else 0.0,
        "e2e_p50_s": _percentile(end_to_end, 50), "e2e_p95_s": _percentile(end_to_end, 95),
        "processing_p50_s": _percentile(processing, 50), "processing_p95_s": _percentile(processing, 95),
        "palette_calls_per_onboarding": len(palette) / n,
        "palette_429s": sum(1 for r in palette if r["status"] == 429), "palette_429s_by_prefix": dict(prefixes),
        "graph_and_token_calls_per_onboarding": len(graph) / n,
        "key_vault_calls_per_onboarding": len(vault) / n,
        "events_per_onboarding": events / n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _through_queue(settings: dict[str, str], bodies: list[dict[str, Any]], store: Any,
                   timeout: float) -> tuple[float, dict[str, OnboardingRecord]]:
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    import function_app
    from devstack.runner import LocalHost

    host = LocalHost(function_app.app, settings)
    host.start()
    try:
        with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
                client.get_queue_sender(settings["ONBOARDING_QUEUE"]) as sender:
            messages = [ServiceBusMessage(json.dumps(b), message_id=b["requestId"], content_type="application/json")
                        for b in bodies]
            sender.create_message_batch()  # open the link before the clock starts
            began = time.time()
            batch = sender.create_message_batch()
            for message in messages:
                batch.add_message(message)
            sender.send_messages(batch)
        finished = _wait_finished(store, {b["requestId"] for b in bodies}, timeout)
    finally:
        host.stop()
    return began, finished


def _in_process(settings: dict[str, str], bodies: list[dict[str, Any]], store: Any,
                concurrency: int) -> tuple[float, dict[str, OnboardingRecord]]:
    from functions.dependencies import build
    from shared.pipeline import process_request
    from shared.settings import Settings

    deps = build(Settings.from_mapping(settings))
    try:
        def one(body: dict[str, Any]) -> None:
            process_request(json.dumps(body).encode(), deps.clients, deps.settings.pipeline,
                            owner=f"bench-{uuid.uuid4().hex[:8]}")

        deps.clients.state.get("warm-up")  # create the table and open the pools before the clock starts
        began = time.time()
        with ThreadPoolExecutor(concurrency, thread_name_prefix="bench") as pool:
            list(pool.map(one, bodies))
    finally:
        deps.close()
    ids = {b["requestId"] for b in bodies}
    return began, {r.request_id: r for r in store.list() if r.request_id in ids and r.status.finished}


def report(result: dict[str, Any]) -> None:
    r = result
    label = {"queue": "through the queue (LocalHost, real app)", "inprocess": "in-process process_request, no queue"}
    print(f"== {label[r['mode']]}: {r['n']} onboardings, concurrency {r['concurrency']}, "
          f"propagation delay {r['propagation_delay_s']:g} s{', generated SSH key' if r['ssh_key'] else ''}")
    print(f"   outcome            {r['statuses']}")
    print(f"   wall time          {r['wall_s']:.2f} s")
    print(f"   throughput         {r['per_minute']:.1f} onboardings/min")
    print(f"   latency end-to-end p50 {r['e2e_p50_s']:.2f} s   p95 {r['e2e_p95_s']:.2f} s   (sent -> finished)")
    print(f"   latency processing p50 {r['processing_p50_s']:.2f} s   p95 {r['processing_p95_s']:.2f} s   "
          "(state createdAt -> updatedAt)")
    print(f"   Palette calls      {r['palette_calls_per_onboarding']:.1f} per onboarding; 429s seen: "
          f"{r['palette_429s']} {r['palette_429s_by_prefix'] or ''}")
    print(f"   other calls        Graph+token {r['graph_and_token_calls_per_onboarding']:.1f}, "
          f"Key Vault {r['key_vault_calls_per_onboarding']:.1f} per onboarding")
    print(f"   events             {r['events_per_onboarding']:.1f} per onboarding")
    print(f"   peak RSS           {r['peak_rss_mb']:.0f} MB (this process: app + in-process stand-ins)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="onboardings per mode (default 20)")
    parser.add_argument("--mode", choices=["both", "queue", "inprocess"], default="both")
    parser.add_argument("--propagation-delay", type=float, default=0.0,
                        help="seconds Entra rejects a new client secret (real: 4-18; default 0)")
    parser.add_argument("--ssh-key", action="store_true", help="each request also generates an RSA 4096 SSH key")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode != "both":
        result = run_mode(args.mode, args.n, args.propagation_delay, args.ssh_key, args.timeout)
        print(json.dumps(result) if args.json else "", flush=True)
        if not args.json:
            report(result)
        return
    for mode in ("queue", "inprocess"):
        command = [sys.executable, str(Path(__file__).resolve()), "--json", "--mode", mode, "--n", str(args.n),
                   "--propagation-delay", str(args.propagation_delay), "--timeout", str(args.timeout)]
        if args.ssh_key:
            command.append("--ssh-key")
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                             timeout=args.timeout + 120)
        if out.returncode != 0:
            sys.exit(f"the {mode} run failed:\n{out.stderr}")
        report(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
