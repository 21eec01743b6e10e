"""The OpenAPI document describes exactly the routes the app has, and agrees with the request model.

The document (``functions/openapi.json``) is kept by hand; these checks make drift fail a test: a
route the app has and the document lacks, or the reverse, a document that is not valid OpenAPI
3.1, a request field one side knows and the other does not. That each response conforms is checked
wherever a test makes a call (``tests/api_contract.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

import function_app
from shared.models import OnboardingRequest
from tests.api_contract import document

ROOT = Path(__file__).resolve().parent.parent
SECURED = ({"functionKeyHeader": []}, {"functionKeyQuery": []})


def _shape(path: str) -> str:
    """A route with its parameter names blanked: ``onboardings/{}``. OpenAPI allows one templated
    name per shape, the host a name per function, so the shapes are what must agree."""
    return re.sub(r"\{[^}]+\}", "{}", "/" + path.strip("/"))


def _app_routes() -> dict[tuple[str, str], str]:
    function_app.app.functions_bindings = None  # index afresh, as test_function_app does
    routes = {}
    for fn in function_app.app.get_functions():
        binding = fn.get_trigger().get_dict_repr()
        if binding["type"] != "httpTrigger":
            continue
        level = str(getattr(binding["authLevel"], "value", binding["authLevel"])).lower()
        for method in binding["methods"]:
            routes[(str(getattr(method, "value", method)).lower(), _shape(binding["route"]))] = level
    return routes


def _document_routes() -> dict[tuple[str, str], Any]:
    doc = document()
    found = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                found[(method, _shape(path))] = operation.get("security", doc["security"])
    return found


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate_spec(doc)


def test_every_route_is_in_the_document_and_every_documented_route_exists() -> None:
    app, described = _app_routes(), _document_routes()

    assert sorted(set(app) - set(described)) == [], "routes the document lacks"
    assert sorted(set(described) - set(app)) == [], "documented routes the app does not have"


def test_the_document_says_which_routes_need_the_function_key() -> None:
    app, described = _app_routes(), _document_routes()

    for route, level in app.items():
        assert (described[route] == []) == (level == "anonymous"), route
        if level != "anonymous":
            assert tuple(described[route]) == SECURED, route


def test_every_operation_documents_its_errors_as_problems() -> None:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.json")), ids=lambda p: p.name)
def test_the_examples_are_valid_requests_to_the_document(example: Path) -> None:
    schema = {**document()["components"]["schemas"]["OnboardingRequest"],
              "$defs": document()["components"]["schemas"]}
    Draft202012Validator(schema).validate(json.loads(example.read_text()))


def _wire_fields(model: Any) -> dict[str, Any]:
    return {field.alias or name: field for name, field in model.model_fields.items()}


def test_the_documented_request_has_the_models_fields_at_every_level() -> None:
    from shared.models import ApiKeySpec, AzureSpec, PaletteSpec, SshKeySpec
    from shared.models.request import PermissionsSpec, RotationSpec

    schema = document()["components"]["schemas"]["OnboardingRequest"]
    azure = schema["properties"]["azure"]
    pairs = [(schema, OnboardingRequest), (azure, AzureSpec), (azure["properties"]["permissions"], PermissionsSpec),
             (schema["properties"]["palette"], PaletteSpec), (schema["properties"]["sshKey"], SshKeySpec),
             (schema["properties"]["apiKey"], ApiKeySpec), (schema["properties"]["rotation"], RotationSpec)]
    for described, model in pairs:
        assert set(described["properties"]) == set(_wire_fields(model)), model.__name__
        assert described["additionalProperties"] is False, model.__name__
        required = {alias for alias, field in _wire_fields(model).items() if field.is_required()}
        assert set(described.get("required", [])) == required, model.__name__
