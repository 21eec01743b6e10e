"""Key Vault's secrets REST API over :mod:`devstack.httpbase`, close enough that ``SecretClient`` works.

What the real SDK checks, and so what this layer gets right:

* the challenge: a request without a usable token gets 401 with ``WWW-Authenticate: Bearer
  authorization="<authority>/<tenant>", resource="<resource>"``, decided before the body is looked
  at (the SDK's first request is a bodiless copy sent only to elicit it). The resource is the
  vault's own authority minus its first label (:func:`challenge_resource`), as
  ``https://vault.azure.net`` is for ``https://<name>.vault.azure.net``, so the SDK's default check
  that the vault's host lies under the challenge resource passes; only tokens for that resource
  are accepted;
* ``api-version`` is required and must be one Key Vault knows;
* ids are absolute, built from the URL the client used (``https://`` + ``Host``), since the SDK
  parses names and versions out of them;
* listings page with ``maxresults`` (1-25) and an absolute ``nextLink`` carrying ``$skiptoken``;
* every error is ``{"error": {"code", "message", "innererror"?}}`` with Key Vault's status codes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from devstack.httpbase import HttpError, Request, Response, ServiceApp
from devstack.keyvault.errors import BadParameter, Unauthorized
from devstack.keyvault.events import VaultEvents
from devstack.keyvault.models import (
    RECOVERABLE_DAYS,
    UNSET,
    KeyVaultBackend,
    Unset,
    check_name,
)
from devstack.tokens import b64url, bearer_token, peek_claims, verify_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.keyvault.models import DeletedRecord, SecretRecord, SecretVersion

LATEST_API_VERSION = "2026-04-01"
# The name in the vault's resource id and in its events' VaultName (its URL is https://127.0.0.1:<port>).
DEFAULT_VAULT_NAME = "devstack-vault"
API_VERSIONS = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6",
                          "2025-07-01", LATEST_API_VERSION})
_PREVIEW_API_VERSION = re.compile(r"7\.\d-preview(\.\d+)?")
MAX_PAGE_SIZE = 25
_BULK_FIELDS = {"name", "value", "contentType", "tags", "expires", "notBefore", "version"}
_PAGE_SIZE = re.compile(r"\d{1,4}")
_HOST = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?")
# Stands in for Key Vault's build number in the diagnostic header clients log.
_SERVICE_VERSION = "1.9.0.0"
_MISSING_TOKEN = "AKV10000: Request is missing a Bearer or PoP token."


def challenge_resource(host: str, port: int) -> str:
    """The resource a vault served at ``https://host:port`` names in its challenge (and takes tokens for).

    ``SecretClient`` (``verify_challenge_resource`` on, its default) sends a token only when the
    vault's ``host:port`` ends with ``"." + <the resource's host:port>``. Azure satisfies that by
    naming the cloud's parent domain (``vault.azure.net`` under ``<name>.vault.azure.net``); here the
    parent is the host minus its first label, with the port the vault serves on:
    ``127.0.0.1:54321`` names ``https://0.0.1:54321``. Whatever port the stack picks, the rule holds,
    and a token for one vault is refused by a vault on another port.

    Raises
    ------
    ValueError
        ``host`` has no parent (``localhost``, ``::1``): no resource would pass the SDK's check.
    """
    _, dot, parent = host.partition(".")
    if not dot or not parent or ":" in host:
        raise ValueError(f"A vault served on {host!r} cannot name a challenge resource the SDK accepts; "
                         "serve it on a dotted address such as 127.0.0.1.")
    return f"https://{parent}:{port}"


def _encode_skiptoken(marker: str) -> str:
    return b64url(json.dumps({"NextMarker": marker, "TargetLocation": 0}).encode())


def _decode_skiptoken(token: str) -> str:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("NextMarker"), str):
        raise BadParameter("The value of the $skiptoken query parameter is invalid.")
    marker: str = payload["NextMarker"]
    return marker


def _json_object(request: Request) -> dict[str, Any]:
    if not request.body:
        raise BadParameter("The request body is required.")
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):
        raise BadParameter("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise BadParameter("The request body must be a JSON object.")
    return payload


def _optional_str(payload: dict[str, Any], key: str) -> str | Unset:
    if payload.get(key) is None:
        return UNSET
    value = payload[key]
    if not isinstance(value, str):
        raise BadParameter(f"Property '{key}' must be a string.")
    return value


def _optional_tags(payload: dict[str, Any]) -> dict[str, str] | Unset:
    tags = payload.get("tags")
    if tags is None:
        return UNSET
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise BadParameter("Property 'tags' must be an object of string values.")
    return tags


def _attributes(payload: dict[str, Any]) -> dict[str, Any]:
    """The writable attributes given in a body (read-only ones such as ``created`` are ignored)."""
    attributes = payload.get("attributes")
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise BadParameter("Property 'attributes' must be an object.")
    out: dict[str, Any] = {}
    if attributes.get("enabled") is not None:
        if not isinstance(attributes["enabled"], bool):
            raise BadParameter("Attribute 'enabled' must be a boolean.")
        out["enabled"] = attributes["enabled"]
    for wire, name in (("nbf", "not_before"), ("exp", "expires")):
        value = attributes.get(wire)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadParameter(f"Attribute '{wire}' must be a number of seconds since 1970-01-01.")
            out[name] = value
    return out


class KeyVaultApp(ServiceApp):
    """The HTTP face of one vault; ``backend`` holds its state."""

    name = "keyvault"

    def __init__(self, *, authority: str, tenant_id: str, purge_protection: bool = False,
                 clock: Callable[[], float] = time.time, vault_name: str = DEFAULT_VAULT_NAME,
                 webhook_verify: bool | str = True) -> None:
        super().__init__()
        self.authority = authority.rstrip("/")
        self.tenant_id = tenant_id
        self.backend = KeyVaultBackend(purge_protection=purge_protection, clock=clock)
        self.events = VaultEvents(self.backend, vault_name=vault_name, verify=webhook_verify)
        self._resource: str | None = None
        self._url: str | None = None
        add = self.router.add
        add("GET", "/secrets", self._list_secrets)
        add("GET", "/secrets/{name}/versions", self._list_versions)  # before /{version}
        add("PUT", "/secrets/{name}", self._set_secret)
        add("GET", "/secrets/{name}", self._get_secret)
        add("PATCH", "/secrets/{name}", self._update_secret)
        add("DELETE", "/secrets/{name}", self._delete_secret)
        add("GET", "/secrets/{name}/{version}", self._get_secret)
        add("PATCH", "/secrets/{name}/{version}", self._update_secret)
        add("GET", "/deletedsecrets", self._list_deleted)
        add("GET", "/deletedsecrets/{name}", self._get_deleted)
        add("DELETE", "/deletedsecrets/{name}", self._purge_deleted)
        add("POST", "/deletedsecrets/{name}/recover", self._recover_deleted)

    @property
    def resource(self) -> str:
        """The audience this vault accepts tokens for; known once it is served (see :meth:`bound`)."""
        if self._resource is None:
            raise RuntimeError("The vault has no address yet: serve it with RunningServer first.")
        return self._resource

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of every 401."""
        return f'Bearer authorization="{self.authority}/{self.tenant_id}", resource="{self.resource}"'

    # -- ServiceApp hooks -----------------------------------------------------------------------

    def bound(self, host: str, port: int) -> None:
        """Name the challenge resource after the address the vault serves on (one address per vault)."""
        resource = challenge_resource(host, port)
        if self._resource is not None and self._resource != resource:
            raise RuntimeError(f"This vault already serves as {self._resource}; make one vault per address.")
        self._resource = resource
        self._url = f"https://{host}:{port}"

    def error_response(self, error: HttpError) -> Response:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if isinstance(error.details, str):
            body["innererror"] = {"code": error.details}
        return self._json(error.status, {"error": body}, error.headers)

    def before_request(self, request: Request) -> Response | None:
        """Authenticate, then check ``api-version``; both before any routing or body parsing."""
        token = bearer_token(request.header("authorization"))
        if token is None:
            raise Unauthorized(_MISSING_TOKEN, self.challenge)
        problem = self._token_problem(token)
        if problem is not None:
            raise Unauthorized(problem, self.challenge)
        api_version = request.query_value("api-version")
        if not api_version:
            raise BadParameter("The api-version query parameter is required. Consider using the latest "
                               f"supported version ({LATEST_API_VERSION}).")
        if api_version not in API_VERSIONS and not _PREVIEW_API_VERSION.fullmatch(api_version):
            raise BadParameter(f"The specified version ({api_version}) is not recognized. Consider using "
                               f"the latest supported version ({LATEST_API_VERSION}).")
        return None

    def reset(self) -> None:
        self.backend.reset()
        self.events.reset()

    def state(self) -> Any:
        return {**self.backend.snapshot(),
                "eventGridSubscriptions": [s.to_json() for s in self.events.topic.subscriptions()]}

    def admin(self, request: Request, subpath: str) -> Response | None:
        """``/_devstack/eventgrid/...``: the vault's Event Grid subscriptions and events (see events.py);
        ``POST /_devstack/secrets/bulk``: many secrets at once (a benchmark's large inventory)."""
        if subpath == "secrets/bulk" and request.method == "POST":
            return self._add_in_bulk(request)
        return self.events.admin(request, subpath, self._url or self._vault_url(request))

    def _add_in_bulk(self, request: Request) -> Response:
        """One new version per item, without events; the versions (never a value) in the order given."""
        usage = ('The body is {"secrets": [{"name", "value": string, "contentType"?: string, "tags"?: {string: '
                 'string}, "expires"?, "notBefore"?: Unix seconds, "version"?: 32 hex digits}]}.')
        payload = _json_object(request)
        items = payload.get("secrets")
        if set(payload) != {"secrets"} or not isinstance(items, list) or not items:
            raise BadParameter(usage)
        staged = []
        for item in items:
            if (not isinstance(item, dict) or set(item) - _BULK_FIELDS
                    or not isinstance(item.get("name"), str) or not isinstance(item.get("value"), str)
                    or not isinstance(item.get("contentType"), str | None)
                    or not isinstance(item.get("version"), str | None)
                    or any(isinstance(item.get(key), bool) or not isinstance(item.get(key), int | None)
                           for key in ("expires", "notBefore"))):
                raise BadParameter(usage)
            _optional_tags(item)  # a JSON object of strings, or absent
            staged.append({"name": item["name"], "value": item["value"], "content_type": item.get("contentType"),
                           "tags": item.get("tags"), "expires": item.get("expires"),
                           "not_before": item.get("notBefore"), "version": item.get("version")})
        records = self.backend.add_versions(staged)
        return Response.json(201, {"count": len(records), "versions": [r.version.version for r in records]})

    def redact(self, body: Any) -> Any:
        if isinstance(body, dict) and "value" in body:
            return {**body, "value": "***"}
        return body

    # -- helpers --------------------------------------------------------------------------------

    def _token_problem(self, token: str) -> str | None:
        resource = self.resource
        claims = verify_token(token, audience=resource)
        if claims is not None:
            tenant = claims.get("tid")
            if tenant is not None and str(tenant).lower() != self.tenant_id.lower():  # GUIDs ignore case
                return ("AKV10032: Invalid issuer. Expected one of "
                        f"https://sts.windows.net/{self.tenant_id}/, found: https://sts.windows.net/{tenant}/.")
            return None
        peeked = peek_claims(token)
        if peeked is not None and peeked.get("aud") != resource:
            return f"AKV10022: Invalid audience. Expected {resource}, found: {peeked.get('aud')}."
        exp = peeked.get("exp") if peeked is not None else None
        if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp < time.time():
            return "The access token is expired."
        return "AKV10046: Unable to resolve the key used for signature validation."

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        merged = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-keyvault-service-version": _SERVICE_VERSION,
                  "Cache-Control": "no-cache", **(headers or {})}
        return Response.json(status, payload, merged)

    @staticmethod
    def _vault_url(request: Request) -> str:
        """The vault's base URL as the client addressed it; ids must parse back to it."""
        host = request.header("host")
        if not host or not _HOST.fullmatch(host):
            raise BadParameter("The Host header must be present and name the vault.")
        return f"https://{host}"

    @staticmethod
    def _page_args(request: Request) -> tuple[str | None, int]:
        raw = request.query_value("maxresults")
        limit = MAX_PAGE_SIZE
        if raw is not None:
            if not _PAGE_SIZE.fullmatch(raw) or not 1 <= int(raw) <= MAX_PAGE_SIZE:
                raise BadParameter(f"The value of the maxresults query parameter must be an integer from 1 "
                                   f"to {MAX_PAGE_SIZE}.")
            limit = int(raw)
        token = request.query_value("$skiptoken")
        return (_decode_skiptoken(token) if token else None), limit

    @staticmethod
    def _next_link(request: Request, vault_url: str, marker: str | None, limit: int) -> str | None:
        if marker is None:
            return None
        api_version = quote(request.query_value("api-version") or LATEST_API_VERSION, safe="")
        return (f"{vault_url}{request.path.rstrip('/')}?api-version={api_version}"
                f"&$skiptoken={_encode_skiptoken(marker)}&maxresults={limit}")

    def _attributes_json(self, version: SecretVersion) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": version.enabled}
        if version.not_before is not None:
            out["nbf"] = version.not_before
        if version.expires is not None:
            out["exp"] = version.expires
        out.update(created=version.created, updated=version.updated,
                   recoveryLevel=self.backend.recovery_level, recoverableDays=RECOVERABLE_DAYS)
        return out

    def _properties(self, secret_id: str, version: SecretVersion) -> dict[str, Any]:
        out: dict[str, Any] = {"id": secret_id, "attributes": self._attributes_json(version)}
        if version.content_type is not None:
            out["contentType"] = version.content_type
        if version.tags is not None:
            out["tags"] = version.tags
        return out

    def _bundle(self, vault_url: str, record: SecretRecord, *, with_value: bool) -> dict[str, Any]:
        bundle = self._properties(f"{vault_url}/secrets/{record.name}/{record.version.version}",
                                  record.version)
        if with_value:
            bundle = {"value": record.version.value, **bundle}
        return bundle

    def _deleted(self, vault_url: str, record: DeletedRecord, *, item: bool) -> dict[str, Any]:
        secret_id = f"{vault_url}/secrets/{record.name}"
        if not item:
            secret_id += f"/{record.version.version}"
        return {"recoveryId": f"{vault_url}/deletedsecrets/{record.name}",
                "deletedDate": record.deleted_date, "scheduledPurgeDate": record.scheduled_purge_date,
                **self._properties(secret_id, record.version)}

    # -- handlers -------------------------------------------------------------------------------

    def _set_secret(self, request: Request) -> Response:
        name = check_name(request.path_params["name"])
        vault_url = self._vault_url(request)
        payload = _json_object(request)
        value = payload.get("value")
        if not isinstance(value, str):
            raise BadParameter("Property 'value' is required and must be a string.")
        content_type = _optional_str(payload, "contentType")
        tags = _optional_tags(payload)
        record = self.backend.set_secret(
            name, value,
            content_type=None if isinstance(content_type, Unset) else content_type,
            tags=None if isinstance(tags, Unset) else tags,
            **_attributes(payload),
        )
        self.events.new_version(vault_url, record)
        return self._json(200, self._bundle(vault_url, record, with_value=True))

    def _get_secret(self, request: Request) -> Response:
        vault_url = self._vault_url(request)
        record = self.backend.get_secret(request.path_params["name"], request.path_params.get("version"))
        return self._json(200, self._bundle(vault_url, record, with_value=True))

    def _update_secret(self, request: Request) -> Response:
        name = check_name(request.path_params["name"])
        vault_url = self._vault_url(request)
        payload = _json_object(request)
        record = self.backend.update_secret(
            name, request.path_params.get("version"),
            content_type=_optional_str(payload, "contentType"), tags=_optional_tags(payload),
            **_attributes(payload),
        )
        return self._json(200, self._bundle(vault_url, record, with_value=False))

    def _delete_secret(self, request: Request) -> Response:
        vault_url = self._vault_url(request)
        record = self.backend.delete_secret(request.path_params["name"])
        return self._json(200, self._deleted(vault_url, record, item=False))

    def _list_secrets(self, request: Request) -> Response:
        vault_url = self._vault_url(request)
        marker, limit = self._page_args(request)
        page = self.backend.list_secrets(marker=marker, limit=limit)
        items = [self._properties(f"{vault_url}/secrets/{r.name}", r.version) for r in page.items]
        return self._json(200, {"value": items,
                                "nextLink": self._next_link(request, vault_url, page.next_marker, limit)})

    def _list_versions(self, request: Request) -> Response:
        name = check_name(request.path_params["name"])
        vault_url = self._vault_url(request)
        marker, limit = self._page_args(request)
        page = self.backend.list_versions(name, marker=marker, limit=limit)
        items = [self._properties(f"{vault_url}/secrets/{r.name}/{r.version.version}", r.version)
                 for r in page.items]
        return self._json(200, {"value": items,
                                "nextLink": self._next_link(request, vault_url, page.next_marker, limit)})

    def _list_deleted(self, request: Request) -> Response:
        vault_url = self._vault_url(request)
        marker, limit = self._page_args(request)
        page = self.backend.list_deleted_secrets(marker=marker, limit=limit)
        items = [self._deleted(vault_url, r, item=True) for r in page.items]
        return self._json(200, {"value": items,
                                "nextLink": self._next_link(request, vault_url, page.next_marker, limit)})

    def _get_deleted(self, request: Request) -> Response:
        vault_url = self._vault_url(request)
        record = self.backend.get_deleted_secret(request.path_params["name"])
        return self._json(200, self._deleted(vault_url, record, item=False))

    def _purge_deleted(self, request: Request) -> Response:
        self.backend.purge_deleted_secret(request.path_params["name"])
        return Response.empty(204, {"x-ms-request-id": str(uuid.uuid4())})

    def _recover_deleted(self, request: Request) -> Response:
        vault_url = self._vault_url(request)
        record = self.backend.recover_deleted_secret(request.path_params["name"])
        return self._json(200, self._bundle(vault_url, record, with_value=False))
