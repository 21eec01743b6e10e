"""The deployment guide's commands can be pasted as they are, and name only what exists: every bash
block parses, holds no <placeholder>, runs scripts that exist, reads azd environment values the
deployment writes and sets ones it reads, and names saved queries that are deployed; the README's
"Try it by hand" tries every route the app serves, each by a method it serves.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "docs" / "deploy.md", ROOT / "infra" / "README.md"]

# azd environment values that are not main.bicep outputs: azd's own, and what the scripts set.
AZD_OWN = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_TYPE"}
SET_BY_SCRIPTS = {"API_CLIENT_ID", "ROTATION_EVENTS_ENABLED"}
READ_BY_SCRIPTS = {"GRAPH_OWNED_APPS", "GRAPH_GRANT_APPLY"}


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", path.read_text(), re.MULTILINE | re.DOTALL)


BLOCKS = [(path, block) for path in DOCS for block in bash_blocks(path)]


def outputs() -> set[str]:
    return set(BicepParser().parse(file_path=ROOT / "infra" / "main.bicep")["outputs"])


def parameter_variables() -> set[str]:
    mapped = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    return {re.match(r"\$\{([A-Z_]+)", entry["value"]).group(1) for entry in mapped.values()}


def test_the_guide_has_commands() -> None:
    assert len(bash_blocks(DOCS[0])) >= 15


@pytest.mark.parametrize(("path", "block"), BLOCKS, ids=lambda v: v.name if isinstance(v, Path) else v[:40])
def test_each_block_parses_and_has_no_placeholder(path: Path, block: str) -> None:
    result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{path.name}: {result.stderr}\n{block}"
    shell = re.sub(r"<<'?(JSON|PY)'?\n.*?^\1$", "", block, flags=re.MULTILINE | re.DOTALL)
    assert not re.search(r"<[A-Za-z][\w -]*>", shell), f"{path.name}: a placeholder to fill in:\n{block}"
    assert not re.search(r"=\.\.\.(\s|$)", shell), f"{path.name}: a value to fill in:\n{block}"


def test_scripts_named_exist() -> None:
    for path, block in BLOCKS:
        for script in re.findall(r"\bscripts/[\w.-]+\.sh\b", block):
            assert (ROOT / script).is_file(), f"{path.name} runs {script}"


def test_the_prerequisites_name_what_the_deploying_set_up_checks() -> None:
    """The operator sets up with scripts/deploy-setup.sh, not the development bootstrap, and the
    prerequisites name each tool it checks for."""
    guide = DOCS[0].read_text()
    prerequisites = guide.split("## Prerequisites\n", 1)[1].split("\n## ", 1)[0]
    checked = re.findall(r"^has (\S+) \|\|", (ROOT / "scripts" / "deploy-setup.sh").read_text(), re.MULTILINE)
    assert set(checked) == {"curl", "python3", "az", "azd"}
    for tool in checked:
        assert f"`{tool}`" in prerequisites, f"deploy.md's prerequisites do not name {tool}"
    assert "bash scripts/deploy-setup.sh" in prerequisites
    assert not [block for _, block in BLOCKS if "scripts/bootstrap.sh" in block]


def test_azd_environment_values_exist() -> None:
    readable = outputs() | AZD_OWN | SET_BY_SCRIPTS
    settable = parameter_variables() | AZD_OWN | READ_BY_SCRIPTS | SET_BY_SCRIPTS
    for path, block in BLOCKS:
        for name in re.findall(r"azd env get-value ([A-Z_]+)", block):
            assert name in readable, f"{path.name} reads {name}, which nothing writes"
        for name in re.findall(r"azd env set ([A-Z_]+)", block):
            assert name in settable, f"{path.name} sets {name}, which nothing reads"


def test_saved_queries_named_exist() -> None:
    monitoring = BicepParser().parse(file_path=ROOT / "infra" / "app" / "monitoring.bicep")
    names = {query["name"] for query in monitoring["variables"]["queries"]["value"]}
    text = DOCS[0].read_text()
    for name in re.findall(r"`([a-z0-9-]+)`", text):
        if name.endswith(("-by-reason", "-in-30-days", "-messages")) or name == "drift":
            assert name in names, f"deploy.md names a saved query {name} that is not deployed"


def _by_hand_calls() -> list[tuple[str, str]]:
    """(method, path) of each curl command in the README's "Try it by hand" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it by hand", 1)[1].split("\n## ", 1)[0]
    calls = []
    for block in re.findall(r"^```bash\n(.*?)^```$", section, re.MULTILINE | re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            if "curl " not in command:
                continue
            url = re.search(r"\$API/([^\s\"')]*)", command)
            assert url is not None, command
            method = re.search(r"-X (\w+)", command)
            verb = method.group(1) if method else ("POST" if "--data" in command else "GET")
            calls.append((verb, url.group(1).split("?", 1)[0]))
    return calls


def test_the_readmes_by_hand_commands_name_routes_the_app_serves() -> None:
    """Each curl of "Try it by hand" names a route and method the indexed app has (a path
    parameter matches any one segment), and the section tries every route."""
    import function_app

    function_app.app.functions_bindings = None
    routes = []
    for fn in function_app.app.get_functions():
        trigger = fn.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            binding = trigger.get_dict_repr()
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(binding["route"]))
            routes.append((re.compile(pattern), {str(getattr(m, "value", m)) for m in binding["methods"]},
                           binding["route"]))
    calls = _by_hand_calls()
    tried = set()
    for method, path in calls:
        served = [route for pattern, methods, route in routes if pattern.fullmatch(path) and method in methods]
        assert served, f"README 'Try it by hand': {method} /api/{path} is not a route of the app"
        tried.add((method, served[0]))
    every = {(method, route) for _, methods, route in routes for method in methods}
    assert every - tried <= {("GET", "openapi.json")}, every - tried
