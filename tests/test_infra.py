"""The Bicep in infra/ parses and describes what the app needs, and no more.

No Bicep compiler can run here, so these checks read the parse tree (pycep-parser): every file
parses; the modules main.bicep calls exist and get the parameters they declare; only the allowed
data roles are granted, each on the narrowest scope; nothing uses keys or local auth; and the
Function App sets every app setting the app reads (shared/settings.py and the binding expressions
in functions/*.py), identity-based. Pure file reading: no stack, well under a second.
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
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"

# The only roles the deployment may grant (built-in role definition ids, the same in every tenant).
ALLOWED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

# Every (role, scope resource type) pair granted, exactly: Service Bus roles on the queue and the
# topic, never on the namespace.
EXPECTED_GRANTS = {
    ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
    ("Azure Service Bus Data Receiver", "Microsoft.ServiceBus/namespaces/queues"),
    ("Azure Service Bus Data Sender", "Microsoft.ServiceBus/namespaces/queues"),
    ("Azure Service Bus Data Sender", "Microsoft.ServiceBus/namespaces/topics"),
    ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}

# Settings the app reads that must NOT be set in Azure (connection strings: identity only) or that
# are derived when absent (GRAPH_SCOPE from GRAPH_ENDPOINT; the authority for sovereign clouds).
CONNECTION_STRING_SETTINGS = {"ServiceBusConnection", "AzureWebJobsStorage"}
DERIVED_SETTINGS = {"GRAPH_SCOPE", "AZURE_AUTHORITY_HOST"}
# Settings Flex Consumption rejects or ignores: the plan's functionAppConfig owns these.
FLEX_UNSUPPORTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_NODE_DEFAULT_VERSION",
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


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's declaration body, looking through a `[for ...]` loop or an `if` condition."""
    config: dict[str, Any] = resource["config"]
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


def app_settings() -> dict[str, Any]:
    site = the_one("Microsoft.Web/sites")
    entries = site["properties"]["siteConfig"]["appSettings"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {entry["name"]: entry["value"] for entry in entries}


def settings_read_by_the_app() -> set[str]:
    """Every literal name `Settings.from_mapping` itself reads: env.get("X") and required("X").

    Helpers it calls (optional tuning overrides with documented defaults) are not followed.
    """
    module = ast.parse((ROOT / "shared" / "settings.py").read_text())
    from_mapping = next(
        node
        for cls in module.body
        if isinstance(cls, ast.ClassDef) and cls.name == "Settings"
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name == "from_mapping"
    )
    names: set[str] = set()
    for node in ast.walk(from_mapping):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        func = node.func
        is_env_get = isinstance(func, ast.Attribute) and func.attr == "get" and getattr(func.value, "id", "") == "env"
        is_required = isinstance(func, ast.Name) and func.id == "required"
        if (is_env_get or is_required) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value)
    return names


def binding_settings() -> tuple[set[str], set[str]]:
    """`%SETTING%` binding expressions and `connection="..."` names used by the triggers."""
    text = "\n".join(path.read_text() for path in sorted((ROOT / "functions").glob("*.py")))
    return set(re.findall(r"%([A-Za-z0-9_]+)%", text)), set(re.findall(r"connection\s*=\s*\"([A-Za-z0-9_]+)\"", text))


# --- every file parses, and the modules fit together -------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_parses(path: Path) -> None:
    result = parsed(path)
    assert result.get("resources") or result.get("modules"), f"{path.name} declares nothing"


def test_the_expected_files_exist() -> None:
    names = {str(p.relative_to(INFRA)) for p in BICEP_FILES}
    assert {"main.bicep", "app/rbac.bicep", "app/api.bicep"} <= names
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
        passed = set(module["config"]["params"])
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


def test_api_versions_are_explicit_and_stable() -> None:
    for path in BICEP_FILES:
        text = path.read_text()
        assert "br/public:" not in text and "br:" not in text, f"{path.name} uses a registry module"
        for symbol, resource in parsed(path).get("resources", {}).items():
            version = resource["api_version"]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", version or ""), f"{path.name}:{symbol} uses API {version}"


def test_outputs_azd_reads() -> None:
    outputs = tree("main.bicep")["outputs"]
    for name in ("AZURE_FUNCTION_NAME", "KEY_VAULT_URL", "SERVICE_BUS_NAMESPACE", "AZURE_RESOURCE_GROUP",
                 "MANAGED_IDENTITY_PRINCIPAL_ID"):
        assert name in outputs


def test_parameters_come_from_azd_environment_variables() -> None:
    main_params = tree("main.bicep")["parameters"]
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, entry in mapped.items():
        assert name in main_params, f"main.parameters.json maps unknown parameter {name}"
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", entry["value"]), f"{name} is not fed from the azd environment"
    required = {name for name, param in main_params.items() if param["default"] is None}
    assert required <= set(mapped), f"azd would prompt for {required - set(mapped)}"
    defaults = {name: param["default"] for name, param in main_params.items()}
    assert defaults["paletteEndpoint"] == "https://api.spectrocloud.com"
    assert defaults["rotationSchedule"] == "0 0 3 * * *"
    assert defaults["rotationThresholdDays"] == 30
    assert defaults["principalId"] == ""


def test_azure_yaml_has_one_python_function_service() -> None:
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


# --- least privilege ------------------------------------------------------------------------------


def test_only_allowed_role_ids_appear_anywhere() -> None:
    for path in BICEP_FILES:
        for guid in GUID.findall(path.read_text()):
            assert guid.lower() in ALLOWED_ROLES, f"{path.name}: {guid} is not an allowed role"


def test_role_assignments_live_in_rbac_bicep_only() -> None:
    places = {path.relative_to(INFRA).as_posix() for path, _, _ in resources_of(ROLE_ASSIGNMENT)}
    assert places == {"app/rbac.bicep"}


def test_each_role_is_granted_on_the_narrowest_scope_with_a_stable_name() -> None:
    rbac = tree("app/rbac.bicep")
    variables = {name: var["value"] for name, var in rbac["variables"].items()}
    scopes = {symbol: resource["type"] for symbol, resource in rbac["resources"].items() if resource["existing"]}
    grants = set()
    for symbol, resource in rbac["resources"].items():
        if resource["type"] != ROLE_ASSIGNMENT:
            continue
        config = body(resource)
        role_function = config["properties"]["roleDefinitionId"]["function"]
        assert role_function["type"] == "subscription_resource_id", symbol
        role_variable = role_function["parameters"]["resource_name_1"]
        role_id = variables[role_variable]
        assert role_id in ALLOWED_ROLES, f"{symbol} grants {role_id}"
        scope = config["scope"]
        assert scope in scopes, f"{symbol} is scoped to {scope}, not a resource"
        grants.add((ALLOWED_ROLES[role_id], scopes[scope]))
        name = config["name"]["function"]
        assert name["type"] == "guid", symbol
        args = name["parameters"]
        assert accessor_chain(args["base_string"]) == [scope, "id"], f"{symbol}: name not guid(scope.id, ...)"
        assert accessor_chain(args["extra_string_1"])[-1:] == ["id"], f"{symbol}: principal missing from the name"
        assert args["extra_string_2"] == role_variable, f"{symbol}: role missing from the name"
        assert accessor_chain(config["properties"]["principalId"]) == accessor_chain(args["extra_string_1"])
    assert grants == EXPECTED_GRANTS


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


def test_service_bus_is_identity_only_standard() -> None:
    namespace = the_one("Microsoft.ServiceBus/namespaces")
    assert namespace["sku"]["name"] == "Standard"
    assert namespace["properties"]["disableLocalAuth"] is True
    assert namespace["properties"]["minimumTlsVersion"] == "1.2"


def test_app_insights_and_log_analytics_disable_local_auth() -> None:
    insights = {k.lower(): v for k, v in the_one("Microsoft.Insights/components")["properties"].items()}
    assert insights["disablelocalauth"] is True
    workspace = the_one("Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_key_vault_uses_rbac_with_purge_protection() -> None:
    vault = the_one("Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert "accessPolicies" not in vault


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


def test_queue_and_topic_match_the_local_stack() -> None:
    """devstack/entities.json, as the broker reads it (defaults applied), turns on what the Bicep
    turns on, with Service Bus's defaults standing in for what either leaves out."""
    from devstack.servicebus.config import load_entities

    (queue,), (topic,) = load_entities(ROOT / "devstack" / "entities.json")
    main_vars = {name: var["value"] for name, var in tree("main.bicep")["variables"].items()}
    assert queue.name == main_vars["onboardingQueueName"]
    assert topic.name == main_vars["eventsTopicName"]

    queue_bicep = the_one("Microsoft.ServiceBus/namespaces/queues")["properties"]
    topic_bicep = the_one("Microsoft.ServiceBus/namespaces/topics")["properties"]
    subscription = the_one("Microsoft.ServiceBus/namespaces/topics/subscriptions")
    assert subscription["parent"] == "topic"
    subscription_bicep = subscription["properties"]
    for properties in (queue_bicep, topic_bicep, subscription_bicep):
        unknown = set(properties) - set(SERVICE_BUS_DEFAULTS) - NOT_MODELLED_BY_THE_STAND_IN
        assert not unknown, f"compare {sorted(unknown)} with devstack/entities.json"
        assert _entity_setting(properties, "enablePartitioning") is False  # the stand-in is not partitioned

    assert _duplicate_detection_window(queue_bicep) == queue.duplicate_detection_window_seconds
    assert _duplicate_detection_window(topic_bicep) == topic.duplicate_detection_window_seconds
    assert queue.duplicate_detection_window_seconds is not None  # the product relies on both
    assert topic.duplicate_detection_window_seconds is not None
    (local_subscription,) = topic.subscriptions
    for properties, local in ((queue_bicep, queue), (subscription_bicep, local_subscription)):
        assert iso_seconds(_entity_setting(properties, "lockDuration")) == local.lock_duration_seconds
        assert _entity_setting(properties, "maxDeliveryCount") == local.max_delivery_count
        assert _entity_setting(properties, "requiresSession") is False  # the stand-in has no sessions
    assert queue_bicep["deadLetteringOnMessageExpiration"] is True


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


def test_every_setting_the_app_reads_is_set() -> None:
    settings = app_settings()
    read = settings_read_by_the_app()
    assert {"PALETTE_ENDPOINT", "PALETTE_API_KEY", "KEY_VAULT_URL", "ONBOARDING_QUEUE"} <= read, "settings.py moved?"
    expected = read - CONNECTION_STRING_SETTINGS - DERIVED_SETTINGS
    expressions, connections = binding_settings()
    assert "ONBOARDING_QUEUE" in expressions and "ServiceBusConnection" in connections, "functions/ moved?"
    expected |= expressions
    for connection in connections:
        expected |= {f"{connection}__fullyQualifiedNamespace", f"{connection}__credential", f"{connection}__clientId"}
    missing = expected - set(settings)
    assert not missing, f"the Function App does not set {sorted(missing)}"


def test_connections_are_identity_based() -> None:
    settings = app_settings()
    assert not CONNECTION_STRING_SETTINGS & set(settings), "a connection string setting is set"
    assert not FLEX_UNSUPPORTED_SETTINGS & set(settings), "a setting Flex Consumption does not support is set"
    _, connections = binding_settings()
    for prefix in {"AzureWebJobsStorage", *connections}:
        assert settings[f"{prefix}__credential"] == "managedidentity"
        assert settings[f"{prefix}__clientId"] == "identityClientId"
    assert settings["AzureWebJobsStorage__accountName"]
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["PALETTE_API_KEY"].startswith("@Microsoft.KeyVault(VaultName=")
    assert "SecretName=${paletteApiKeySecretName}" in settings["PALETTE_API_KEY"]
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    for name, value in settings.items():
        text = json.dumps(value)
        assert "AccountKey" not in text and "SharedAccessKey" not in text, name
