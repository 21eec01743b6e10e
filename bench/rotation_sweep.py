"""The rotation sweep over many managed accounts, few of them due, with latency on every call.

On a fresh local stack: ``--due`` accounts (50) are onboarded for real and then made due (their
inventory rows say they expire in 5 days and were made 2 hours ago), and ``--managed`` minus that
(1,950) inventory rows stand for accounts that are not due (expiring in 200 days). Every stand-in
(Palette, Key Vault, Entra ID/Graph) then answers each call ``--latency-ms`` (20) late; the real
app is hosted by ``devstack.runner.LocalHost`` and one sweep runs. Prints the wall time from the
sweep to the last rotation finished, and the calls each service received (from the stand-ins' own
request logs) against the minimum, one figure line each, derived in bench/README.md:

* per rotated account: Palette 4 (list the scope's backup locations for other holders of the
  secret, read the account, validate the new secret, PUT it), Graph 2 (addPassword, read the app's
  passwords to prune), Key Vault 2 (read the current version, write the new one), Entra ID 1 (a
  client-credentials token: the new secret works);
* with ``--holders``, each due account also has one Azure backup location on its principal, named
  in its ``rotation.alsoUpdate`` (all in tenant scope, as the accounts are): per rotation Palette
  reads every Azure location of the scope when it lists them (``--due`` of them: the list carries
  no credentials), then reads its own holder again and PUTs it, so 4 + due + 2;
* per sweep: the inventory queries only (Table Storage, not counted here), none per account that
  is not due.

Target: calls within 1.1x of the minimum, and none that grows with the accounts not due. Asserts
nothing.

    .venv/bin/python -m bench rotation [--managed 2000] [--due 50] [--latency-ms 20] [--holders]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import ROOT, describe, figure, raise_palette_limits, say

MINIMUM = {"palette": 4, "graph": 2, "keyvault": 2, "entra": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rotation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--managed", type=int, default=2000)
    parser.add_argument("--due", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--holders", action="store_true",
                        help="give each due account one backup location the product may change")
    args = parser.parse_args(argv)

    import requests

    import function_app
    from devstack.runner import LocalHost
    from devstack.stack import DEVSTACK_TENANT_ID, Stack, StackOptions
    from functions.dependencies import build
    from shared.operations import process_request
    from shared.rotation.sweep import sweep
    from shared.settings import Settings
    from shared.state.inventory import AccountRecord
    from shared.state.records import iso

    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        stack = Stack(StackOptions(workdir=Path(tmp), tools_dir=ROOT / ".devstack" / "tools"))
        settings = stack.start()
        os.environ.update(settings)
        raise_palette_limits(settings)  # more accounts than Palette's default of 200 may be onboarded
        verify = settings["REQUESTS_CA_BUNDLE"]
        assert stack.palette is not None and stack.keyvault is not None and stack.identity_https is not None
        servers = {"palette": stack.palette.url, "keyvault": stack.keyvault.url, "identity": stack.identity_https.url}
        deps = build(Settings.from_mapping(settings))
        try:
            run = uuid.uuid4().hex[:6]
            bodies: list[dict[str, Any]] = []
            for i in range(args.due):
                client_id = str(uuid.uuid4())
                requests.post(f"{servers['identity']}/_devstack/applications",
                              json={"appId": client_id, "tenantId": DEVSTACK_TENANT_ID}, verify=verify,
                              timeout=10).raise_for_status()
                bodies.append({"requestId": f"ROT-{run}-{i:04d}", "accountName": f"rot-{run}-{i:04d}",
                               "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id},
                               **({"rotation": {"alsoUpdate": [f"backups-{run}-{i:04d}"]}} if args.holders else {})})
            say(f"onboarding {args.due} accounts ...")
            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(lambda b: process_request(json.dumps(b), deps.clients, deps.settings.pipeline,
                                                                   owner=f"seed-{b['requestId']}"), bodies))
            assert all(o.kind.value == "succeeded" for o in outcomes), [o.reason for o in outcomes]
            if args.holders:
                say(f"one backup location on each of the {args.due} principals ...")
                for body in bodies:
                    secret, _ = deps.clients.secrets.get_secret(f"palette-{body['accountName']}-client-secret")
                    requests.post(f"{servers['palette']}/_devstack/locations/azure", timeout=10, json={
                        "name": body["rotation"]["alsoUpdate"][0], "tenantId": DEVSTACK_TENANT_ID,
                        "clientId": body["azure"]["clientId"],
                        "clientSecret": secret.get_secret_value()}).raise_for_status()
            now = dt.datetime.now(dt.UTC)
            for body in bodies:
                def age(row: AccountRecord) -> None:
                    row.expires_on = iso(now + dt.timedelta(days=5))
                    row.secret_created_on = iso(now - dt.timedelta(hours=2))
                deps.clients.inventory.update(body["accountName"], age)
            say(f"adding {args.managed - args.due} accounts that are not due ...")
            later = iso(now + dt.timedelta(days=200))
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: deps.clients.inventory.create(AccountRecord(
                    account_name=f"idle-{run}-{i:05d}", palette_uid=uuid.uuid4().hex[:24], tenant_id=DEVSTACK_TENANT_ID,
                    client_id=str(uuid.uuid4()), secret_name=f"palette-idle-{run}-{i:05d}-client-secret",
                    secret_version=uuid.uuid4().hex, current_key_id=str(uuid.uuid4()), expires_on=later,
                    secret_created_on=iso(now - dt.timedelta(days=30)))), range(args.managed - args.due)))
            _drain_events(settings)
            for url in servers.values():
                requests.post(f"{url}/_devstack/faults", json={"path": ".*", "latencyMs": args.latency_ms},
                              verify=verify, timeout=10).raise_for_status()
            marks = {name: len(_requests(url, verify)) for name, url in servers.items()}
            host = LocalHost(function_app.app, {**settings, "VALIDATION_BUDGET_SECONDS": "60"})
            host.start()
            say(f"one sweep over {args.managed} managed accounts, {args.latency_ms} ms per stand-in call ...")
            try:
                began = time.monotonic()
                report = sweep(deps.clients, deps.background_queue, deps.settings.pipeline.rotation)  # as the timer
                swept = time.monotonic() - began
                deadline = began + args.timeout
                while time.monotonic() < deadline:
                    rows = [deps.clients.inventory.get(b["accountName"]) for b in bodies]
                    if all(r is not None and r.last_rotation_outcome for r in rows):
                        break
                    time.sleep(0.2)
                wall = time.monotonic() - began
            finally:
                host.stop()
            rows = [deps.clients.inventory.get(b["accountName"]) for b in bodies]
            succeeded = sum(1 for r in rows if r is not None and r.last_rotation_outcome == "succeeded")
            calls = {name: _requests(url, verify)[marks[name]:] for name, url in servers.items()}
            updated = _holders_updated(servers["palette"], deps, bodies) if args.holders else 0
        finally:
            deps.close()
            stack.stop()
    graph = [c for c in calls["identity"] if c["path"].startswith("/v1.0/")]
    # The Palette stand-in asks the token endpoint itself when it validates (as Palette asks Azure):
    # those calls are not the product's. The product's probe names itself in its user agent.
    entra = [c for c in calls["identity"] if "/oauth2/" in c["path"]
             and "palette-onboarding" in str(c.get("headers", {}).get("user-agent", ""))]
    counted = {"palette": len(calls["palette"]), "graph": len(graph), "keyvault": len(calls["keyvault"]),
               "entra": len(entra)}
    figure("accounts due", report.due, "", str(args.due))
    figure("rotations started", report.enqueued, "", str(args.due))
    figure("sweep run time (due accounts found, rotations started)", swept, "s", "none")
    figure("rotation sweep wall time, sweep to the last rotation finished", wall, "s", "none", digits=1)
    figure("rotations succeeded", succeeded, "", str(args.due))
    minimums = dict(MINIMUM)
    if args.holders:
        figure("backup locations holding the new secret", updated, "", str(args.due))
        minimums["palette"] += args.due + 2  # each Azure location read by the list; its own holder read and PUT
    total, floor = 0, 0
    for service, minimum in minimums.items():
        need = minimum * args.due
        total, floor = total + counted[service], floor + need
        figure(f"{service} calls", counted[service], "", f"<= {int(need * 1.1)}, minimum {need}")
        figure(f"{service} calls over the minimum", counted[service] / need, "", "<= 1.10")
        figure(f"{service} calls per rotation", counted[service] / max(succeeded, 1), "", f"minimum {minimum}")
    figure("all calls", total, "", f"<= {int(floor * 1.1)}, minimum {floor}")
    figure("all calls over the minimum", total / floor, "", "<= 1.10")
    by_call = Counter(f"{name}{' (the Palette stand-in)' if _stand_in(c) else ''} {describe(c)}"
                      for name, service in calls.items() for c in service)
    for call, count in sorted(by_call.items(), key=lambda item: (-item[1], item[0])):
        figure(f"calls to {call}", count, "", "none")
    return 0


def _holders_updated(palette_url: str, deps: Any, bodies: list[dict[str, Any]]) -> int:
    """How many of the seeded backup locations hold their account's current secret (Key Vault's)."""
    import hashlib

    import requests

    held = {loc["name"]: loc["clientSecretSha256"]
            for loc in requests.get(f"{palette_url}/_devstack/state", timeout=60).json()["backupLocations"]}
    count = 0
    for body in bodies:
        secret, _ = deps.clients.secrets.get_secret(f"palette-{body['accountName']}-client-secret")
        digest = hashlib.sha256(secret.get_secret_value().encode()).hexdigest()
        count += held.get(body["rotation"]["alsoUpdate"][0]) == digest
    return count


def _stand_in(call: dict[str, Any]) -> bool:
    """A call the Palette stand-in made itself (its sign-in to Entra when it validates, as Palette does)."""
    return str(call.get("headers", {}).get("user-agent", "")).startswith("devstack-")


def _requests(url: str, verify: str) -> list[dict[str, Any]]:
    import requests

    items: list[dict[str, Any]] = requests.get(f"{url}/_devstack/requests", verify=verify, timeout=60).json()["items"]
    return items


def _drain_events(settings: dict[str, str]) -> None:
    from azure.servicebus import ServiceBusClient

    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
            client.get_subscription_receiver(settings["EVENTS_TOPIC"], settings["EVENTS_SUBSCRIPTION"],
                                             max_wait_time=1) as receiver:
        while batch := receiver.receive_messages(max_message_count=200, max_wait_time=1):
            for message in batch:
                receiver.complete_message(message)


if __name__ == "__main__":
    sys.exit(main())
