"""The Key Vault secrets backend: versions, attributes and soft delete, with no HTTP in sight.

One backend is one vault. It keeps Key Vault's semantics that our code depends on: every set makes a
new version, names are case-insensitive but keep the case they were first written with, a disabled
version's value cannot be read, deletes are soft (the name stays taken until it is recovered or
purged), and purge protection forbids purging. It is immediately consistent, so the SDK's delete
and recover pollers finish on their first poll. The clock is injectable so retention can be tested
without waiting 90 days.
"""

from __future__ import annotations

import enum
import re
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from devstack.keyvault.errors import (
    BadParameter,
    DeletedButRecoverable,
    DeletedSecretNotFound,
    InvalidName,
    PurgeProtected,
    SecretDisabled,
    SecretNotFound,
)

if TYPE_CHECKING:
    from collections.abc import Callable

RECOVERABLE_DAYS = 90
MAX_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE_CHARS = 255
# 9999-12-31T23:59:59Z: later timestamps cannot be turned into a datetime by clients.
MAX_TIMESTAMP = 253402300799

_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9a-f]{32}")
_T = TypeVar("_T")


class Unset(enum.Enum):
    """Marks an update field that was not given, as distinct from one given as ``None``."""

    UNSET = 0


UNSET = Unset.UNSET


def check_name(name: str) -> str:
    """Return ``name`` when Key Vault accepts it as an object name; raise BadParameter otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidName(name)
    return name


def _check_timestamp(label: str, value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_TIMESTAMP:
        raise BadParameter(f"The value of attribute '{label}' is out of range.")
    return value


def _check_content_type(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_CONTENT_TYPE_CHARS:
        raise BadParameter(f"The content type cannot be longer than {MAX_CONTENT_TYPE_CHARS} characters.")
    return value


@dataclass(frozen=True)
class SecretVersion:
    """One immutable version; an update replaces it with a changed copy."""

    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int


@dataclass(frozen=True)
class SecretRecord:
    """A secret's name (as first written) with one of its versions; what callers get back."""

    name: str
    version: SecretVersion


@dataclass(frozen=True)
class DeletedRecord:
    """A soft-deleted secret as Key Vault shows it: its latest version plus the deletion dates."""

    name: str
    version: SecretVersion
    deleted_date: int
    scheduled_purge_date: int


@dataclass(frozen=True)
class Page(Generic[_T]):
    """One page of a listing; ``next_marker`` is the sort key the next page starts at."""

    items: list[_T]
    next_marker: str | None


@dataclass
class _Secret:
    name: str
    versions: dict[str, SecretVersion] = field(default_factory=dict)  # insertion order = age
    latest: str = ""

    def record(self, version: str | None = None) -> SecretRecord:
        return SecretRecord(self.name, self.versions[version or self.latest])


@dataclass
class _Deleted:
    secret: _Secret
    deleted_date: int
    scheduled_purge_date: int

    def record(self) -> DeletedRecord:
        return DeletedRecord(self.secret.name, self.secret.versions[self.secret.latest],
                             self.deleted_date, self.scheduled_purge_date)


def _page(keys: list[str], marker: str | None, limit: int) -> tuple[list[str], str | None]:
    """Slice sorted ``keys`` from ``marker``; a marker (not an offset) survives concurrent changes."""
    start = [k for k in keys if marker is None or k >= marker]
    return start[:limit], (start[limit] if len(start) > limit else None)


class KeyVaultBackend:
    """The secrets of one vault. Thread-safe: the HTTP server calls it from many threads."""

    def __init__(self, *, purge_protection: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.purge_protection = purge_protection
        self._clock = clock
        self._lock = threading.RLock()
        self._secrets: dict[str, _Secret] = {}
        self._deleted: dict[str, _Deleted] = {}
        self._seeds: list[tuple[str, str, str | None]] = []

    @property
    def recovery_level(self) -> str:
        return "Recoverable" if self.purge_protection else "Recoverable+Purgeable"

    def reset(self) -> None:
        """Forget every secret but the seeded ones, which come back as one fresh version each."""
        with self._lock:
            self._secrets.clear()
            self._deleted.clear()
            for name, value, content_type in self._seeds:
                self.set_secret(name, value, content_type=content_type)

    def seed_secret(self, name: str, value: str, *, content_type: str | None = None) -> SecretRecord:
        """Store a secret that :meth:`reset` brings back."""
        with self._lock:
            record = self.set_secret(name, value, content_type=content_type)
            self._seeds.append((name, value, content_type))
            return record

    def _now(self) -> int:
        return int(self._clock())

    def now(self) -> int:
        """The vault's clock, Unix seconds: what ``created`` and ``updated`` are stamped with."""
        return self._now()

    def _purge_due(self) -> None:
        # Key Vault purges on its own once the retention period has passed; do it lazily.
        now = self._now()
        for key in [k for k, d in self._deleted.items() if d.scheduled_purge_date <= now]:
            del self._deleted[key]

    def _live(self, name: str) -> _Secret:
        secret = self._secrets.get(check_name(name).lower())
        if secret is None:
            raise SecretNotFound(name)
        return secret

    def _deleted_secret(self, name: str) -> _Deleted:
        deleted = self._deleted.get(check_name(name).lower())
        if deleted is None:
            raise DeletedSecretNotFound(name)
        return deleted

    @staticmethod
    def _version_of(secret: _Secret, name: str, version: str | None) -> str:
        if not version:
            return secret.latest
        if version.lower() not in secret.versions:
            raise SecretNotFound(f"{name}/{version}")
        return version.lower()

    # -- secrets ------------------------------------------------------------------------------

    def set_secret(self, name: str, value: str, *, content_type: str | None = None,
                   tags: dict[str, str] | None = None, enabled: bool | None = None,
                   not_before: int | None = None, expires: int | None = None) -> SecretRecord:
        """Add a new version (creating the secret when the name is new); it becomes the latest."""
        check_name(name)
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise BadParameter(f"The secret value cannot be larger than {MAX_VALUE_BYTES} bytes.")
        _check_content_type(content_type)
        _check_timestamp("nbf", not_before)
        _check_timestamp("exp", expires)
        with self._lock:
            self._purge_due()
            key = name.lower()
            if key in self._deleted:
                raise DeletedButRecoverable(self._deleted[key].secret.name)
            secret = self._secrets.setdefault(key, _Secret(name))
            now = self._now()
            version = uuid.uuid4().hex
            secret.versions[version] = SecretVersion(
                version=version, value=value, content_type=content_type,
                tags=dict(tags) if tags is not None else None,
                enabled=True if enabled is None else enabled,
                not_before=not_before, expires=expires, created=now, updated=now,
            )
            secret.latest = version
            return secret.record()

    def get_secret(self, name: str, version: str | None = None) -> SecretRecord:
        """The latest (or a given) version with its value; a disabled version is refused (403).

        Expired and not-yet-valid versions are returned: Key Vault treats ``exp``/``nbf`` as
        information for the caller and does not enforce them on get.
        """
        with self._lock:
            self._purge_due()
            secret = self._live(name)
            record = secret.record(self._version_of(secret, name, version))
        if not record.version.enabled:
            raise SecretDisabled()
        return record

    def update_secret(self, name: str, version: str | None = None, *,
                      content_type: str | Unset | None = UNSET, tags: dict[str, str] | Unset | None = UNSET,
                      enabled: bool | Unset = UNSET, not_before: int | Unset | None = UNSET,
                      expires: int | Unset | None = UNSET) -> SecretRecord:
        """Change a version's properties (never its value); fields left UNSET keep their value."""
        changes: dict[str, Any] = {}
        if not isinstance(content_type, Unset):
            changes["content_type"] = _check_content_type(content_type)
        if not isinstance(tags, Unset):
            changes["tags"] = dict(tags) if tags is not None else None
        if not isinstance(enabled, Unset):
            changes["enabled"] = enabled
        if not isinstance(not_before, Unset):
            changes["not_before"] = _check_timestamp("nbf", not_before)
        if not isinstance(expires, Unset):
            changes["expires"] = _check_timestamp("exp", expires)
        with self._lock:
            self._purge_due()
            secret = self._live(name)
            key = self._version_of(secret, name, version)
            secret.versions[key] = replace(secret.versions[key], updated=self._now(), **changes)
            return secret.record(key)

    def list_secrets(self, *, marker: str | None = None, limit: int = 25) -> Page[SecretRecord]:
        """Live secrets by name, each with its latest version's properties."""
        with self._lock:
            self._purge_due()
            keys, next_marker = _page(sorted(self._secrets), marker, limit)
            return Page([self._secrets[k].record() for k in keys], next_marker)

    def add_versions(self, items: list[dict[str, Any]]) -> list[SecretRecord]:
        """Admin: one new version per item (``name``, ``value``, ``content_type``, ``tags``,
        ``expires``, ``not_before``, and ``version`` to name it), all or none: what earlier writes
        left in the vault, for a benchmark of a large inventory. Each is checked as :meth:`set_secret`
        checks it; no event is sent (Event Grid announces only what happens while it watches)."""
        now = self._now()
        staged: list[tuple[str, str, SecretVersion]] = []
        with self._lock:
            self._purge_due()
            named: set[tuple[str, str]] = set()
            for item in items:
                name, value = check_name(str(item.get("name", ""))), item.get("value")
                if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
                    raise BadParameter(f"The value of secret '{name}' must be a string of at most {MAX_VALUE_BYTES} "
                                       "bytes.")
                key = name.lower()
                if key in self._deleted:
                    raise DeletedButRecoverable(self._deleted[key].secret.name)
                version = str(item.get("version") or uuid.uuid4().hex)
                existing = self._secrets.get(key)
                if (not _VERSION.fullmatch(version) or (key, version) in named
                        or (existing is not None and version in existing.versions)):
                    raise BadParameter(f"Version '{version}' of secret '{name}' is not 32 lower-case hex digits, "
                                       "or is taken.")
                named.add((key, version))
                tags = item.get("tags")
                staged.append((key, name, SecretVersion(
                    version=version, value=value, content_type=_check_content_type(item.get("content_type")),
                    tags=dict(tags) if tags is not None else None, enabled=True,
                    not_before=_check_timestamp("nbf", item.get("not_before")),
                    expires=_check_timestamp("exp", item.get("expires")), created=now, updated=now)))
            records = []
            for key, name, version_made in staged:
                secret = self._secrets.setdefault(key, _Secret(name))
                secret.versions[version_made.version] = version_made
                secret.latest = version_made.version
                records.append(secret.record())
            return records

    def current_versions(self) -> list[SecretRecord]:
        """Every live secret with its current (latest) version: what Key Vault's expiry events watch."""
        with self._lock:
            self._purge_due()
            return [secret.record() for _, secret in sorted(self._secrets.items())]

    def list_versions(self, name: str, *, marker: str | None = None, limit: int = 25) -> Page[SecretRecord]:
        """A live secret's versions, ordered by version id (as Key Vault does, not by age).

        An unknown name lists nothing rather than failing.
        """
        check_name(name)
        with self._lock:
            self._purge_due()
            secret = self._secrets.get(name.lower())
            if secret is None:
                return Page([], None)
            keys, next_marker = _page(sorted(secret.versions), marker, limit)
            return Page([secret.record(k) for k in keys], next_marker)

    # -- soft delete ----------------------------------------------------------------------------

    def delete_secret(self, name: str) -> DeletedRecord:
        """Soft-delete every version; the name stays reserved until recovered, purged or expired."""
        with self._lock:
            self._purge_due()
            secret = self._live(name)
            now = self._now()
            deleted = _Deleted(secret, now, now + RECOVERABLE_DAYS * 86400)
            del self._secrets[name.lower()]
            self._deleted[name.lower()] = deleted
            return deleted.record()

    def get_deleted_secret(self, name: str) -> DeletedRecord:
        with self._lock:
            self._purge_due()
            return self._deleted_secret(name).record()

    def list_deleted_secrets(self, *, marker: str | None = None, limit: int = 25) -> Page[DeletedRecord]:
        with self._lock:
            self._purge_due()
            keys, next_marker = _page(sorted(self._deleted), marker, limit)
            return Page([self._deleted[k].record() for k in keys], next_marker)

    def purge_deleted_secret(self, name: str) -> None:
        """Remove a soft-deleted secret for good; refused when the vault has purge protection."""
        with self._lock:
            self._purge_due()
            self._deleted_secret(name)
            if self.purge_protection:
                raise PurgeProtected()
            del self._deleted[name.lower()]

    def recover_deleted_secret(self, name: str) -> SecretRecord:
        """Bring a soft-deleted secret back with all its versions and attributes."""
        with self._lock:
            self._purge_due()
            deleted = self._deleted_secret(name)
            del self._deleted[name.lower()]
            self._secrets[name.lower()] = deleted.secret
            return deleted.secret.record()

    # -- admin ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything but the values, for the admin API (values never leave through it)."""

        def versions(secret: _Secret) -> list[dict[str, Any]]:
            return [{"version": v.version, "enabled": v.enabled, "nbf": v.not_before, "exp": v.expires,
                     "created": v.created, "updated": v.updated, "contentType": v.content_type,
                     "tags": v.tags} for v in secret.versions.values()]

        with self._lock:
            self._purge_due()
            return {
                "purgeProtection": self.purge_protection,
                "recoveryLevel": self.recovery_level,
                "secrets": [{"name": s.name, "latestVersion": s.latest, "versions": versions(s)}
                            for _, s in sorted(self._secrets.items())],
                "deletedSecrets": [{"name": d.secret.name, "latestVersion": d.secret.latest,
                                    "deletedDate": d.deleted_date,
                                    "scheduledPurgeDate": d.scheduled_purge_date,
                                    "versions": versions(d.secret)}
                                   for _, d in sorted(self._deleted.items())],
            }
