"""A small Microsoft Graph client for the password credentials of one app registration.

Only what rotation and onboarding need: read an application's passwords, add one, remove one.
Applications are addressed by ``appId`` (the client id the onboarding request carries), through
Graph's alternate key ``/applications(appId='...')``, so no object-id lookup is needed first.

Permission: ``Application.ReadWrite.OwnedBy`` with the function's identity as an owner of the app
(least privilege), or ``Application.ReadWrite.All``. Tenant policies may cap the number or the
lifetime of passwords; Graph answers 400 and its message is kept in the raised error.

Throttling: Graph's identity service allows an app 3,000 writes per 150 s in a tenant (18,000 per
300 s for the whole tenant) and warns before it refuses: past 80 % of a limit, every answer carries
``x-ms-throttle-limit-percentage`` (0.8 to 1.8). ``on_usage`` hears that warning so the app can slow
down before 429s; ``before_write`` lets it pace writes. A 429 is retried after its ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core.exceptions import DecodeError, HttpResponseError
from pydantic import SecretStr

from shared.clients.http import JsonHttpClient, RetryPolicy, format_timestamp, parse_timestamp

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    import requests
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

#: A cached token is renewed this long before it expires, so a call never races its expiry.
TOKEN_REFRESH_MARGIN_SECONDS = 300
#: Graph's early warning of throttling: the share of a limit the caller has used, past 0.8 of it.
USAGE_HEADER = "x-ms-throttle-limit-percentage"
#: The keys ``on_usage`` is called with: the kind of request whose answer carried the warning.
WRITE = "write"
READ = "read"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The ``rate_key`` that routes an attempt of a write through ``before_write``.
_WRITE_PACE_KEY = "graph-writes"


@dataclass(frozen=True)
class PasswordCredential:
    """One password of an application, as Graph lists it (the value is never readable)."""

    key_id: str
    display_name: str | None
    start: datetime | None
    end: datetime | None
    hint: str | None


@dataclass(frozen=True)
class Application:
    object_id: str
    app_id: str
    display_name: str | None
    passwords: tuple[PasswordCredential, ...]


@dataclass(frozen=True)
class NewPassword:
    """A password just added: ``secret_text`` is shown by Graph only in this response."""

    key_id: str
    secret_text: SecretStr
    start: datetime | None
    end: datetime | None
    hint: str | None


def _application_path(app_id: str) -> str:
    if not app_id:
        raise ValueError("app_id must not be empty: pass the application (client) id.")
    # OData string literal: single quotes doubled, then percent-encoded as one path segment.
    literal = quote(app_id.replace("'", "''"), safe="")
    return f"/v1.0/applications(appId='{literal}')"


def _service_principal_path(app_id: str) -> str:
    if not app_id:
        raise ValueError("app_id must not be empty: pass the application (client) id.")
    literal = quote(app_id.replace("'", "''"), safe="")
    return f"/v1.0/servicePrincipals(appId='{literal}')"


def parse_usage(value: str | None) -> float | None:
    """The share of a limit from ``x-ms-throttle-limit-percentage``; ``None`` when absent or not a
    finite, non-negative number (a header we cannot read must not slow the app down)."""
    if value is None:
        return None
    try:
        usage = float(value.strip())
    except ValueError:
        return None
    return usage if math.isfinite(usage) and usage >= 0 else None


class _WritePace:
    """The ``before_write`` hook in the shape the HTTP layer consults before every attempt."""

    def __init__(self, before_write: Callable[[], object]) -> None:
        self._before_write = before_write

    def acquire(self, key: str) -> float:
        started = time.monotonic()
        self._before_write()
        return time.monotonic() - started


def _password(item: dict[str, Any]) -> PasswordCredential:
    return PasswordCredential(
        key_id=str(item.get("keyId") or ""),
        display_name=item.get("displayName") if isinstance(item.get("displayName"), str) else None,
        start=parse_timestamp(item.get("startDateTime")),
        end=parse_timestamp(item.get("endDateTime")),
        hint=item.get("hint") if isinstance(item.get("hint"), str) else None,
    )


class GraphClient(JsonHttpClient):
    """Microsoft Graph client for application password credentials.

    :param endpoint: Graph base URL: ``https://graph.microsoft.com``, ``https://graph.microsoft.us``
        in US Government, or the local stand-in.
    :param credential: An azure-core ``TokenCredential`` (``DefaultAzureCredential``,
        ``ManagedIdentityCredential``...).
    :keyword scope: Token scope; defaults to ``f"{endpoint}/.default"``.
    :keyword timeout: Seconds per connect and per read (default 30).
    :keyword session: A :class:`requests.Session` seam (tests, custom TLS trust).
    :keyword retry: The :class:`~shared.clients.http.RetryPolicy`.
    :keyword on_usage: Called as ``on_usage(kind, share)`` after every response (retried ones too)
        that carries ``x-ms-throttle-limit-percentage``: ``kind`` is :data:`WRITE` or :data:`READ`
        (the method of the request), ``share`` the header as a float (0.8 to 1.8 from Graph). A
        value that is not a finite, non-negative number is ignored. An exception it raises is
        logged and swallowed: the call it reports on may already have changed the application.
    :keyword before_write: Called before each attempt of a write (``addPassword``,
        ``removePassword``) is sent, retries included (each one reaches Graph); it may block to
        take a slot from a shared pace. An exception it raises fails the call before anything is sent.

    Raises azure-core exceptions: ``ResourceNotFoundError`` (unknown application),
    ``ClientAuthenticationError`` (401/403: missing permission or not an owner), ``HttpResponseError``
    (400 with Graph's message, such as a credential-count policy), ``ServiceRequestError`` /
    ``ServiceResponseError`` (network).
    """

    service_name = "Graph"
    request_id_headers = ("request-id", "client-request-id")

    def __init__(self, endpoint: str, credential: TokenCredential, *, scope: str | None = None,
                 timeout: float = 30, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None, on_usage: Callable[[str, float], None] | None = None,
                 before_write: Callable[[], object] | None = None) -> None:
        if credential is None:
            raise ValueError("credential is required: pass a TokenCredential such as DefaultAzureCredential.")
        super().__init__(endpoint, timeout=timeout, session=session, retry=retry,
                         rate_limiter=_WritePace(before_write) if before_write is not None else None)
        self._on_usage = on_usage
        self._credential = credential
        self._scope = scope or f"{self.endpoint}/.default"
        self._token: str | None = None
        self._token_expires_on = 0.0
        self._token_lock = threading.Lock()

    def warm_up(self) -> None:
        """Fetch the access token now (a worker warming up), so the first call does not wait for it."""
        self._bearer()

    # -- plumbing -------------------------------------------------------------------------------

    def _bearer(self, *, refresh: bool = False) -> str:
        """A cached access token, renewed five minutes before it expires."""
        with self._token_lock:
            stale = time.time() >= self._token_expires_on - TOKEN_REFRESH_MARGIN_SECONDS
            if refresh or self._token is None or stale:
                access = self._credential.get_token(self._scope)
                self._token = access.token
                self._token_expires_on = float(access.expires_on)
            return self._token

    def _observe_response(self, method: str, response: requests.Response) -> None:
        """Pass Graph's usage warning to ``on_usage``, keyed by the kind of request it answered."""
        if self._on_usage is None:
            return
        usage = parse_usage(response.headers.get(USAGE_HEADER))
        if usage is None:
            return
        kind = READ if method.upper() in _READ_METHODS else WRITE
        logger.debug("Graph %s usage at %.2f of its limit", kind, usage)
        try:
            self._on_usage(kind, usage)
        except Exception as exc:  # noqa: BLE001 - the work may be done: a hook must not lose its answer
            # The type only: the hook's message is not ours to vouch for in a log line.
            logger.warning("the on_usage hook failed (%s); the Graph call goes on", type(exc).__name__)

    def _call(self, method: str, path: str, *, json: Any = None, idempotent: bool | None = None) -> requests.Response:
        rate_key = None if method.upper() in _READ_METHODS else _WRITE_PACE_KEY
        for refresh in (False, True):
            token = self._bearer(refresh=refresh)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            try:
                return self._send(method, path, json=json, headers=headers, secrets=(token,), idempotent=idempotent,
                                  rate_key=rate_key)
            except HttpResponseError as exc:
                # A token revoked or rotated before its expiry: fetch a fresh one once.
                if exc.status_code != 401 or refresh:
                    raise
                logger.info("%s %s -> 401 with a cached token; retrying once with a new token", method, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, *, json: Any = None) -> dict[str, Any]:
        response = self._call(method, path, json=json)
        try:
            body = response.json()
        except ValueError:
            raise DecodeError(message=f"Graph {method} {path} returned a body that is not JSON") from None
        if not isinstance(body, dict):
            raise DecodeError(message=f"Graph {method} {path} returned JSON that is not an object")
        return body

    # -- operations -----------------------------------------------------------------------------

    def get_application(self, app_id: str) -> Application:
        """The application with client id ``app_id`` and its password credentials.

        :raises ~azure.core.exceptions.ResourceNotFoundError: no such application (or not visible
            to an identity with ``OwnedBy`` permission that does not own it).
        """
        body = self._json("GET", _application_path(app_id))
        passwords = body.get("passwordCredentials")
        return Application(
            object_id=str(body.get("id") or ""),
            app_id=str(body.get("appId") or app_id),
            display_name=body.get("displayName") if isinstance(body.get("displayName"), str) else None,
            passwords=tuple(_password(p) for p in passwords if isinstance(p, dict))
            if isinstance(passwords, list) else (),
        )

    def service_principal_id(self, app_id: str) -> str:
        """The object id of the service principal of the application with client id ``app_id`` in
        this tenant: what Azure role assignments name (``principalId``), unlike the appId or the
        application's own object id. Needs ``Application.Read.All`` (or ``Application.ReadWrite.OwnedBy``
        on an app the identity owns).

        :raises ~azure.core.exceptions.ResourceNotFoundError: the application has no service
            principal in this tenant (an app registration nobody consented to, or another tenant's).
        """
        body = self._json("GET", f"{_service_principal_path(app_id)}?$select=id,appId")
        object_id = body.get("id")
        if not isinstance(object_id, str) or not object_id:
            raise DecodeError(message="Graph returned a service principal without an id")
        return object_id

    def add_password(self, app_id: str, *, display_name: str, end: datetime,
                     start: datetime | None = None) -> NewPassword:
        """Add a password to the application (``POST .../addPassword``); the value is returned only here.

        Never retried once sent: a lost response may still have added a password, which the
        caller finds by ``display_name`` with :meth:`get_application` and removes.
        ``end`` (and ``start``) must be timezone-aware.

        :raises ~azure.core.exceptions.HttpResponseError: 400 when a tenant policy refuses the
            password (count or lifetime cap), with Graph's message.
        """
        credential: dict[str, Any] = {"displayName": display_name, "endDateTime": format_timestamp(end)}
        if start is not None:
            credential["startDateTime"] = format_timestamp(start)
        body = self._json("POST", f"{_application_path(app_id)}/addPassword",
                          json={"passwordCredential": credential})
        secret = body.get("secretText")
        key_id = body.get("keyId")
        if not isinstance(secret, str) or not secret or not isinstance(key_id, str) or not key_id:
            raise DecodeError(message="Graph added a password but returned no keyId or secretText")
        return NewPassword(key_id=key_id, secret_text=SecretStr(secret),
                           start=parse_timestamp(body.get("startDateTime")),
                           end=parse_timestamp(body.get("endDateTime")),
                           hint=body.get("hint") if isinstance(body.get("hint"), str) else None)

    def remove_password(self, app_id: str, key_id: str) -> None:
        """Remove a password (``POST .../removePassword``); succeeds when it is already gone.

        When Graph refuses (400/404), the application is read back: an unknown application raises
        ``ResourceNotFoundError``; a ``key_id`` no longer listed counts as removed; anything else
        re-raises Graph's error.
        """
        path = f"{_application_path(app_id)}/removePassword"
        try:
            # Removing a password twice has the effect of removing it once: safe to retry.
            self._call("POST", path, json={"keyId": key_id}, idempotent=True)
        except HttpResponseError as exc:
            if exc.status_code not in (400, 404):
                raise
            application = self.get_application(app_id)
            if any(p.key_id == key_id for p in application.passwords):
                raise
            logger.debug("password %s of application %s was already removed", key_id, app_id)
