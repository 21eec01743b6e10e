"""A small Microsoft Graph client for the password credentials of one app registration.

Only what rotation and onboarding need: read an application's passwords, add one, remove one.
Applications are addressed by ``appId`` (the client id the onboarding request carries), through
Graph's alternate key ``/applications(appId='...')``, so no object-id lookup is needed first.

Permission: ``Application.ReadWrite.OwnedBy`` with the function's identity as an owner of the app
(least privilege), or ``Application.ReadWrite.All``. Tenant policies may cap the number or the
lifetime of passwords; Graph answers 400 and its message is kept in the raised error.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core.exceptions import DecodeError, HttpResponseError
from pydantic import SecretStr

from shared.clients.http import JsonHttpClient, RetryPolicy, format_timestamp, parse_timestamp

if TYPE_CHECKING:
    from datetime import datetime

    import requests
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

#: A cached token is renewed this long before it expires, so a call never races its expiry.
TOKEN_REFRESH_MARGIN_SECONDS = 300


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

    Raises azure-core exceptions: ``ResourceNotFoundError`` (unknown application),
    ``ClientAuthenticationError`` (401/403: missing permission or not an owner), ``HttpResponseError``
    (400 with Graph's message, such as a credential-count policy), ``ServiceRequestError`` /
    ``ServiceResponseError`` (network).
    """

    service_name = "Graph"
    request_id_headers = ("request-id", "client-request-id")

    def __init__(self, endpoint: str, credential: TokenCredential, *, scope: str | None = None,
                 timeout: float = 30, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None) -> None:
        if credential is None:
            raise ValueError("credential is required: pass a TokenCredential such as DefaultAzureCredential.")
        super().__init__(endpoint, timeout=timeout, session=session, retry=retry)
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

    def _call(self, method: str, path: str, *, json: Any = None, idempotent: bool | None = None) -> requests.Response:
        for refresh in (False, True):
            token = self._bearer(refresh=refresh)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            try:
                return self._send(method, path, json=json, headers=headers, secrets=(token,), idempotent=idempotent)
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
