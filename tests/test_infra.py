"""The Bicep in infra/ parses and describes what the app needs, and no more.

No Bicep compiler can run here, so these checks read the parse tree (pycep-parser): every file
parses; the modules main.bicep calls exist and get the parameters they declare; only the intended
data roles are granted, each on its intended scope; nothing uses keys or local auth; every public
network switch is off when vnetEnabled is true; and the app settings the Function App gets are
exactly the settings the code reads (shared/settings.py, the bindings of every indexed function)
plus the platform's own, in both directions. Pure file reading: no stack, about a second.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pycep import BicepParser

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"

# The only roles the deployment may grant (built-in role definition ids, the same in every tenant).
ALLOWED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

# Every grant, exactly: (role, scope, who). Scopes are rbac.bicep's `existing` symbols (which vault,
# which Service Bus entity); who is "app" (the managed identity) or "developer" (principalId).
# Service Bus roles sit on the queue, the topic or the subscription, never on the namespace; the
# identity can only read the config vault, and only the developer can write to it.
EXPECTED_GRANTS = {
    *{
        (role, scope, who)
        for who in ("app", "developer")
        for role, scope in (
            ("Storage Blob Data Owner", "storage"),
            ("Storage Table Data Contributor", "storage"),
            ("Key Vault Secrets Officer", "keyVault"),
            ("Azure Service Bus Data Receiver", "queue"),
            ("Azure Service Bus Data Sender", "queue"),
            ("Azure Service Bus Data Receiver", "backgroundQueue"),
            ("Azure Service Bus Data Sender", "backgroundQueue"),
            ("Azure Service Bus Data Sender", "topic"),
            ("Monitoring Metrics Publisher", "appInsights"),
        )
    },
    ("Key Vault Secrets User", "configKeyVault", "app"),
    ("Key Vault Secrets Officer", "configKeyVault", "developer"),
    ("Azure Service Bus Data Receiver", "ticketingSubscription", "developer"),
}
# The loop collections of rbac.bicep and whom they hold.
PRINCIPAL_LISTS = {"principals": {"app", "developer"}, "appPrincipal": {"app"}, "developerPrincipal": {"developer"}}
# The `existing` scope symbols of rbac.bicep and the main.bicep module output each is named from.
SCOPE_SOURCES = {
    "storageAccountName": ["storage", "outputs", "name"],
    "keyVaultName": ["keyVault", "outputs", "name"],
    "configKeyVaultName": ["configKeyVault", "outputs", "name"],
    "serviceBusNamespaceName": ["serviceBus", "outputs", "name"],
    "queueName": ["serviceBus", "outputs", "queueName"],
    "backgroundQueueName": ["serviceBus", "outputs", "backgroundQueueName"],
    "topicName": ["serviceBus", "outputs", "topicName"],
    "subscriptionName": ["serviceBus", "outputs", "subscriptionName"],
    "appInsightsName": ["monitoring", "outputs", "appInsightsName"],
}

# --- settings parity ------------------------------------------------------------------------------
# Settings the code reads that the automatic scan (shared/settings.py; what functions/ and
# function_app.py read from os.environ; the bindings of the indexed functions) cannot see yet: work
# in progress elsewhere, wired in infra already. One place: add a name here when code that reads it
# is on its way; the entry becomes redundant once the scan sees it.
SETTINGS_THE_CODE_WILL_READ: set[str] = set()
# The connection-string forms of the two connections: read by the code (local stack), never set in
# Azure, where the identity-based __ forms are.
CONNECTION_STRING_SETTINGS = {"ServiceBusConnection", "AzureWebJobsStorage"}
# Settings the code reads that Azure leaves unset: the local stack (or a proxy) sets them.
OPTIONAL_SETTINGS = CONNECTION_STRING_SETTINGS | {"REQUESTS_CA_BUNDLE", "RESOURCE_MANAGER_SCOPE"}
# Settings the platform reads, not our code: the Functions host (storage account, identity-based
# connections, telemetry) and azure-identity (which user-assigned identity).
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_THREADPOOL_THREAD_COUNT",  # the Python worker's
}
# What an identity-based connection named in a binding needs (functions-host 8261).
CONNECTION_SUFFIXES = ("__fullyQualifiedNamespace", "__credential", "__clientId")
# Settings Flex Consumption rejects or ignores: the plan's functionAppConfig owns these.
FLEX_UNSUPPORTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_VNET_ROUTE_ALL",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
}

GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parsed(path: Path) -> dict[str, Any]:
    return dict(_parser().parse(file_path=path))


def tree(relative: str) -> dict[str, Any]:
    return parsed(INFRA / relative)


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's body, looking through a `[for ...]` loop or an `if` condition."""
    config: dict[str, Any] = declaration["config"]
    while "loop_type" in config or ("condition" in config and "config" in config):
        config = config["config"]
    return config


def resources_of(type_: str, *, existing: bool = False) -> list[tuple[Path, str, dict[str, Any]]]:
    return [
        (path, symbol, body(resource))
        for path in BICEP_FILES
        for symbol, resource in parsed(path).get("resources", {}).items()
        if resource["type"] == type_ and resource["existing"] is existing
    ]


def the_one(type_: str) -> dict[str, Any]:
    found = resources_of(type_)
    assert len(found) == 1, f"expected one {type_}, found {[(p.name, s) for p, s, _ in found]}"
    return found[0][2]


def accessor_chain(node: Any) -> list[str]:
    """`a.b.c` as ["a", "b", "c"]; a plain symbol as [symbol]; anything else as []."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        return [operands["operand_1"], *accessor_chain(operands["operand_2"])]
    return []


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def iso_seconds(duration: str) -> int:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, f"not a simple ISO 8601 duration: {duration}"
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class Unevaluable(Exception):
    pass


def evaluate(node: Any, symbols: Mapping[str, Any]) -> Any:
    """Evaluate the small expressions the switches use: symbols, literals, ?:, &&, ||, !, ==."""
    if isinstance(node, (bool, int)) or node is None:
        return node
    if isinstance(node, str):
        return symbols.get(node, node)  # pycep gives literals and symbols both as strings
    if isinstance(node, dict) and "operator" in node:
        kind, operands = node["operator"]["type"], node["operator"]["operands"]
        if kind == "conditional":
            chosen = "true_value" if evaluate(operands["condition"], symbols) else "false_value"
            return evaluate(operands[chosen], symbols)
        if kind == "and":
            return bool(evaluate(operands["operand_1"], symbols)) and bool(evaluate(operands["operand_2"], symbols))
        if kind == "or":
            return bool(evaluate(operands["operand_1"], symbols)) or bool(evaluate(operands["operand_2"], symbols))
        if kind == "not":
            return not evaluate(operands["bool_value"], symbols)
        if kind == "equals":
            return evaluate(operands["operand_1"], symbols) == evaluate(operands["operand_2"], symbols)
    raise Unevaluable(json.dumps(node, default=str)[:200])


def main_symbols(**overrides: Any) -> dict[str, Any]:
    """main.bicep's parameters (defaults, then overrides) and the variables that evaluate."""
    main = tree("main.bicep")
    symbols: dict[str, Any] = {name: param["default"] for name, param in main["parameters"].items()}
    symbols.update(overrides)
    for name, variable in main["variables"].items():
        try:
            symbols[name] = evaluate(variable["value"], symbols)
        except Unevaluable:
            continue
    return symbols


def module_param(module: str, name: str) -> Any:
    return body(tree("main.bicep")["modules"][module])["params"].get(name)


def module_file(module: str) -> str:
    return str(tree("main.bicep")["modules"][module]["detail"]["path"])


def app_settings() -> dict[str, Any]:
    site = the_one("Microsoft.Web/sites")
    entries = site["properties"]["siteConfig"]["appSettings"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {entry["name"]: entry["value"] for entry in entries}


def settings_read_by_settings_py() -> set[str]:
    """Every literal name shared/settings.py reads: env.get("X"), env["X"], and its own functions
    called with a literal first argument (required("X"))."""
    module = ast.parse((ROOT / "shared" / "settings.py").read_text())
    local_functions = {node.name for node in ast.walk(module) if isinstance(node, ast.FunctionDef)}
    names: set[str] = set()
    for node in ast.walk(module):
        is_env_item = isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "env"
        if is_env_item and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            names.add(node.slice.value)
        # Its own helpers called as helper(env, "X", ...).
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in local_functions
                and len(node.args) >= 2 and getattr(node.args[0], "id", "") == "env"
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            names.add(node.args[1].value)
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        if not isinstance(node.args[0].value, str):
            continue
        func = node.func
        is_env_get = isinstance(func, ast.Attribute) and func.attr == "get" and getattr(func.value, "id", "") == "env"
        is_local_call = isinstance(func, ast.Name) and func.id in local_functions - {"from_mapping"}
        if is_env_get or is_local_call:
            names.add(node.args[0].value)
    return names


def settings_read_by_the_triggers() -> set[str]:
    """Names functions/*.py and function_app.py read from the environment themselves:
    os.environ.get("X"), os.environ["X"], os.getenv("X")."""
    names: set[str] = set()
    for path in [ROOT / "function_app.py", *sorted((ROOT / "functions").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            key: ast.expr | None = None
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
                key = node.args[0]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return names


@cache
def indexed_bindings() -> dict[str, list[dict[str, Any]]]:
    """Every function the worker indexes, with its bindings as the host receives them."""
    import function_app

    # get_functions() indexes once per app object; another test may have indexed this one already.
    function_app.app.functions_bindings = None
    return {
        fn.get_function_name(): [binding.get_dict_repr() for binding in fn.get_bindings()]
        for fn in function_app.app.get_functions()
    }


def trigger_bindings() -> list[dict[str, Any]]:
    """The trigger binding of every indexed function."""
    return [next(b for b in bindings if str(b["type"]).endswith("Trigger")) for bindings in indexed_bindings().values()]


def binding_settings() -> tuple[set[str], set[str]]:
    """`%SETTING%` binding expressions and `connection` names of the indexed functions."""
    expressions: set[str] = set()
    connections: set[str] = set()
    for bindings in indexed_bindings().values():
        for binding in bindings:
            for key, value in binding.items():
                if not isinstance(value, str):
                    continue
                if key == "connection":
                    connections.add(value)
                expressions |= set(re.findall(r"%([A-Za-z0-9_]+)%", value))
    return expressions, connections


def settings_the_code_reads() -> set[str]:
    expressions, connections = binding_settings()
    read = settings_read_by_settings_py() | settings_read_by_the_triggers() | expressions | SETTINGS_THE_CODE_WILL_READ
    for connection in connections:
        read |= {f"{connection}{suffix}" for suffix in CONNECTION_SUFFIXES}
    return read


# --- every file parses, and the modules fit together -------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_parses(path: Path) -> None:
    result = parsed(path)
    assert result.get("resources") or result.get("modules"), f"{path.name} declares nothing"


def test_the_expected_files_exist() -> None:
    names = {str(p.relative_to(INFRA)) for p in BICEP_FILES}
    assert {"main.bicep", "app/rbac.bicep", "app/api.bicep", "app/network.bicep", "app/private-endpoint.bicep",
            "app/events.bicep", "app/rotation-events.bicep", "app/monitoring.bicep"} <= names
    assert (INFRA / "main.parameters.json").is_file()
    assert (INFRA / "README.md").is_file()


def test_main_calls_every_module_with_the_parameters_it_declares() -> None:
    main = tree("main.bicep")
    modules = main["modules"]
    used = set()
    for symbol, module in modules.items():
        assert module["type"] == "local", f"module {symbol} is not a local file (nothing can be downloaded)"
        path = (INFRA / module["detail"]["path"]).resolve()
        assert path.is_file(), f"module {symbol}: {path} does not exist"
        used.add(path)
        declared = parsed(path).get("parameters", {})
        passed = set(body(module)["params"])
        assert passed <= set(declared), f"module {symbol} gets unknown parameters {passed - set(declared)}"
        required = {name for name, param in declared.items() if param["default"] is None}
        assert required <= passed, f"module {symbol} misses required parameters {required - passed}"
    assert used == {p.resolve() for p in BICEP_FILES if p.parent.name == "app"}, "an app/*.bicep file is unused"
    # module outputs that main reads exist
    for node in walk(main):
        chain = accessor_chain(node)
        if len(chain) == 3 and chain[0] in modules and chain[1] == "outputs":
            module_path = INFRA / modules[chain[0]]["detail"]["path"]
            assert chain[2] in parsed(module_path).get("outputs", {}), f"{chain[0]} has no output {chain[2]}"


def test_names_come_from_resource_token_and_known_abbreviations() -> None:
    text = (INFRA / "main.bicep").read_text()
    assert re.search(r"var resourceToken = toLower\(uniqueString\(", text)
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    for key in set(re.findall(r"abbrs\.(\w+)", text)):
        assert key in abbreviations, f"abbreviations.json has no {key}"
    # Key Vault names are at most 24 characters; the token is 13.
    assert max(len(abbreviations["keyVault"]), len(abbreviations["configKeyVault"])) + 13 <= 24


# Resource types whose only API versions are previews (no stable one exists).
PREVIEW_ONLY_TYPES = {"Microsoft.Insights/diagnosticSettings"}


def test_api_versions_are_explicit_and_stable() -> None:
    for path in BICEP_FILES:
        text = path.read_text()
        assert "br/public:" not in text and "br:" not in text, f"{path.name} uses a registry module"
        for symbol, resource in parsed(path).get("resources", {}).items():
            version = resource["api_version"] or ""
            preview = "(-preview)?" if resource["type"] in PREVIEW_ONLY_TYPES else ""
            pattern = rf"\d{{4}}-\d{{2}}-\d{{2}}{preview}"
            assert re.fullmatch(pattern, version), f"{path.name}:{symbol} uses API {version}"


def test_outputs_azd_reads() -> None:
    outputs = tree("main.bicep")["outputs"]
    for name in ("AZURE_FUNCTION_NAME", "KEY_VAULT_URL", "SERVICE_BUS_NAMESPACE", "AZURE_RESOURCE_GROUP",
                 "MANAGED_IDENTITY_PRINCIPAL_ID", "CONFIG_KEY_VAULT_NAME", "EVENTGRID_SYSTEM_TOPIC_NAME",
                 "ROTATION_EVENT_SECRET_PREFIXES", "API_PRIVATE", "PALETTE_API_KEY_SECRET_NAME",
                 "ONBOARDING_QUEUE", "BACKGROUND_QUEUE"):
        assert name in outputs
    assert accessor_chain(outputs["ONBOARDING_QUEUE"]["value"]) == ["serviceBus", "outputs", "queueName"]
    assert accessor_chain(outputs["BACKGROUND_QUEUE"]["value"]) == ["serviceBus", "outputs", "backgroundQueueName"]


def test_parameters_come_from_azd_environment_variables() -> None:
    main_params = tree("main.bicep")["parameters"]
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, entry in mapped.items():
        assert name in main_params, f"main.parameters.json maps unknown parameter {name}"
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", entry["value"]), f"{name} is not fed from the azd environment"
        match = re.fullmatch(r"\$\{[A-Z_]+=([^}]*)\}", entry["value"])
        if match and main_params[name]["default"] is not None:
            assert match.group(1) == str(main_params[name]["default"]).lower() or match.group(1) == str(
                main_params[name]["default"]), f"{name}: the azd default {match.group(1)!r} differs from Bicep's"
    required = {name for name, param in main_params.items() if param["default"] is None}
    assert required <= set(mapped), f"azd would prompt for {required - set(mapped)}"
    assert {"vnetEnabled", "apiPrivateEndpointEnabled", "apiClientId", "rotationEventsEnabled"} <= set(mapped)
    defaults = {name: param["default"] for name, param in main_params.items()}
    assert defaults["paletteEndpoint"] == "https://api.spectrocloud.com"
    assert defaults["rotationSchedule"] == "0 0 3 * * *"
    assert defaults["sweepSchedule"] == "0 */2 * * * *"
    assert defaults["rotationThresholdDays"] == 30
    assert defaults["rotationMinAgeMinutes"] == 60
    assert defaults["principalId"] == ""
    assert defaults["vnetEnabled"] is True, "network isolation is on by default"
    assert defaults["apiPrivateEndpointEnabled"] is False
    assert defaults["rotationEventsEnabled"] is False, "the first provision runs before the function exists"


def test_azure_yaml_has_one_python_function_service_and_the_hooks() -> None:
    lines = (ROOT / "azure.yaml").read_text().splitlines()
    start = lines.index("services:")
    block = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        block.append(line)
    services = [line.strip().rstrip(":") for line in block if re.fullmatch(r"  \S.*:", line)]
    assert services == ["api"]
    fields = dict(line.strip().split(": ", 1) for line in block if line.startswith("    "))
    assert fields == {"project": ".", "language": "python", "host": "function"}
    # azd deploys service `api` to the resource tagged azd-service-name: api
    tags = [node for node in walk(the_one("Microsoft.Web/sites")["tags"]) if isinstance(node, dict)]
    assert any(tag.get("'azd-service-name'") == "api" or tag.get("azd-service-name") == "api" for tag in tags)
    # the hooks run scripts that exist
    text = (ROOT / "azure.yaml").read_text()
    hooks = dict(re.findall(r"^  (\w+):\n(?:    .*\n)*?    run: bash (\S+)$", text, re.MULTILINE))
    assert hooks == {"postprovision": "scripts/graph-grant.sh", "postdeploy": "scripts/rotation-events.sh"}
    for script in hooks.values():
        assert (ROOT / script).is_file()


# --- least privilege ------------------------------------------------------------------------------


def test_only_allowed_role_ids_appear_anywhere() -> None:
    for path in BICEP_FILES:
        for guid in GUID.findall(path.read_text()):
            assert guid.lower() in ALLOWED_ROLES, f"{path.name}: {guid} is not an allowed role"


def test_role_assignments_live_in_rbac_bicep_only() -> None:
    """And the one subscription-scoped grant, which a resource-group module cannot make."""
    places = {path.relative_to(INFRA).as_posix() for path, _, _ in resources_of(ROLE_ASSIGNMENT)}
    assert places == {"app/rbac.bicep", "app/permissions-reader.bicep"}


def test_the_permissions_reader_reads_role_assignments_and_nothing_else() -> None:
    """azure.permissions needs the three reads, on the listed subscriptions, for the app only."""
    module = tree("app/permissions-reader.bicep")
    assert module["globals"]["scope"]["value"] == "subscription"
    roles = [(symbol, config) for path, symbol, config in resources_of("Microsoft.Authorization/roleDefinitions")
             if path.name == "permissions-reader.bicep"]
    [(role_symbol, role)] = roles
    variables = {name: var["value"] for name, var in module["variables"].items()}
    [permissions] = role["properties"]["permissions"]
    assert variables[permissions["actions"]] == ["Microsoft.Authorization/roleAssignments/read",
                                                "Microsoft.Authorization/roleDefinitions/read",
                                                "Microsoft.Authorization/denyAssignments/read"]
    assert permissions["notActions"] == []
    [assignable] = role["properties"]["assignableScopes"]
    assert assignable["operator"]["operands"]["operand_1"]["function"]["type"] == "subscription"
    [(_, _, grant)] = [r for r in resources_of(ROLE_ASSIGNMENT) if r[0].name == "permissions-reader.bicep"]
    assert accessor_chain(grant["properties"]["roleDefinitionId"]) == [role_symbol, "id"]
    assert grant["properties"]["principalId"] == "identityPrincipalId"
    assert grant["properties"]["principalType"] == "ServicePrincipal"
    assert accessor_chain(module_param("permissionsReader", "identityPrincipalId")) == [
        "identity", "outputs", "principalId"]


def test_role_ids_are_exactly_the_intended_ones_on_exactly_the_intended_scopes() -> None:
    rbac = tree("app/rbac.bicep")
    variables = {name: var["value"] for name, var in rbac["variables"].items()}
    scopes = {symbol: resource["type"] for symbol, resource in rbac["resources"].items() if resource["existing"]}
    grants = set()
    for symbol, resource in rbac["resources"].items():
        if resource["type"] != ROLE_ASSIGNMENT:
            continue
        loop = resource["config"].get("loop_type")
        assert loop, f"{symbol} is not a loop over a principal list"
        principal_list = loop["detail"]["array_name"]
        item = loop["detail"]["item_name"]
        assert principal_list in PRINCIPAL_LISTS, f"{symbol} loops over {principal_list}"
        config = body(resource)
        role_function = config["properties"]["roleDefinitionId"]["function"]
        assert role_function["type"] == "subscription_resource_id", symbol
        role_variable = role_function["parameters"]["resource_name_1"]
        role_id = variables[role_variable]
        assert role_id in ALLOWED_ROLES, f"{symbol} grants {role_id}"
        scope = config["scope"]
        assert scope in scopes, f"{symbol} is scoped to {scope}, not a resource"
        for who in PRINCIPAL_LISTS[principal_list]:
            grants.add((ALLOWED_ROLES[role_id], scope, who))
        name = config["name"]["function"]
        assert name["type"] == "guid", symbol
        args = name["parameters"]
        assert accessor_chain(args["base_string"]) == [scope, "id"], f"{symbol}: name not guid(scope.id, ...)"
        assert accessor_chain(args["extra_string_1"]) == [item, "id"], f"{symbol}: principal missing from the name"
        assert args["extra_string_2"] == role_variable, f"{symbol}: role missing from the name"
        assert accessor_chain(config["properties"]["principalId"]) == [item, "id"]
    assert grants == EXPECTED_GRANTS
    # Each scope symbol is the resource main.bicep means: the config vault is the config vault.
    existing = {symbol: resource for symbol, resource in rbac["resources"].items() if resource["existing"]}
    for param, source in SCOPE_SOURCES.items():
        assert any(body(r)["name"] == param for r in existing.values()), param
        assert accessor_chain(module_param("rbac", param)) == source, param
    assert module_file("keyVault") == module_file("configKeyVault") == "app/keyvault.bicep"
    assert module_param("keyVault", "name") != module_param("configKeyVault", "name")
    assert accessor_chain(module_param("rbac", "identityPrincipalId")) == ["identity", "outputs", "principalId"]
    assert module_param("rbac", "developerPrincipalId") == "principalId"


def test_role_ids_are_named_variables_with_a_comment() -> None:
    text = (INFRA / "app" / "rbac.bicep").read_text()
    for role_id in ALLOWED_ROLES:
        match = re.search(rf"^(// .*)\n(?:// .*\n)*var \w+RoleId = '{role_id}'", text, re.MULTILINE)
        assert match, f"{ALLOWED_ROLES[role_id]} is not a commented named variable in rbac.bicep"


def test_no_keys_or_connection_strings() -> None:
    for path in BICEP_FILES:
        text = path.read_text()
        for forbidden in ("listKeys(", "listConnectionStrings(", "listAccountSas(", "listServiceSas(",
                          "AccountKey=", "SharedAccessKey", "authorizationRules"):
            assert forbidden not in text, f"{path.name} uses {forbidden}"


def test_storage_is_identity_only() -> None:
    storage = the_one("Microsoft.Storage/storageAccounts")["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    container = the_one("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"
    the_one("Microsoft.Storage/storageAccounts/tableServices")
    storage_params = tree("app/storage.bicep")["parameters"]
    tables = {table["name"] for _, _, table in resources_of("Microsoft.Storage/storageAccounts/tableServices/tables")}
    assert {storage_params[name]["default"] for name in tables} == {"onboardings", "accounts", "ratelimits"}
    from shared.settings import Settings

    fields = Settings.__dataclass_fields__
    assert {fields[f].default for f in ("state_table", "inventory_table", "pace_table")} == {
        "onboardings", "accounts", "ratelimits"}


def test_service_bus_is_identity_only_and_premium_when_private() -> None:
    namespace = the_one("Microsoft.ServiceBus/namespaces")
    assert namespace["sku"]["name"] == "serviceBusSku"
    assert namespace["properties"]["disableLocalAuth"] is True
    assert namespace["properties"]["minimumTlsVersion"] == "1.2"
    sku = module_param("serviceBus", "serviceBusSku")
    assert evaluate(sku, main_symbols(vnetEnabled=True)) == "Premium", "private endpoints need Premium"
    assert evaluate(sku, main_symbols(vnetEnabled=False)) == "Standard", "topics need Standard at least"


def test_app_insights_and_log_analytics_disable_local_auth() -> None:
    insights = {k.lower(): v for k, v in the_one("Microsoft.Insights/components")["properties"].items()}
    assert insights["disablelocalauth"] is True
    workspace = the_one("Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_key_vaults_use_rbac_with_purge_protection_and_audit_logs() -> None:
    vault = the_one("Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert "accessPolicies" not in vault
    audit = tree("app/keyvault.bicep")["resources"]["audit"]
    assert audit["type"] == "Microsoft.Insights/diagnosticSettings" and body(audit)["scope"] == "keyVault"


# Service Bus's own defaults for the entity properties the local stack models: what an entity gets
# when the Bicep leaves the property out (the stand-in's config takes the same defaults).
SERVICE_BUS_DEFAULTS: dict[str, Any] = {
    "requiresDuplicateDetection": False,
    "duplicateDetectionHistoryTimeWindow": "PT10M",
    "lockDuration": "PT1M",
    "maxDeliveryCount": 10,
    "requiresSession": False,
    "enablePartitioning": False,
}
# Entity properties the stand-in does not model (devstack/COVERAGE.md says so); any other property
# the Bicep sets must be compared below, so a new one fails here until the local stack has it.
NOT_MODELLED_BY_THE_STAND_IN = {"deadLetteringOnMessageExpiration", "defaultMessageTimeToLive"}


def _entity_setting(properties: dict[str, Any], name: str) -> Any:
    return properties.get(name, SERVICE_BUS_DEFAULTS[name])


def _duplicate_detection_window(properties: dict[str, Any]) -> int | None:
    """The window in seconds when the entity has duplicate detection, else None."""
    if not _entity_setting(properties, "requiresDuplicateDetection"):
        return None
    return iso_seconds(_entity_setting(properties, "duplicateDetectionHistoryTimeWindow"))


def bicep_queues() -> dict[str, dict[str, Any]]:
    """servicebus.bicep's queues by the main.bicep variable that names each, with their properties
    (a variable's value when the resource names one)."""
    servicebus = tree("app/servicebus.bicep")
    variables = {name: var["value"] for name, var in servicebus["variables"].items()}
    # servicebus.bicep's name parameter -> the main.bicep variable main passes to it
    names = {param: module_param("serviceBus", param) for param in ("queueName", "backgroundQueueName")}
    queues: dict[str, dict[str, Any]] = {}
    for _, _, queue in resources_of("Microsoft.ServiceBus/namespaces/queues"):
        properties = queue["properties"]
        queues[names[queue["name"]]] = variables[properties] if isinstance(properties, str) else properties
    return queues


def test_queue_and_topic_match_the_local_stack() -> None:
    """devstack/entities.json, as the broker reads it (defaults applied), turns on what the Bicep
    turns on, with Service Bus's defaults standing in for what either leaves out: both queues (the
    onboarding queue first, then the background queue, as devstack/stack.py reads them) and the topic."""
    from devstack.servicebus.config import QueueConfig, SubscriptionConfig, load_entities

    local_queues, (topic,) = load_entities(ROOT / "devstack" / "entities.json")
    main_vars = {name: var["value"] for name, var in tree("main.bicep")["variables"].items()}
    assert [queue.name for queue in local_queues] == [main_vars["onboardingQueueName"],
                                                       main_vars["backgroundQueueName"]] == ["onboarding", "background"]
    assert topic.name == main_vars["eventsTopicName"]

    queues_bicep = bicep_queues()
    assert set(queues_bicep) == {"onboardingQueueName", "backgroundQueueName"}
    # The background queue is the onboarding queue's twin: only what it carries differs.
    assert queues_bicep["backgroundQueueName"] == queues_bicep["onboardingQueueName"]
    topic_bicep = the_one("Microsoft.ServiceBus/namespaces/topics")["properties"]
    subscription = the_one("Microsoft.ServiceBus/namespaces/topics/subscriptions")
    assert subscription["parent"] == "topic"
    subscription_bicep = subscription["properties"]
    for properties in (*queues_bicep.values(), topic_bicep, subscription_bicep):
        unknown = set(properties) - set(SERVICE_BUS_DEFAULTS) - NOT_MODELLED_BY_THE_STAND_IN
        assert not unknown, f"compare {sorted(unknown)} with devstack/entities.json"
        assert _entity_setting(properties, "enablePartitioning") is False  # the stand-in is not partitioned

    assert _duplicate_detection_window(topic_bicep) == topic.duplicate_detection_window_seconds
    assert topic.duplicate_detection_window_seconds is not None  # the product relies on it
    (local_subscription,) = topic.subscriptions
    pairs = [(queues_bicep[main_name], local) for main_name, local in
             zip(("onboardingQueueName", "backgroundQueueName"), local_queues, strict=True)]
    for queue_bicep, queue in pairs:
        assert _duplicate_detection_window(queue_bicep) == queue.duplicate_detection_window_seconds
        assert queue.duplicate_detection_window_seconds is not None  # the product relies on it
        assert queue_bicep["deadLetteringOnMessageExpiration"] is True
        assert queue_bicep["defaultMessageTimeToLive"] == "P14D"
    receivers: list[tuple[dict[str, Any], QueueConfig | SubscriptionConfig]] = [
        *pairs, (subscription_bicep, local_subscription)]
    for properties, local in receivers:
        assert iso_seconds(_entity_setting(properties, "lockDuration")) == local.lock_duration_seconds
        assert _entity_setting(properties, "maxDeliveryCount") == local.max_delivery_count
        assert _entity_setting(properties, "requiresSession") is False  # the stand-in has no sessions


# --- network isolation ----------------------------------------------------------------------------

# Where a resource's public network switch lives: the property, and the value that means "off".
PUBLIC_SWITCHES = {
    "Microsoft.Storage/storageAccounts": {"publicNetworkAccess": "Disabled", "networkAcls.defaultAction": "Deny"},
    "Microsoft.KeyVault/vaults": {"publicNetworkAccess": "Disabled", "networkAcls.defaultAction": "Deny"},
    "Microsoft.ServiceBus/namespaces": {"publicNetworkAccess": "Disabled"},
    "Microsoft.ServiceBus/namespaces/networkRuleSets": {"publicNetworkAccess": "Disabled", "defaultAction": "Deny"},
    "Microsoft.Web/sites": {"publicNetworkAccess": "Disabled"},
}
# Resources with a public switch that stays on, and why. Telemetry ingestion and queries go to
# Azure Monitor's public endpoints, authenticated with Entra ID (local auth is off on both); closing
# them takes an Azure Monitor Private Link Scope, which changes DNS for every Azure Monitor
# resource the network reaches (infra/README.md, "Network isolation").
PUBLIC_BY_DESIGN = {"Microsoft.Insights/components", "Microsoft.OperationalInsights/workspaces"}


def switch_values(module: str, resource: dict[str, Any], symbols: Mapping[str, Any]) -> dict[str, Any]:
    """The switch values a resource gets when main.bicep calls `module` with `symbols`."""
    path = INFRA / module_file(module)
    declared = parsed(path)["parameters"]
    passed = body(tree("main.bicep")["modules"][module])["params"]
    module_symbols: dict[str, Any] = {}
    for name, param in declared.items():
        try:
            module_symbols[name] = evaluate(passed[name], symbols) if name in passed else param["default"]
        except Unevaluable:
            continue  # a runtime value (another module's output): no switch depends on one
    values = {}
    for switch in PUBLIC_SWITCHES[resource["type"]]:
        node: Any = body(resource)["properties"]
        for part in switch.split("."):
            node = node[part]
        values[switch] = evaluate(node, module_symbols)
    return values


def resources_behind_modules() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for module in tree("main.bicep")["modules"]:
        for symbol, resource in parsed(INFRA / module_file(module)).get("resources", {}).items():
            if not resource["existing"]:
                yield module, symbol, resource


def test_every_public_network_switch_is_off_when_vnet_enabled() -> None:
    switched = set()
    for module, symbol, resource in resources_behind_modules():
        config = body(resource)
        has_switch = any("publicNetworkAccess" in key for key in config.get("properties", {}))
        if resource["type"] in PUBLIC_BY_DESIGN:
            continue
        if resource["type"] not in PUBLIC_SWITCHES:
            assert not has_switch, f"{module}:{symbol} has a public switch this test does not know"
            continue
        expected = PUBLIC_SWITCHES[resource["type"]]
        if resource["type"] == "Microsoft.Web/sites":
            # The HTTP API stays reachable (Entra ID + function keys) unless its own private
            # endpoint is asked for.
            private = switch_values(module, resource, main_symbols(vnetEnabled=True, apiPrivateEndpointEnabled=True))
            assert private == expected, f"{module}:{symbol} stays public behind its private endpoint"
            public = switch_values(module, resource, main_symbols(vnetEnabled=True, apiPrivateEndpointEnabled=False))
            assert public == {"publicNetworkAccess": "Enabled"}
        else:
            values = switch_values(module, resource, main_symbols(vnetEnabled=True))
            assert values == expected, f"{module}:{symbol} keeps a public endpoint with vnetEnabled: {values}"
            opened = switch_values(module, resource, main_symbols(vnetEnabled=False))
            assert opened["publicNetworkAccess"] == "Enabled", f"{module}:{symbol} unreachable without the VNet"
        switched.add((module, resource["type"]))
    assert switched == {
        ("storage", "Microsoft.Storage/storageAccounts"),
        ("keyVault", "Microsoft.KeyVault/vaults"),
        ("configKeyVault", "Microsoft.KeyVault/vaults"),
        ("serviceBus", "Microsoft.ServiceBus/namespaces"),
        ("serviceBus", "Microsoft.ServiceBus/namespaces/networkRuleSets"),
        ("api", "Microsoft.Web/sites"),
    }


def test_modules_are_private_by_default() -> None:
    """Called without the switch, a data module is private (and checkov, which scans each file with
    its defaults, sees the private form)."""
    for relative in ("app/storage.bicep", "app/keyvault.bicep", "app/servicebus.bicep"):
        params = tree(relative)["parameters"]
        assert params["publicAccess"]["default"] == "Disabled", relative
        if "networkDefaultAction" in params:
            assert params["networkDefaultAction"]["default"] == "Deny", relative


def test_private_endpoints_cover_every_service_the_app_and_runtime_use() -> None:
    main = tree("main.bicep")
    endpoints = {
        symbol: body(module)["params"]
        for symbol, module in main["modules"].items()
        if module["detail"]["path"] == "app/private-endpoint.bicep"
    }
    targets = {(accessor_chain(p["targetResourceId"])[0], p["groupId"]) for p in endpoints.values()}
    assert targets == {("storage", "blob"), ("storage", "table"), ("keyVault", "vault"), ("configKeyVault", "vault"),
                       ("serviceBus", "namespace"), ("api", "sites")}
    for symbol, module in main["modules"].items():
        if symbol in endpoints:
            condition = module["config"]["condition"]
            on = evaluate(condition, main_symbols(vnetEnabled=True, apiPrivateEndpointEnabled=True))
            off = evaluate(condition, main_symbols(vnetEnabled=False, apiPrivateEndpointEnabled=True))
            assert on is True and off is False, f"{symbol} is not tied to vnetEnabled"
            assert endpoints[symbol]["subnetId"] == {
                "operator": {"type": "property_accessor", "operands": {"operand_1": "network", "operand_2": {
                    "operator": {"type": "property_accessor",
                                 "operands": {"operand_1": "outputs", "operand_2": "privateEndpointSubnetId"}}}}}}
            assert endpoints[symbol]["dnsZoneName"] in main["variables"], symbol
    # the app integrates with the app subnet, delegated as Flex Consumption requires
    assert evaluate(module_param("api", "virtualNetworkSubnetId"), {"vnetEnabled": False}) == ""
    subnets = the_one("Microsoft.Network/virtualNetworks")["properties"]["subnets"]
    delegations = [s["properties"].get("delegations", []) for s in subnets]
    assert [d[0]["properties"]["serviceName"] for d in delegations if d] == ["Microsoft.App/environments"]
    assert all("networkSecurityGroup" in s["properties"] for s in subnets)


# --- the Function App -----------------------------------------------------------------------------


def test_function_app_is_flex_python_311_with_identity_deployment_storage() -> None:
    plan = the_one("Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = the_one("Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    assert properties["keyVaultReferenceIdentity"] == "identityId"
    config = properties["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == "instanceMemoryMB"
    assert tree("app/api.bicep")["parameters"]["instanceMemoryMB"]["default"] == 2048
    deployment = config["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_settings_parity_in_both_directions() -> None:
    """The Function App sets exactly what the code reads, plus the platform's own settings."""
    read = settings_the_code_reads()
    assert {"PALETTE_ENDPOINT", "PALETTE_API_KEY", "KEY_VAULT_URL", "ROTATION_SCHEDULE"} <= read, "settings.py moved?"
    assert "ONBOARDING_QUEUE" in read and "ServiceBusConnection__fullyQualifiedNamespace" in read, "functions/ moved?"
    settings = set(app_settings())
    missing = read - OPTIONAL_SETTINGS - settings
    assert not missing, f"the code reads {sorted(missing)}, which the Function App does not set"
    unread = settings - read - PLATFORM_SETTINGS
    assert not unread, f"the Function App sets {sorted(unread)}, which nothing reads"
    assert not CONNECTION_STRING_SETTINGS & settings, "a connection string setting is set"
    assert not FLEX_UNSUPPORTED_SETTINGS & settings, "a setting Flex Consumption does not support is set"


def documented_settings() -> tuple[set[str], set[str]]:
    """infra/README.md, "App settings": the names in the first column of its table (`__credential`
    after `AzureWebJobsStorage__accountName` stands for `AzureWebJobsStorage__credential`), and the
    names of its paragraph on what the code reads and Azure leaves unset."""
    section = (INFRA / "README.md").read_text().split("\n## App settings\n", 1)[1].split("\n## ", 1)[0]
    table: set[str] = set()
    for row in re.findall(r"^\| (`.+?) \| .+ \|$", section, re.MULTILINE):  # rows naming settings
        prefix = ""
        for name in re.findall(r"`([A-Za-z0-9_]+)`", row):
            if name.startswith("__"):
                table.add(prefix + name)
            else:
                table.add(name)
                prefix = name.split("__", 1)[0]
    [unset_paragraph] = [p for p in section.split("\n\n") if p.startswith("Read by the code and left unset in Azure:")]
    unset = set(re.findall(r"`([A-Za-z][A-Za-z0-9_]*)`", unset_paragraph))
    return table, unset


def test_the_app_settings_table_is_what_the_bicep_sets_and_the_code_reads() -> None:
    """The table an operator reads names every setting the Function App gets and nothing else, and
    with the paragraph after it, every setting the code reads."""
    table, unset = documented_settings()
    deployed = set(app_settings())
    assert not deployed - table, f"infra/README.md's settings table lacks {sorted(deployed - table)}"
    assert not table - deployed, f"infra/README.md's settings table names {sorted(table - deployed)}, which " \
        "app/api.bicep does not set"
    read = settings_the_code_reads()
    assert unset == read - deployed, (
        f"infra/README.md says the code reads {sorted(unset)} unset in Azure; it is {sorted(read - deployed)}")
    assert read <= table | unset


def test_the_scan_sees_the_settings_and_bindings() -> None:
    """The automatic half of the parity test finds what is there today."""
    scanned = settings_read_by_settings_py()
    assert {"VALIDATION_BUDGET_SECONDS", "RETRY_DELAYS_SECONDS", "PALETTE_REQUIRE_PCG_FOR_US_GOVERNMENT",
            "GRAPH_SCOPE", "AZURE_AUTHORITY_HOST", "AzureWebJobsStorage__tableServiceUri"} <= scanned
    expressions, connections = binding_settings()
    assert {"ONBOARDING_QUEUE", "BACKGROUND_QUEUE"} <= expressions and connections == {"ServiceBusConnection"}


def test_connections_are_identity_based() -> None:
    settings = app_settings()
    _, connections = binding_settings()
    for prefix in {"AzureWebJobsStorage", *connections}:
        assert settings[f"{prefix}__credential"] == "managedidentity"
        assert settings[f"{prefix}__clientId"] == "identityClientId"
    assert settings["AzureWebJobsStorage__accountName"]
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    for name, value in settings.items():
        text = json.dumps(value)
        assert "AccountKey" not in text and "SharedAccessKey" not in text, name


def test_palette_api_key_is_a_reference_to_the_config_vault_not_the_managed_one() -> None:
    settings = app_settings()
    reference = settings["PALETTE_API_KEY"]
    assert reference == "@Microsoft.KeyVault(VaultName=${configKeyVault.name};SecretName=${paletteApiKeySecretName})"
    assert accessor_chain(settings["KEY_VAULT_URL"]) == ["keyVault", "properties", "vaultUri"]
    api = tree("app/api.bicep")["resources"]
    assert body(api["configKeyVault"])["name"] == "configKeyVaultName"
    assert body(api["keyVault"])["name"] == "keyVaultName"
    # ... and main.bicep hands the config vault's name to the one, the managed vault's to the other.
    assert accessor_chain(module_param("api", "configKeyVaultName")) == ["configKeyVault", "outputs", "name"]
    assert accessor_chain(module_param("api", "keyVaultName")) == ["keyVault", "outputs", "name"]
    # The identity holds only Secrets User on the config vault (see the role test).
    assert ("Key Vault Secrets Officer", "configKeyVault", "app") not in EXPECTED_GRANTS


def test_app_service_authentication_guards_the_api_routes() -> None:
    auth = tree("app/api.bicep")["resources"]["authentication"]
    assert auth["type"] == "Microsoft.Web/sites/config" and body(auth)["name"] == "authsettingsV2"
    properties = body(auth)["properties"]
    assert properties["platform"]["enabled"] is True
    validation = properties["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    paths = tree("app/api.bicep")["variables"][validation["excludedPaths"]]["value"]
    assert paths == ["/api/health", "/api/openapi.json", "/runtime/webhooks/eventgrid"]
    assert app_settings()["REQUIRE_CLIENT_PRINCIPAL"] == "true"
    # Without an API client id there is no identity provider: closed, not open.
    providers = properties["identityProviders"]["operator"]["operands"]
    assert providers["true_value"] == {} and providers["false_value"] == "entraIdProvider"
    assert tree("main.bicep")["parameters"]["apiClientId"]["default"] == ""


def test_every_trigger_is_wired() -> None:
    settings = app_settings()
    assert settings["ROTATION_SCHEDULE"] == "rotationSchedule"
    assert settings["SWEEP_SCHEDULE"] == "sweepSchedule"
    # Each queue setting names the queue servicebus.bicep creates (and rbac.bicep grants on).
    assert settings["ONBOARDING_QUEUE"] == "onboardingQueueName"
    assert settings["BACKGROUND_QUEUE"] == "backgroundQueueName"
    assert accessor_chain(module_param("api", "onboardingQueueName")) == ["serviceBus", "outputs", "queueName"]
    assert accessor_chain(module_param("api", "backgroundQueueName")) == [
        "serviceBus", "outputs", "backgroundQueueName"]
    # Every queue a Service Bus trigger reads is one of those two, or its dead-letter queue: the
    # Receiver grants on both queues cover them all.
    service_bus_queues = {trigger["queueName"] for trigger in trigger_bindings()
                          if trigger["type"] == "serviceBusTrigger"}
    assert service_bus_queues == {"%ONBOARDING_QUEUE%", "%ONBOARDING_QUEUE%/$DeadLetterQueue",
                                  "%BACKGROUND_QUEUE%", "%BACKGROUND_QUEUE%/$DeadLetterQueue"}
    # The near-expiry subscription: the managed vault's events, one type, the product's secrets.
    topic = the_one("Microsoft.EventGrid/systemTopics")
    assert topic["properties"] == {"source": {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "keyVault", "operand_2": "id"}}}, "topicType": "Microsoft.KeyVault.vaults"}
    assert accessor_chain(module_param("events", "keyVaultName")) == ["keyVault", "outputs", "name"]
    subscription = the_one("Microsoft.EventGrid/systemTopics/eventSubscriptions")["properties"]
    assert subscription["destination"]["endpointType"] == "AzureFunction"
    assert subscription["filter"]["includedEventTypes"] == ["Microsoft.KeyVault.SecretNearExpiry"]
    assert subscription["filter"]["advancedFilters"] == [
        {"operatorType": "StringBeginsWith", "key": "subject", "values": "secretNamePrefixes"}]
    function_name = tree("app/rotation-events.bicep")["parameters"]["functionName"]["default"]
    assert function_name == "rotation_near_expiry"
    assert f"function_name={function_name}\n" in (ROOT / "scripts" / "rotation-events.sh").read_text()
    prefixes = main_symbols()
    assert evaluate(tree("main.bicep")["modules"]["rotationEvents"]["config"]["condition"],
                    main_symbols(rotationEventsEnabled=True)) is True
    assert evaluate(tree("main.bicep")["modules"]["rotationEvents"]["config"]["condition"], prefixes) is False
    # If the function is indexed already, it is an Event Grid trigger.
    bindings = indexed_bindings().get(function_name)
    if bindings is not None:
        assert bindings[0]["type"] == "eventGridTrigger"


def test_capacity_parameters() -> None:
    """The figures infra/README.md derives ("Capacity") are the ones deployed."""
    readme = (INFRA / "README.md").read_text()
    host = json.loads((ROOT / "host.json").read_text())
    api = tree("app/api.bicep")["parameters"]
    main = tree("main.bicep")["parameters"]
    assert api["maximumInstanceCount"]["default"] == main["maximumInstanceCount"]["default"] == 40
    assert api["httpPerInstanceConcurrency"]["default"] == main["httpPerInstanceConcurrency"]["default"] == 16
    concurrent_calls = host["extensions"]["serviceBus"]["maxConcurrentCalls"]
    assert f"| `maxConcurrentCalls` (host.json) | {concurrent_calls} |" in readme
    assert "| `maximumInstanceCount` | 40 |" in readme
    assert "| `perInstanceConcurrency` (HTTP) | 16 |" in readme
    # The worker's thread pool holds what one instance can run at once: every queue trigger at
    # maxConcurrentCalls, the HTTP requests and the timers.
    threads = int(app_settings()["PYTHON_THREADPOOL_THREAD_COUNT"])
    assert f"| `PYTHON_THREADPOOL_THREAD_COUNT` | {threads} |" in readme
    triggers = [trigger["type"] for trigger in trigger_bindings()]
    in_flight = (triggers.count("serviceBusTrigger") * concurrent_calls + api["httpPerInstanceConcurrency"]["default"]
                 + triggers.count("timerTrigger"))
    assert in_flight <= threads, f"{in_flight} calls can run at once on one instance, with {threads} threads"
    # The local stack runs with the same pool.
    template = json.loads((ROOT / "local.settings.json.template").read_text())["Values"]
    assert template["PYTHON_THREADPOOL_THREAD_COUNT"] == str(threads)
    assert f'"PYTHON_THREADPOOL_THREAD_COUNT": "{threads}",' in (ROOT / "devstack" / "stack.py").read_text()


def test_observability_queries_and_alerts() -> None:
    monitoring = tree("app/monitoring.bicep")
    queries = monitoring["variables"]["queries"]["value"]
    assert [q["name"] for q in queries] == [
        "failed-onboardings-by-reason", "rotations-due-in-30-days", "drift", "dead-lettered-messages"]
    saved = monitoring["resources"]["savedQueries"]
    assert saved["config"]["loop_type"]["detail"]["array_name"] == "queries"
    the_one("Microsoft.Insights/workbooks")
    alerts = {body(r)["name"]: body(r)["properties"] for _, _, r in
              [(p, s, r) for p in BICEP_FILES for s, r in parsed(p).get("resources", {}).items()
               if r["type"] == "Microsoft.Insights/scheduledQueryRules"]}
    assert set(alerts) == {"dead-lettered-messages", "rotation-failed"}
    for properties in alerts.values():
        criterion = properties["criteria"]["allOf"][0]
        assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    variables = monitoring["variables"]
    assert "palette.onboarding.rotation.failed" in variables["rotationFailedAlertQuery"]["value"]
    assert "DeadletteredMessages" in variables["deadLetterAlertQuery"]["value"]
    # Both dead-letter triggers log the same line; the saved query names the one that did.
    [dead_letters] = [q["query"] for q in queries if q["name"] == "dead-lettered-messages"]
    assert "Source = OperationName" in dead_letters and "onboarding queue" not in dead_letters
