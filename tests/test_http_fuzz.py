"""Fuzzing every route from the OpenAPI document (schemathesis): no 5xx, answers that conform, no
secret echoed, nothing half-written.

schemathesis draws requests from the document's own schemas (paths, queries, bodies: the request
schema of ``POST /onboardings`` included, so many bodies are valid and reach Key Vault, the state
table and the queue). Each answer is held to the document: not a server error, a documented status,
content type, headers and body. Only the HTTP routes are hosted (no queue trigger), so what the
intake accepted stays where it put it and can be checked afterwards.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.runner import LocalHost
from devstack.stack import Stack
from tests.api_contract import DOCUMENT_PATH, document
from tests.onboarding.conftest import World, deps, world
from tests.test_http_api import hosted_app

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding

SCHEMA = schemathesis.openapi.from_path(DOCUMENT_PATH)
OPERATIONS = [(path, method) for path, item in document()["paths"].items()
              for method in item if method in {"get", "post", "put", "patch", "delete"}]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
#: Examples per operation: enough to reach each branch the schemas allow, few enough for CI.
EXAMPLES = {("/onboardings", "post"): 60, ("/onboardings/validate", "post"): 25, ("/health", "get"): 3}
DEFAULT_EXAMPLES = 30


@pytest.fixture(scope="module")
def http_only(stack: Stack) -> Iterator[LocalHost]:
    from tests.test_function_app import _bindings

    routes = [name for name, binding in _bindings().items() if binding["type"] == "httpTrigger"]
    with hosted_app(stack, only=routes) as local:
        yield local


def _inline_secret(body: Any) -> str | None:
    azure = body.get("azure") if isinstance(body, dict) else None
    secret = azure.get("secret") if isinstance(azure, dict) else None
    if isinstance(secret, dict) and secret.get("source") == "inline" and isinstance(secret.get("value"), str):
        return str(secret["value"])
    return None


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_fuzzed_calls_conform_and_leak_nothing(http_only: LocalHost, world: World, path: str, method: str) -> None:
    stack = world.stack
    ca = stack.settings["REQUESTS_CA_BUNDLE"]
    ours = [stack.settings["PALETTE_API_KEY"], stack.settings["IDENTITY_HEADER"], http_only.function_key,
            stack.settings["ServiceBusConnection"].split("SharedAccessKey=")[-1].split(";")[0]]
    accepted: list[str] = []
    inline_values: list[str] = []
    checks = list(CHECKS)

    @settings(max_examples=EXAMPLES.get((path, method), DEFAULT_EXAMPLES), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=SCHEMA[path][method].as_strategy())
    def call(case: Any) -> None:
        if _inline_secret(case.body) is not None:
            # A value distinctive enough to search for (a drawn one may be "0").
            case.body["azure"]["secret"]["value"] = f"fuzz-canary-{uuid.uuid4().hex}"
        response = case.call(base_url=http_only.http_url, headers={"x-functions-key": http_only.function_key},
                             verify=ca, timeout=60)
        case.validate_response(response, checks=checks)
        assert response.status_code < 500, response.text
        for secret in [*ours, _inline_secret(case.body)]:
            if secret:
                assert secret not in response.text, f"{method.upper()} {path} echoed a secret"
        if (path, method) == ("/onboardings", "post") and response.status_code == 202:
            accepted.append(response.json()["id"])
            if (value := _inline_secret(case.body)) is not None:
                inline_values.append(value)

    call()
    if (path, method) == ("/onboardings", "post"):
        assert accepted, "the fuzzer never produced an acceptable request"
        _nothing_half_written(world, set(accepted), inline_values)


def _nothing_half_written(world: World, accepted: set[str], inline_values: list[str]) -> None:
    """Every accepted request has its queued row and its message; nothing else was recorded; each
    Key Vault version written belongs to an accepted request's row; no inline value is at rest
    outside Key Vault."""
    from azure.servicebus import ServiceBusClient

    rows = [row for row in world.state_rows() if row["RowKey"] == "onboarding"]
    assert {row["PartitionKey"] for row in rows} == accepted
    assert {row["Status"] for row in rows} == {"queued"}
    settings = world.stack.settings
    with ServiceBusClient.from_connection_string(settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(settings["ONBOARDING_QUEUE"]) as receiver:
        queued = {str(m.message_id) for m in receiver.peek_messages(max_message_count=len(accepted) + 10)}
    assert queued == accepted
    stored = {row["PartitionKey"]: json.loads(row["Results"]).get("_inlineSecretVersion") for row in rows}
    for secret in world.keyvault_state()["secrets"]:
        if secret["name"] == "wrong-secret-demo":  # seeded for examples/03
            continue
        for version in secret["versions"]:
            request_id = version["tags"]["request-id"]
            assert stored.get(request_id) == version["version"], (secret["name"], request_id)
    at_rest = json.dumps([{k: zlib.decompress(v).decode() if isinstance(v, bytes) else v for k, v in row.items()}
                          for row in rows], default=str)
    for value in inline_values:
        assert value not in at_rest
