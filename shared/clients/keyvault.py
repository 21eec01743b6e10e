"""Key Vault secrets the onboarding owns: client secrets, SSH private keys and Palette API keys.

A thin layer over :class:`azure.keyvault.secrets.SecretClient` that exists for three reasons:

* values cross our API only as :class:`pydantic.SecretStr`, so they cannot end up in a log line, a
  repr or an exception message by accident;
* what we read back is a small frozen :class:`StoredSecret` (ids, tags, dates), never an SDK object
  that carries the value;
* the questions the pipeline and the rotation sweep ask ("which version holds Graph credential X?",
  "which secrets do we manage?") are answered here once, by tag.

Errors are the SDK's azure-core exceptions (``ResourceNotFoundError``, ``HttpResponseError``,
``ClientAuthenticationError``, ...), passed through unchanged so the domain catches one family for
every service. Each carries ``service = "Key Vault"`` so the failure table
(:mod:`shared.engine.failures`) can tell them from Palette's and Graph's.

The names and tags of the product's secrets are :mod:`shared.credentials`' business.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from pydantic import SecretStr

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from datetime import datetime
    from types import TracebackType

    from azure.core.credentials import TokenCredential
    from azure.keyvault.secrets import SecretProperties

logger = logging.getLogger(__name__)

SERVICE_NAME = "Key Vault"

_F = TypeVar("_F", bound="Callable[..., Any]")
_T = TypeVar("_T")


def _names_service(method: _F) -> _F:
    """Mark every azure-core error the SDK raises with ``service``, as our own HTTP clients do;
    and let the store's first call go alone (see :meth:`SecretStore._first_call_alone`)."""

    @functools.wraps(method)
    def wrapper(store: SecretStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return store._first_call_alone(lambda: method(store, *args, **kwargs))
        except AzureError as exc:
            exc.service = SERVICE_NAME  # type: ignore[attr-defined]
            raise

    return wrapper  # type: ignore[return-value]


_VALID_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


def _check_name(name: str) -> None:
    if not _VALID_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid Key Vault secret name: use 1-127 letters, digits and '-'."
        )


# --- Values read back -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSecret:
    """The properties of one secret version: everything except the value.

    ``version`` is ``""`` for entries from :meth:`SecretStore.list_secrets`, which (like Key Vault's
    own listing) describe a secret's current version without naming it.
    """

    name: str
    version: str
    id: str
    tags: Mapping[str, str] = field(hash=False)
    expires_on: datetime | None
    enabled: bool
    content_type: str | None
    created_on: datetime | None
    not_before: datetime | None = None
    updated_on: datetime | None = None

    @classmethod
    def from_properties(cls, properties: SecretProperties) -> StoredSecret:
        return cls(
            name=properties.name or "",
            version=properties.version or "",
            id=properties.id or "",
            tags=MappingProxyType(dict(properties.tags or {})),
            expires_on=properties.expires_on,
            enabled=properties.enabled is not False,
            content_type=properties.content_type,
            created_on=properties.created_on,
            not_before=properties.not_before,
            updated_on=properties.updated_on,
        )


@dataclass(frozen=True)
class DeletedSecretInfo:
    """A secret in soft delete: recoverable until ``scheduled_purge_date``, its name blocked."""

    name: str
    deleted_on: datetime | None
    scheduled_purge_date: datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)


def _newest_first(item: StoredSecret) -> tuple[float, float]:
    created = item.created_on.timestamp() if item.created_on else float("-inf")
    updated = item.updated_on.timestamp() if item.updated_on else float("-inf")
    return (created, updated)


# --- The store --------------------------------------------------------------------------------


class SecretStore:
    """Reads and writes our secrets in one vault.

    Parameters
    ----------
    vault_url
        ``https://<vault>.vault.azure.net`` (or the sovereign-cloud or local-stack equivalent).
    credential
        Any azure-core token credential (managed identity in Azure).
    client
        An existing ``SecretClient`` to use instead of building one (tests, shared pipelines). A
        client passed in is not closed by :meth:`close`: its owner closes it.
    connection_verify
        A CA bundle path (or ``False``) for a vault whose certificate is not publicly trusted, as
        the local stack's.

    The SDK's check that the ``resource`` of Key Vault's authentication challenge is a parent
    domain of the vault's host stays on for every vault: it is what keeps a token from being sent
    to an impostor.

    Request and response bodies are never logged (``logging_enable=False``): they carry values.
    """

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential,
        *,
        client: SecretClient | None = None,
        connection_verify: str | bool | None = None,
    ) -> None:
        if not vault_url:
            raise ValueError("vault_url is empty: pass the vault's URL, e.g. https://<vault>.vault.azure.net.")
        self.vault_url = vault_url.rstrip("/")
        self._primed = threading.Event()
        self._priming = threading.RLock()  # a method may call another
        if client is not None:
            self._client = client
            self._owns_client = False
            return
        options: dict[str, Any] = {"logging_enable": False}
        if connection_verify is not None:
            options["connection_verify"] = connection_verify
        self._client = SecretClient(self.vault_url, credential, **options)
        self._owns_client = True

    def __repr__(self) -> str:
        return f"SecretStore(vault_url={self.vault_url!r})"

    def _first_call_alone(self, call: Callable[[], _T]) -> _T:
        """Run the store's first call before any other. The SDK's first request to a vault goes
        without a token to learn where to get one (the challenge), then fetches it; lookups
        started together in a fresh process would each do both. After the first, they share the
        challenge and the token, and run side by side."""
        if not self._primed.is_set():
            with self._priming:
                if not self._primed.is_set():
                    try:
                        return call()
                    finally:
                        self._primed.set()
        return call()

    # Writes -----------------------------------------------------------------------------------

    @_names_service
    def set_secret(
        self,
        name: str,
        value: SecretStr,
        *,
        content_type: str,
        tags: Mapping[str, str],
        expires_on: datetime | None = None,
        not_before: datetime | None = None,
    ) -> StoredSecret:
        """Write a new version of ``name`` and return its properties (never the value).

        Each call makes a new version, so a retried step should first look for its own write with
        :meth:`find_version` (by ``request-id`` or ``CredentialId`` tag).

        Needs ``secrets/set`` (RBAC: Key Vault Secrets Officer).

        Raises
        ------
        ValueError
            ``name`` is not a valid Key Vault secret name (checked before any call).
        azure.core.exceptions.HttpResponseError
            Key Vault refused the write (a deleted secret of that name still in soft-delete answers
            409 ``ResourceExistsError``).
        """
        _check_name(name)
        secret = self._client.set_secret(
            name,
            value.get_secret_value(),
            content_type=content_type,
            tags=dict(tags),
            expires_on=expires_on,
            not_before=not_before,
        )
        stored = StoredSecret.from_properties(secret.properties)
        logger.info("Stored Key Vault secret %s version %s", stored.name, stored.version)
        return stored

    @_names_service
    def update_tags(self, name: str, version: str, tags: Mapping[str, str]) -> StoredSecret:
        """Replace the tags of one version (Key Vault replaces the whole set, it does not merge).

        Pass the full set, e.g. ``{**stored.tags, ROTATION_STATE_TAG: ROTATION_STATE_CURRENT}``.
        Needs ``secrets/set``.

        Raises
        ------
        ValueError
            ``version`` is empty (which Key Vault would read as "the current version").
        azure.core.exceptions.ResourceNotFoundError
            No such secret or version.
        """
        _check_name(name)
        self._check_version(version)
        properties = self._client.update_secret_properties(name, version, tags=dict(tags))
        return StoredSecret.from_properties(properties)

    @_names_service
    def disable_version(self, name: str, version: str) -> None:
        """Disable one version so it can no longer be read (it stays listed and can be re-enabled).

        Needs ``secrets/set``.

        Raises
        ------
        ValueError
            ``version`` is empty: disabling "the current version" by accident is never wanted.
        azure.core.exceptions.ResourceNotFoundError
            No such secret or version.
        """
        _check_name(name)
        self._check_version(version)
        self._client.update_secret_properties(name, version, enabled=False)
        logger.info("Disabled Key Vault secret %s version %s", name, version)

    # Reads ------------------------------------------------------------------------------------

    @_names_service
    def get_secret(self, name: str, version: str | None = None) -> tuple[SecretStr, StoredSecret]:
        """Return the value (wrapped) and the properties of a version, the current one by default.

        Needs ``secrets/get`` (RBAC: Key Vault Secrets User).

        Raises
        ------
        azure.core.exceptions.ResourceNotFoundError
            No such secret or version.
        azure.core.exceptions.HttpResponseError
            403 when the version is disabled.
        """
        _check_name(name)
        secret = self._client.get_secret(name, version)
        return SecretStr(secret.value or ""), StoredSecret.from_properties(secret.properties)

    @_names_service
    def list_versions(self, name: str) -> list[StoredSecret]:
        """Every version of ``name``, newest first; empty when the secret does not exist.

        Key Vault lists versions in no particular order and pages them, so this reads every page
        and sorts by creation time (then update time).

        Needs ``secrets/list``.
        """
        _check_name(name)
        try:
            versions = [
                StoredSecret.from_properties(p) for p in self._client.list_properties_of_secret_versions(name)
            ]
        except ResourceNotFoundError:
            return []
        versions.sort(key=_newest_first, reverse=True)
        return versions

    def find_version(self, name: str, *, tag: str, value: str) -> StoredSecret | None:
        """The newest version of ``name`` whose tag ``tag`` equals ``value``, or ``None``.

        ``None`` also when the secret does not exist. This is how a resumed step finds the version
        it wrote before a crash (``request-id``) and how rotation finds the version holding a given
        Graph credential (``CredentialId``). Needs ``secrets/list``.
        """
        for version in self.list_versions(name):
            if version.tags.get(tag) == value:
                return version
        return None

    @_names_service
    def delete_secret(self, name: str) -> None:
        """Soft-delete the secret (every version): recoverable for the vault's retention period.

        The product never purges. Gone already is fine. Needs ``secrets/delete`` (Secrets Officer).
        """
        _check_name(name)
        try:
            self._client.begin_delete_secret(name).wait()
        except ResourceNotFoundError:
            return
        logger.info("Soft-deleted Key Vault secret %s", name)

    @_names_service
    def recover_deleted_secret(self, name: str) -> None:
        """Bring a soft-deleted secret back with all its versions. Needs ``secrets/recover``."""
        _check_name(name)
        self._client.begin_recover_deleted_secret(name).wait()
        logger.info("Recovered Key Vault secret %s", name)

    @_names_service
    def get_deleted_secret(self, name: str) -> DeletedSecretInfo | None:
        """The soft-deleted secret ``name``, or None when none is waiting to be purged.

        A deleted secret keeps its name until it is purged, and Key Vault refuses a new secret of
        that name (409) meanwhile: the check step asks this before anything is made. Needs
        ``deletedSecrets/read`` (RBAC: Key Vault Secrets Officer).
        """
        _check_name(name)
        try:
            deleted = self._client.get_deleted_secret(name)
        except ResourceNotFoundError:
            return None
        return DeletedSecretInfo(name=deleted.name or name, deleted_on=deleted.deleted_date,
                                 scheduled_purge_date=deleted.scheduled_purge_date,
                                 tags=dict(deleted.properties.tags or {}))

    def list_secrets(self, *, tag: str | None = None, value: str | None = None) -> Iterator[StoredSecret]:
        """The current properties of each secret in the vault, optionally only those tagged so.

        With ``tag`` alone, secrets that have the tag; with ``tag`` and ``value``, those where it
        equals ``value``. ``list_secrets(tag=MANAGED_BY_TAG, value=MANAGED_BY_VALUE)`` is the
        rotation sweep's inventory. Entries carry no version (``version == ""``). Pages are read
        lazily. Needs ``secrets/list``.
        """
        if value is not None and tag is None:
            raise ValueError("list_secrets: a tag value was given without the tag name.")
        for properties in self._client.list_properties_of_secrets():
            item = StoredSecret.from_properties(properties)
            if tag is None or (tag in item.tags and (value is None or item.tags[tag] == value)):
                yield item

    # Lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying client's connections (unless it was passed in)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _check_version(version: str) -> None:
        if not version:
            raise ValueError("A secret version is required here; '' would address the current version.")
