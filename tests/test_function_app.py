"""The app indexes, with the triggers and bindings the contract names.

An import error swallowed at indexing is the "0 functions found after deploy" outage; this test
indexes the app exactly as the worker does.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import function_app

ROOT = Path(__file__).resolve().parent.parent


def _bindings() -> dict[str, dict[str, object]]:
    # get_functions() indexes once per app object (as the worker does once per process); the local
    # runner may have indexed this one already in the same test session.
    function_app.app.functions_bindings = None
    found = {}
    for fn in function_app.app.get_functions():
        trigger = json.loads(json.dumps(fn.get_trigger().get_dict_repr(), default=lambda o: getattr(o, "value", o)))
        found[fn.get_function_name()] = trigger
    return found


def test_every_function_indexes_with_its_trigger() -> None:
    bindings = _bindings()
    queues = {name: b["queueName"] for name, b in bindings.items() if b["type"] == "serviceBusTrigger"}
    assert queues == {"onboarding_queue": "%ONBOARDING_QUEUE%", "background_queue": "%BACKGROUND_QUEUE%",
                      "onboarding_dead_letters": "%ONBOARDING_QUEUE%/$DeadLetterQueue",
                      "background_dead_letters": "%BACKGROUND_QUEUE%/$DeadLetterQueue"}
    assert bindings["onboarding_queue"] == {
        "direction": 0, "type": "serviceBusTrigger", "name": "message",
        "queueName": "%ONBOARDING_QUEUE%", "connection": "ServiceBusConnection",
    }
    routes = {name: (b["route"], b["methods"], b["authLevel"]) for name, b in bindings.items()
              if b["type"] == "httpTrigger"}
    assert routes == {
        "health": ("health", ["GET"], "anonymous"),
        "openapi": ("openapi.json", ["GET"], "anonymous"),
        "submit_onboarding": ("onboardings", ["POST"], "function"),
        "validate_onboarding": ("onboardings/validate", ["POST"], "function"),
        "list_onboardings": ("onboardings", ["GET"], "function"),
        "get_onboarding": ("onboardings/{requestId}", ["GET"], "function"),
        "rotate_account": ("rotations/{accountName}", ["POST"], "function"),
        "get_rotation": ("rotations/{id}", ["GET"], "function"),
        "list_accounts": ("accounts", ["GET"], "function"),
        "get_account": ("accounts/{name}", ["GET"], "function"),
        "offboard_account": ("accounts/{name}", ["DELETE"], "function"),
        "reactivate_previous_api_key": ("accounts/{name}/previous-api-key/reactivate", ["POST"], "function"),
    }


def test_the_domain_package_knows_nothing_of_functions() -> None:
    """shared/ must not import azure.functions nor read the environment (house rule 2)."""
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "azure.functions" or n.startswith("azure.functions.") for n in names):
                offenders.append(f"{path}: imports {names}")
            if isinstance(node, ast.Attribute) and node.attr == "environ":
                offenders.append(f"{path}: reads os.environ")
    assert offenders == []


def test_host_json_sets_concurrency_and_timeout_on_purpose() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["functionTimeout"] == "00:10:00"
    assert host["extensions"]["serviceBus"]["maxConcurrentCalls"] >= 1
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"


def test_deployment_leaves_out_development_folders() -> None:
    ignored = set((ROOT / ".funcignore").read_text().split())
    assert {"devstack/", "tests/", "bench/", "infra/", ".venv"} <= ignored
