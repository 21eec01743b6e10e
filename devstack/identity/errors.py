"""The three error formats this stand-in speaks, each as its real service writes it.

One server answers for three protocols, so every error carries its own rendering:

* App Service managed identity: ``{"statusCode", "message", "correlationId"}``;
* Entra ID token endpoint: ``{"error", "error_description", "error_codes", "timestamp", "trace_id",
  "correlation_id", "error_uri"}``, with ``AADSTSnnn: ...`` leading the description (clients such as
  azure-identity surface only the description, so the code must be in it);
* Microsoft Graph: OData ``{"error": {"code", "message", "innerError": {...}}}`` plus the
  ``request-id`` and ``client-request-id`` headers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from devstack.httpbase import HttpError, Response


def new_id() -> str:
    return str(uuid.uuid4())


class WireError(HttpError):
    """An :class:`HttpError` that knows its service's body."""

    def render(self) -> Response:
        raise NotImplementedError


class ManagedIdentityError(WireError):
    """An error of the App Service managed identity endpoint."""

    def render(self) -> Response:
        body = {"statusCode": self.status, "message": self.message, "correlationId": new_id()}
        return Response.json(self.status, body, self.headers)


class EntraError(WireError):
    """An Entra ID (v2.0 endpoint) OAuth error with its ``AADSTS`` number."""

    def __init__(self, status: int, error: str, aadsts: int, text: str, *, base_url: str,
                 correlation_id: str | None = None) -> None:
        super().__init__(status, error, text)
        self.aadsts = aadsts
        self.base_url = base_url
        self.correlation_id = correlation_id or new_id()

    def render(self) -> Response:
        now = dt.datetime.now(dt.UTC)
        trace_id = new_id()
        timestamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        description = (f"AADSTS{self.aadsts}: {self.message} Trace ID: {trace_id} "
                       f"Correlation ID: {self.correlation_id} Timestamp: {timestamp}")
        body = {
            "error": self.code,
            "error_description": description,
            "error_codes": [self.aadsts],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": self.correlation_id,
            "error_uri": f"{self.base_url}/error?code={self.aadsts}",
        }
        return Response.json(self.status, body, {"Cache-Control": "no-store, no-cache", **self.headers})


class GraphError(WireError):
    """A Microsoft Graph OData error."""

    def __init__(self, status: int, code: str, message: str, *, client_request_id: str | None = None,
                 details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, message, headers=headers, details=details)
        self.client_request_id = client_request_id

    def render(self) -> Response:
        return graph_error_response(self.status, self.code, self.message, details=self.details,
                                    client_request_id=self.client_request_id, headers=self.headers)


def graph_error_response(status: int, code: str, message: str, *, details: Any = None,
                         client_request_id: str | None = None,
                         headers: dict[str, str] | None = None) -> Response:
    request_id = new_id()
    client_request_id = client_request_id or request_id
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    error["innerError"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": client_request_id,
    }
    merged = {"request-id": request_id, "client-request-id": client_request_id, **(headers or {})}
    return Response.json(status, {"error": error}, merged)


class GraphThrottled(WireError):
    """Graph's 429: ``Retry-After`` in seconds and the identity service's throttling headers.

    The body is the one Graph's throttling guide shows (``TooManyRequests``, with the status again
    in ``innerError``); the ``x-ms-throttle-*`` headers are what the identity and access service adds
    to name the scope (``<Scope>/<Limit>/<app>/<tenant>``: ``Tenant_Application`` or ``Tenant``,
    ``ReadWrite`` or ``Write``) and the reason. ``usage`` (the share of the limit asked for) adds
    ``x-ms-throttle-limit-percentage``, as on every answer to a caller past 80 % of a limit.
    """

    def __init__(self, retry_after: int, *, tenant: str, caller: str, client_request_id: str | None,
                 scope: str = "Tenant_Application", limit: str = "ReadWrite",
                 information: str = "ResourceUnitLimitExceeded", usage: float | None = None) -> None:
        super().__init__(429, "TooManyRequests", "Please retry again later.")
        self.retry_after = retry_after
        self.tenant = tenant
        self.caller = caller
        self.client_request_id = client_request_id
        self.scope = scope
        self.limit = limit
        self.information = information
        self.usage = usage

    def render(self) -> Response:
        request_id = new_id()
        client_request_id = self.client_request_id or request_id
        error = {
            "code": self.code,
            "message": self.message,
            "innerError": {
                "code": "429",
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "message": "Please retry after",
                "request-id": request_id,
                "client-request-id": client_request_id,
                "status": "429",
            },
        }
        headers = {
            "Retry-After": str(self.retry_after),
            "x-ms-throttle-scope": f"{self.scope}/{self.limit}/{self.caller}/{self.tenant}",
            "x-ms-throttle-information": self.information,
            "request-id": request_id,
            "client-request-id": client_request_id,
        }
        if self.usage is not None:
            headers[USAGE_HEADER] = format_usage(self.usage)
        return Response.json(429, {"error": error}, headers)


#: Graph's early warning: the share of a limit used, sent once a caller is past 80 % of it.
USAGE_HEADER = "x-ms-throttle-limit-percentage"


def format_usage(usage: float) -> str:
    """The header's value: a share of the limit (0.8 to 1.8), two decimals."""
    return f"{usage:.2f}"
