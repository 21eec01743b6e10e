"""The demo: start the stack and the app, submit the sample requests, show events and results.

Each file in ``examples/`` is put on the onboarding queue as a ticketing system would. The Azure
side is what the stack seeds for the examples (:mod:`devstack.seeds`: each app registration, and
for the request that names an existing Key Vault secret, a secret Entra will refuse), so ``up`` and
``run`` by hand behave the same. The demo prints every event as it arrives and, at the end, each
request's state through the HTTP API and what Palette holds. Exit code 0 when every request ends as
its file expects (``examples/*.json`` ending in ``bad-credentials`` must fail, the others succeed).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import requests

from devstack.stack import REPO_ROOT, Stack, StackOptions

if TYPE_CHECKING:
    from pathlib import Path

    from devstack.runner import LocalHost

EXAMPLES = REPO_ROOT / "examples"
FINAL_TYPES = {"palette.onboarding.validated", "palette.onboarding.failed"}


def _out(text: str = "") -> None:
    print(text, flush=True)


def _expected_outcome(path: Path) -> str:
    return "failed" if "bad-credentials" in path.stem else "succeeded"


def run_demo(timeout_seconds: float = 180) -> int:
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    from devstack.runner import LocalHost

    paths = sorted(EXAMPLES.glob("*.json"))
    if not paths:
        _out(f"no examples found in {EXAMPLES}")
        return 1
    examples = [json.loads(p.read_text()) for p in paths]
    expected = {e["requestId"]: _expected_outcome(p) for p, e in zip(paths, examples, strict=True)}

    _out("== starting the local stack")
    stack = Stack(StackOptions(propagation_delay_seconds=3.0))
    settings = stack.start()
    from devstack.__main__ import running_stack

    # For `devstack events` in another terminal, and removed when the demo stops (it would name a
    # stack that is gone); a stack `up` started keeps its own settings file.
    settings_path = None if running_stack(stack.options.workdir) else stack.write_settings()
    for name, url in stack.describe().items():
        _out(f"   {name:16} {url}")
    for line in stack.seeded:
        _out(f"   seeded: {line}")
    import os

    os.environ.update(settings)  # the SDKs pick up REQUESTS_CA_BUNDLE and the managed identity here
    import function_app

    assert stack.certificate is not None
    host = LocalHost(function_app.app, settings, tls=stack.certificate)
    try:
        host.start()
        _out(f"== function app hosted locally; HTTP API at {host.http_url}")
        with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
                client.get_queue_sender(settings["ONBOARDING_QUEUE"]) as sender:
            for path, example in zip(paths, examples, strict=True):
                sender.send_messages(ServiceBusMessage(json.dumps(example), message_id=example["requestId"],
                                                       content_type="application/json"))
                _out(f"== submitted {path.name} ({example['requestId']}, account {example['accountName']})")
        outcomes = _follow_events(settings, set(expected), timeout_seconds)
        _show_results(host, stack, list(expected))
    finally:
        host.stop()
        stack.stop()
        if settings_path is not None:
            settings_path.unlink(missing_ok=True)

    ok = True
    _out("== outcome")
    for request_id, want in expected.items():
        got = outcomes.get(request_id, "no final event")
        mark = "ok " if got == want else "BAD"
        ok = ok and got == want
        _out(f"   {mark} {request_id}: expected {want}, got {got}")
    return 0 if ok else 1


def _follow_events(settings: dict[str, str], request_ids: set[str], timeout_seconds: float) -> dict[str, str]:
    """Print each event as ``python -m devstack events`` does (with the checks of a validation and
    the message of a failure below it) until every request has its final event."""
    from devstack.events import browse, details, line, request_id_of

    outcomes: dict[str, str] = {}
    _out("== events (CloudEvents on the events topic, as `python -m devstack events` prints them)")
    for event in browse(settings, timeout=timeout_seconds):
        _out(f"   {line(event)}")
        for text in details(event):
            _out(f"{'':17}{text}")
        request_id = request_id_of(event)
        if event.get("type") in FINAL_TYPES and request_id in request_ids:
            data = event.get("data") or {}
            passed = event["type"].endswith("validated") and data.get("outcome") == "passed"
            outcomes[request_id] = "succeeded" if passed else "failed"
            if len(outcomes) == len(request_ids):
                break
    return outcomes


def _show_results(host: LocalHost, stack: Stack, request_ids: list[str]) -> None:
    _out("== request state (GET /api/onboardings/{requestId})")
    for request_id in request_ids:
        state = requests.get(f"{host.http_url}/onboardings/{request_id}", timeout=10,
                             headers={"x-functions-key": host.function_key}).json()
        steps = ", ".join(f"{name}={step['outcome']}" for name, step in state.get("steps", {}).items())
        _out(f"   {request_id}: {state.get('status')}  [{steps}]")
    assert stack.palette is not None
    palette = requests.get(f"{stack.palette.url}/_devstack/state", timeout=10).json()
    _out("== Palette state")
    _out(json.dumps({k: palette.get(k) for k in ("cloudAccounts", "sshKeys", "apiKeys") if k in palette},
                    indent=2, default=str))


if __name__ == "__main__":
    sys.exit(run_demo())
