"""The OpenAPI document as the tests' oracle: every response a test sees is checked against it.

:func:`conforms` validates one ``requests`` response (status, content type, headers, body) with
openapi-core against ``functions/openapi.json``, the document the app serves. A response with an
empty body (the host's own 401 for a missing function key) is checked for a documented status only.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "functions" / "openapi.json"


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text())
    return loaded


@cache
def _openapi() -> OpenAPI:
    # Problem details are JSON under their own media type (RFC 9457).
    return OpenAPI.from_dict(document(), config=Config(
        extra_media_type_deserializers={"application/problem+json": _problem_json}))


def _problem_json(value: str | bytes, **_parameters: str) -> Any:
    return json.loads(value)  # the media type's parameters (charset) change nothing for JSON


def operation_of(method: str, url: str) -> dict[str, Any]:
    """The document's operation for ``method`` on ``url`` (which starts with the server URL, /api)."""
    path = url.split("/api", 1)[1].split("?", 1)[0]
    for template, item in document()["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)), path) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def conforms(response: requests.Response) -> requests.Response:
    """Raise unless ``response`` is one the document allows for its request; return it."""
    request = response.request
    assert request.method is not None and request.url is not None
    if not response.content:
        responses = operation_of(request.method, request.url)["responses"]
        assert str(response.status_code) in responses, (
            f"{request.method} {request.url}: status {response.status_code} is not documented")
        return response
    _openapi().validate_response(RequestsOpenAPIRequest(request), RequestsOpenAPIResponse(response))
    return response
