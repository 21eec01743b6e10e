"""The deployment scripts, run against stand-in `az` and `azd` commands that answer from a small
state file and record every call: scripts/graph-grant.sh only reads unless told to apply, changes
only what is missing, and is idempotent; scripts/rotation-events.sh subscribes once the function
exists and then hands the subscription to `azd provision`; run by hand (not as azd hooks), both read
what azd would have passed them from the azd environment; scripts/deploy-setup.sh says what a
deploying machine lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = "11111111-2222-4333-8444-555555555555"
GRAPH_SP = "99999999-8888-4777-8666-555555555555"
ROLE = "7ab1d382-f21e-4acd-a863-ba3e13f7da61"
APP_A = "aaaaaaaa-0000-4000-8000-000000000001"
APP_B = "bbbbbbbb-0000-4000-8000-000000000002"

# A stand-in for the Azure CLI and the Azure Developer CLI: answers from state.json, appends each
# call to calls.jsonl, and applies POSTs to the state, so a second run sees the first one's changes.
FAKE = r'''
import json, sys
from pathlib import Path
here = Path(__file__).parent
state = json.loads((here / "state.json").read_text())
tool, args = sys.argv[1], sys.argv[2:]
with (here / "calls.jsonl").open("a") as log:
    log.write(json.dumps([tool, *args]) + "\n")
def arg(name):
    return args[args.index(name) + 1] if name in args else ""
if tool == "azd":
    # azd env get-value answers from the environment's values, and fails for a key it lacks.
    values = state.setdefault("azd_env", {})
    if args[:2] == ["env", "get-value"]:
        if args[2] not in values:
            print(f"ERROR: key '{args[2]}' not found in the environment values", file=sys.stderr)
            sys.exit(1)
        print(values[args[2]])
    elif args[:2] == ["env", "set"]:
        values[args[2]] = args[3]
    elif args[:1] == ["version"]:
        print("azd version 1.0.0 (stand-in)")
    (here / "state.json").write_text(json.dumps(state))
    sys.exit(0)
if args[:1] == ["rest"]:
    method, uri = arg("--method"), arg("--uri")
    if state.get("graph_down"):
        sys.exit(1)
    if method == "GET" and "servicePrincipals(appId=" in uri:
        print(state["graph_sp"] + "\t" + state["role"])
    elif method == "GET" and uri.endswith("/appRoleAssignments"):
        print(1 if state["granted"] else 0)
    elif method == "GET" and "/owners" in uri:
        app = uri.split("appId='")[1].split("'")[0]
        print(1 if app in state["owned"] else 0)
    elif method == "POST" and uri.endswith("/appRoleAssignments"):
        state["granted"] = True
    elif method == "POST" and "/owners/$ref" in uri:
        state["owned"].append(uri.split("appId='")[1].split("'")[0])
    else:
        sys.exit(3)
elif args[:2] == ["account", "show"]:
    sys.exit(0 if state.get("signed_in", True) else 1)
elif args[:2] == ["account", "get-access-token"]:
    # A token only for a scope the state names (Entra ID refuses an unknown resource).
    if arg("--scope") not in state.get("tokens", {}):
        print(f"ERROR: no such resource: {arg('--scope')}", file=sys.stderr)
        sys.exit(1)
    print(state["tokens"][arg("--scope")])
elif args[:3] == ["functionapp", "keys", "list"]:
    print(state["function_keys"][arg("-g") + "/" + arg("-n")])
elif args[:1] == ["version"]:
    print("azure-cli 2.0.0 (stand-in)")
elif args[:3] == ["functionapp", "function", "show"]:
    sys.exit(0 if arg("--function-name") in state["functions"] else 3)
elif args[:3] == ["deployment", "group", "create"]:
    pass
else:
    sys.exit(4)
(here / "state.json").write_text(json.dumps(state))
'''


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fake.py").write_text(FAKE)
    for name in ("az", "azd"):
        launcher = bin_dir / name
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{bin_dir / "fake.py"}" {name} "$@"\n')
        launcher.chmod(0o755)
    (bin_dir / "calls.jsonl").write_text("")
    write_state(bin_dir, graph_sp=GRAPH_SP, role=ROLE, granted=False, owned=[], functions=[], azd_env={})
    return bin_dir


def write_state(bin_dir: Path, **state: Any) -> None:
    path = bin_dir / "state.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(state)
    path.write_text(json.dumps(current))


def state(bin_dir: Path) -> dict[str, Any]:
    current: dict[str, Any] = json.loads((bin_dir / "state.json").read_text())
    return current


def calls(bin_dir: Path) -> list[list[str]]:
    return [json.loads(line) for line in (bin_dir / "calls.jsonl").read_text().splitlines()]


def az_calls(bin_dir: Path) -> list[list[str]]:
    return [c for c in calls(bin_dir) if c[0] == "az"]


def run(script: str, bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir), **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60, check=False)


def posts(bin_dir: Path) -> list[str]:
    return [c[c.index("--uri") + 1] for c in calls(bin_dir) if c[1] == "rest" and c[c.index("--method") + 1] == "POST"]


def test_graph_grant_only_prints_without_apply(fake_cli: Path) -> None:
    result = run("graph-grant.sh", fake_cli, APP_A, MANAGED_IDENTITY_PRINCIPAL_ID=IDENTITY, GRAPH_OWNED_APPS=APP_B)
    assert result.returncode == 0, result.stderr
    assert f"would grant: Application.ReadWrite.OwnedBy to {IDENTITY}" in result.stdout
    assert f"would add: {IDENTITY} as an owner of {APP_A}" in result.stdout
    assert f"would add: {IDENTITY} as an owner of {APP_B}" in result.stdout
    assert "plan only" in result.stdout
    assert posts(fake_cli) == []


def test_graph_grant_applies_what_is_missing_and_is_idempotent(fake_cli: Path) -> None:
    write_state(fake_cli, owned=[APP_B])
    env = {"MANAGED_IDENTITY_PRINCIPAL_ID": IDENTITY, "GRAPH_OWNED_APPS": f"{APP_A},{APP_B}"}
    first = run("graph-grant.sh", fake_cli, "--apply", **env)
    assert first.returncode == 0, first.stderr
    assert posts(fake_cli) == [
        f"https://graph.microsoft.com/v1.0/servicePrincipals/{IDENTITY}/appRoleAssignments",
        f"https://graph.microsoft.com/v1.0/applications(appId='{APP_A}')/owners/$ref",
    ]
    body = next(c for c in calls(fake_cli) if "--body" in c and "appRoleAssignments" in c[c.index("--uri") + 1])
    assert json.loads(body[body.index("--body") + 1]) == {"principalId": IDENTITY, "resourceId": GRAPH_SP,
                                                          "appRoleId": ROLE}
    assert f"ok: owner of {APP_B}" in first.stdout
    again = run("graph-grant.sh", fake_cli, **env, GRAPH_GRANT_APPLY="true")
    assert again.returncode == 0, again.stderr
    assert len(posts(fake_cli)) == 2, "a second run changed something"
    assert "ok: Application.ReadWrite.OwnedBy is already granted" in again.stdout


def test_graph_grant_uses_the_configured_graph_endpoint(fake_cli: Path) -> None:
    result = run("graph-grant.sh", fake_cli, "--apply", MANAGED_IDENTITY_PRINCIPAL_ID=IDENTITY,
                 GRAPH_ENDPOINT="https://graph.microsoft.us/")
    assert result.returncode == 0, result.stderr
    assert posts(fake_cli) == [f"https://graph.microsoft.us/v1.0/servicePrincipals/{IDENTITY}/appRoleAssignments"]


def test_graph_grant_does_not_fail_a_provision_when_it_cannot_read(fake_cli: Path) -> None:
    write_state(fake_cli, graph_down=True)
    planned = run("graph-grant.sh", fake_cli, MANAGED_IDENTITY_PRINCIPAL_ID=IDENTITY)
    assert planned.returncode == 0 and "nothing changed" in planned.stderr
    applied = run("graph-grant.sh", fake_cli, "--apply", MANAGED_IDENTITY_PRINCIPAL_ID=IDENTITY)
    assert applied.returncode == 1 and "cannot read" in applied.stderr


def test_graph_grant_rejects_bad_ids(fake_cli: Path) -> None:
    no_identity = run("graph-grant.sh", fake_cli, "--apply")
    assert no_identity.returncode == 1 and "MANAGED_IDENTITY_PRINCIPAL_ID" in no_identity.stderr
    bad_app = run("graph-grant.sh", fake_cli, "--apply", "not-a-guid", MANAGED_IDENTITY_PRINCIPAL_ID=IDENTITY)
    assert bad_app.returncode == 1 and "'not-a-guid' is not an application (client) id" in bad_app.stderr
    assert az_calls(fake_cli) == []


def test_graph_grant_run_by_hand_reads_the_azd_environment(fake_cli: Path) -> None:
    """docs/deploy.md runs it outside a hook, where azd exports nothing: the identity, the Graph
    endpoint (US Government) and the apps kept in the environment come from `azd env get-value`,
    while applying stays the command line's choice."""
    write_state(fake_cli, azd_env={"MANAGED_IDENTITY_PRINCIPAL_ID": IDENTITY, "GRAPH_OWNED_APPS": APP_B,
                                   "GRAPH_ENDPOINT": "https://graph.microsoft.us", "GRAPH_GRANT_APPLY": "true"})
    planned = run("graph-grant.sh", fake_cli, APP_A)
    assert planned.returncode == 0, planned.stderr
    assert f"graph-grant (plan): managed identity {IDENTITY}, Graph https://graph.microsoft.us" in planned.stdout
    assert f"would add: {IDENTITY} as an owner of {APP_B}" in planned.stdout
    assert state(fake_cli)["granted"] is False and state(fake_cli)["owned"] == []

    applied = run("graph-grant.sh", fake_cli, "--apply", APP_A, APP_B)
    assert applied.returncode == 0, applied.stderr
    assert state(fake_cli)["granted"] is True and state(fake_cli)["owned"] == [APP_A, APP_B]
    assert all(uri.startswith("https://graph.microsoft.us/") for uri in posts(fake_cli))


def test_graph_grant_prefers_the_environment_to_the_azd_environment(fake_cli: Path) -> None:
    other = "22222222-3333-4444-8555-666666666666"
    write_state(fake_cli, azd_env={"MANAGED_IDENTITY_PRINCIPAL_ID": other})
    result = run("graph-grant.sh", fake_cli, "--apply", MANAGED_IDENTITY_PRINCIPAL_ID=IDENTITY)
    assert result.returncode == 0, result.stderr
    assert posts(fake_cli) == [f"https://graph.microsoft.com/v1.0/servicePrincipals/{IDENTITY}/appRoleAssignments"]


ROTATION_ENV = {
    "AZURE_RESOURCE_GROUP": "rg-dev",
    "AZURE_FUNCTION_NAME": "func-api-abc",
    "EVENTGRID_SYSTEM_TOPIC_NAME": "evgt-abc",
    "ROTATION_EVENT_SECRET_PREFIXES": '["palette-","operator-"]',
    "ROTATION_EVENTS_WAIT_SECONDS": "0",
}


def test_rotation_events_waits_for_the_function(fake_cli: Path) -> None:
    result = run("rotation-events.sh", fake_cli, **ROTATION_ENV)
    assert result.returncode == 0, result.stderr
    assert "has no function rotation_near_expiry yet" in result.stdout
    assert not [c for c in calls(fake_cli) if c[1:4] == ["deployment", "group", "create"]]
    assert "ROTATION_EVENTS_ENABLED" not in state(fake_cli)["azd_env"]


def test_rotation_events_run_by_hand_reads_the_azd_environment(fake_cli: Path) -> None:
    """Its own message says to run it again by hand after `az login`: outside a hook the values
    come from the azd environment."""
    write_state(fake_cli, functions=["rotation_near_expiry"], azd_env={
        name: value for name, value in ROTATION_ENV.items() if name != "ROTATION_EVENTS_WAIT_SECONDS"})
    result = run("rotation-events.sh", fake_cli, ROTATION_EVENTS_WAIT_SECONDS="0")
    assert result.returncode == 0, result.stderr
    deploy = next(c for c in calls(fake_cli) if c[1:4] == ["deployment", "group", "create"])
    assert deploy[deploy.index("-g") + 1] == "rg-dev"
    assert "functionAppName=func-api-abc" in deploy
    assert state(fake_cli)["azd_env"]["ROTATION_EVENTS_ENABLED"] == "true"
    again = run("rotation-events.sh", fake_cli)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_rotation_events_without_an_environment_says_to_provision(fake_cli: Path) -> None:
    result = run("rotation-events.sh", fake_cli)
    assert result.returncode == 1
    assert "AZURE_RESOURCE_GROUP is neither set nor in the azd environment: run azd provision first" in result.stderr
    assert az_calls(fake_cli) == []


def test_rotation_events_subscribes_once_then_leaves_it_to_provision(fake_cli: Path) -> None:
    write_state(fake_cli, functions=["rotation_near_expiry"])
    result = run("rotation-events.sh", fake_cli, **ROTATION_ENV)
    assert result.returncode == 0, result.stderr
    deploy = next(c for c in calls(fake_cli) if c[1:4] == ["deployment", "group", "create"])
    assert deploy[deploy.index("--template-file") + 1] == "infra/app/rotation-events.bicep"
    assert deploy[deploy.index("-g") + 1] == "rg-dev"
    parameters = deploy[deploy.index("--parameters") + 1 : deploy.index("-o")]
    assert parameters == ["systemTopicName=evgt-abc", "functionAppName=func-api-abc",
                          "functionName=rotation_near_expiry", 'secretNamePrefixes=["palette-","operator-"]']
    assert ["azd", "env", "set", "ROTATION_EVENTS_ENABLED", "true"] in calls(fake_cli)
    before = len(calls(fake_cli))
    again = run("rotation-events.sh", fake_cli, **ROTATION_ENV, ROTATION_EVENTS_ENABLED="true")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(calls(fake_cli)) == before


def test_rotation_events_needs_a_signed_in_cli(fake_cli: Path) -> None:
    write_state(fake_cli, functions=["rotation_near_expiry"], signed_in=False)
    result = run("rotation-events.sh", fake_cli, **ROTATION_ENV)
    assert result.returncode == 0 and "not signed in" in result.stdout
    assert not [c for c in calls(fake_cli) if c[1:4] == ["deployment", "group", "create"]]


def test_rotation_events_skips_a_private_app(fake_cli: Path) -> None:
    write_state(fake_cli, functions=["rotation_near_expiry"])
    result = run("rotation-events.sh", fake_cli, **ROTATION_ENV, API_PRIVATE="true")
    assert result.returncode == 0 and "private endpoint" in result.stdout
    assert az_calls(fake_cli) == []


def test_api_app_registration_without_an_environment_says_so(fake_cli: Path) -> None:
    result = run("api-app-registration.sh", fake_cli)
    assert result.returncode == 1 and "no azd environment: run azd env new" in result.stderr
    assert az_calls(fake_cli) == []


def deploying_checkout(tmp_path: Path, bin_dir: Path) -> Path:
    """A checkout holding what scripts/deploy-setup.sh reads, with a .venv already made for the
    current requirements.txt (so nothing is installed), and Python 3.11 on the PATH as python3."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    script = checkout / "scripts" / "deploy-setup.sh"
    script.write_text((ROOT / "scripts" / "deploy-setup.sh").read_text())
    for name in ("requirements.txt", "requirements-dev.txt"):
        (checkout / name).write_text((ROOT / name).read_text())
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(sys.executable)
    digest = hashlib.sha256((checkout / "requirements.txt").read_bytes()).hexdigest()
    (checkout / ".venv" / ".deploy-requirements.sha256").write_text(digest + "\n")
    (bin_dir / "python3").symlink_to(sys.executable)
    return checkout


def deploy_setup(checkout: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(checkout / "scripts" / "deploy-setup.sh")], cwd=checkout,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir)},
                          capture_output=True, text=True, timeout=60, check=False)


def test_deploy_setup_is_ready_with_the_deploying_tools_alone(fake_cli: Path, tmp_path: Path) -> None:
    """az, azd, curl and Python 3.11: no Node.js, npm or Functions Core Tools asked for."""
    checkout = deploying_checkout(tmp_path, fake_cli)
    result = deploy_setup(checkout, fake_cli)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready to deploy" in result.stdout and ".venv is ready" in result.stdout
    assert "missing" not in result.stdout + result.stderr


def test_deploy_setup_names_each_missing_tool(fake_cli: Path, tmp_path: Path) -> None:
    checkout = deploying_checkout(tmp_path, fake_cli)
    (fake_cli / "az").unlink()
    (fake_cli / "azd").unlink()
    result = deploy_setup(checkout, fake_cli)
    assert result.returncode == 1
    assert "missing: the Azure CLI, az" in result.stderr and "missing: the Azure Developer CLI, azd" in result.stderr
    assert "2 missing: install them, then run scripts/deploy-setup.sh again" in result.stderr
    assert ".venv is ready" in result.stdout  # what it could set up, it did


@pytest.mark.parametrize("script", ["graph-grant.sh", "rotation-events.sh", "api-app-registration.sh",
                                    "deploy-setup.sh", "offboard-all.sh"])
def test_scripts_parse_and_are_executable(script: str) -> None:
    path = ROOT / "scripts" / script
    assert os.access(path, os.X_OK)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
