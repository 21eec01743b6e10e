"""Pure-Python backend of the identity stand-in: tenants, app registrations and their passwords.

No HTTP here: the wire layer (``routes.py``) parses requests, calls these methods with typed
arguments and renders the domain errors below in Entra's or Graph's own format. State is scoped
like the real directory: every application lives in one tenant, and a caller only sees the
applications of its own tenant.

Secrets are never stored: each password keeps a salted SHA-256 digest of its ``secretText``, so
the value exists only in the ``addPassword`` answer, as in Entra ID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
import string
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

# Tenant names that are valid in an authority URL but identify no tenant.
MULTI_TENANT_ALIASES: Final = frozenset({"common", "organizations", "consumers"})

# Real secrets are 40 characters: a 3-character hint, a digit, ``Q~``, then 34 more.
_SECRET_HEAD = string.ascii_letters + string.digits
_SECRET_TAIL = string.ascii_letters + string.digits + "_.~-"
_DEFAULT_LIFETIME_YEARS = 2
_MAX_PROPAGATION_DELAY_SECONDS = 3600.0
_MAX_LIFETIME_DAYS = 36500
_MAX_REQUESTS_PER_SECOND = 10000.0
_MIN_REQUESTS_PER_SECOND = 0.01  # Retry-After stays under two minutes
# Graph's write limits in the identity and access service (Microsoft's "service-specific throttling
# limits"): per app in a tenant, and per tenant whatever the app.
GRAPH_APP_WRITE_LIMIT: Final = 3000
GRAPH_APP_WRITE_WINDOW_SECONDS: Final = 150.0
GRAPH_TENANT_WRITE_LIMIT: Final = 18000
GRAPH_TENANT_WRITE_WINDOW_SECONDS: Final = 300.0
_MAX_WRITE_LIMIT = 1_000_000
_MIN_WINDOW_SECONDS = 0.1
_MAX_WINDOW_SECONDS = 3600.0
# Graph sends x-ms-throttle-limit-percentage only above this share of a limit, and never above the cap.
USAGE_REPORTED_ABOVE: Final = 0.8
_USAGE_CAP = 1.8
WRITE_METHODS: Final = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# The id Graph gives every tenant's default app management policy (``/policies/defaultAppManagementPolicy``).
DEFAULT_APP_MANAGEMENT_POLICY_ID: Final = "00000000-0000-0000-0000-000000000000"
_Key = TypeVar("_Key")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class IdentityError(Exception):
    """Base of the backend's domain errors; the wire layer maps each class to a status."""


class TenantNotFoundError(IdentityError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"Tenant '{tenant_id}' not found.")
        self.tenant_id = tenant_id


class ApplicationNotFoundError(IdentityError):
    """No application with this appId or object id in the caller's tenant."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"Application '{reference}' not found.")
        self.reference = reference


class ApplicationConflictError(IdentityError):
    """The appId (or object id) already belongs to an application with other identifiers."""


class InvalidClientSecretError(IdentityError):
    """The secret matches no usable password (including ones not yet propagated)."""


class ExpiredClientSecretError(IdentityError):
    """The secret matches a password whose ``endDateTime`` has passed."""


class PasswordLimitError(IdentityError):
    def __init__(self, cap: int) -> None:
        super().__init__(f"The application already holds the maximum of {cap} passwords.")
        self.cap = cap


class PasswordLifetimeError(IdentityError):
    """A tenant's app management policy caps password lifetimes and the new one is longer."""

    def __init__(self, max_days: int, policy_id: str) -> None:
        super().__init__(f"Credential lifetime exceeds the max value allowed as per assigned policy '{policy_id}'.")
        self.max_days = max_days
        self.policy_id = policy_id


class PasswordNotFoundError(IdentityError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"No password credential found with keyId '{key_id}'.")
        self.key_id = key_id


class InvalidPasswordDatesError(IdentityError):
    """``endDateTime`` is in the past or not after ``startDateTime``."""


class InvalidConfigError(IdentityError, ValueError):
    """A run-time setting is out of range."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PasswordCredential:
    """One client secret of an application; ``digest`` is all that remains of the value."""

    key_id: str
    display_name: str | None
    hint: str
    start: dt.datetime
    end: dt.datetime
    created: dt.datetime
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def matches(self, secret: str) -> bool:
        candidate = hashlib.sha256(self.salt + secret.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(candidate, self.digest)


@dataclass(frozen=True)
class Application:
    """An app registration as the backend hands it out: an immutable snapshot.

    ``service_principal_id`` is the object id of the app's service principal in its tenant (made
    with the registration, as the portal and ``az ad sp create-for-rbac`` do): what Azure role
    assignments name, never the application's own object id or its appId.
    """

    object_id: str
    app_id: str
    tenant_id: str
    display_name: str
    created: dt.datetime
    passwords: tuple[PasswordCredential, ...] = ()
    service_principal_id: str = ""


@dataclass(frozen=True)
class IdentityConfig:
    """Run-time settings, each a limit real tenants impose; every one applies to every tenant.

    ``propagation_delay_seconds``: how long a new secret is refused. ``password_cap``: passwords per
    app. ``password_lifetime_max_days``: the tenant default app management policy's
    ``passwordLifetime`` restriction (``None``: no policy). ``graph_requests_per_second``: a plain
    token bucket per caller in a tenant (0: off). ``graph_write_limits``: Graph's own write limits,
    sliding windows of ``graph_app_write_limit`` writes per ``graph_app_write_window_seconds`` per
    caller in a tenant and ``graph_tenant_write_limit`` per ``graph_tenant_write_window_seconds`` per
    tenant (the real figures by default; tests shrink them).
    """

    propagation_delay_seconds: float = 0.0
    password_cap: int | None = None
    password_lifetime_max_days: int | None = None
    graph_requests_per_second: float = 0.0
    graph_write_limits: bool = False
    graph_app_write_limit: int = GRAPH_APP_WRITE_LIMIT
    graph_app_write_window_seconds: float = GRAPH_APP_WRITE_WINDOW_SECONDS
    graph_tenant_write_limit: int = GRAPH_TENANT_WRITE_LIMIT
    graph_tenant_write_window_seconds: float = GRAPH_TENANT_WRITE_WINDOW_SECONDS

    def __post_init__(self) -> None:
        delay = self.propagation_delay_seconds
        if not _is_number(delay) or not 0 <= delay <= _MAX_PROPAGATION_DELAY_SECONDS:
            raise InvalidConfigError(
                f"propagationDelaySeconds must be a number from 0 to {_MAX_PROPAGATION_DELAY_SECONDS:g}.")
        cap = self.password_cap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise InvalidConfigError("passwordCap must be a non-negative integer or null.")
        days = self.password_lifetime_max_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                                 or not 1 <= days <= _MAX_LIFETIME_DAYS):
            raise InvalidConfigError(f"passwordLifetimeMaxDays must be an integer from 1 to {_MAX_LIFETIME_DAYS} "
                                     "or null.")
        rate = self.graph_requests_per_second
        if not _is_number(rate) or not (rate == 0 or _MIN_REQUESTS_PER_SECOND <= rate <= _MAX_REQUESTS_PER_SECOND):
            raise InvalidConfigError(f"graphRequestsPerSecond must be 0 (off) or a number from "
                                     f"{_MIN_REQUESTS_PER_SECOND:g} to {_MAX_REQUESTS_PER_SECOND:g}.")
        if not isinstance(self.graph_write_limits, bool):
            raise InvalidConfigError("graphWriteLimits must be true or false.")
        for name, limit in (("graphAppWriteLimit", self.graph_app_write_limit),
                            ("graphTenantWriteLimit", self.graph_tenant_write_limit)):
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_WRITE_LIMIT:
                raise InvalidConfigError(f"{name} must be an integer from 1 to {_MAX_WRITE_LIMIT}.")
        for name, window in (("graphAppWriteWindowSeconds", self.graph_app_write_window_seconds),
                             ("graphTenantWriteWindowSeconds", self.graph_tenant_write_window_seconds)):
            if not _is_number(window) or not _MIN_WINDOW_SECONDS <= window <= _MAX_WINDOW_SECONDS:
                raise InvalidConfigError(f"{name} must be a number from {_MIN_WINDOW_SECONDS:g} to "
                                         f"{_MAX_WINDOW_SECONDS:g}.")

    @property
    def write_limits(self) -> WriteLimits | None:
        """The write windows in force, ``None`` when Graph's write limits are off."""
        if not self.graph_write_limits:
            return None
        return WriteLimits(self.graph_app_write_limit, float(self.graph_app_write_window_seconds),
                           self.graph_tenant_write_limit, float(self.graph_tenant_write_window_seconds))


def _is_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


class RequestThrottle:
    """Graph's throttling as a token bucket per caller (tenant and principal), ``rate`` per second.

    The bucket holds ``max(1, rate)`` requests, so a burst of that many passes and the rest wait.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (tokens, at)

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def take(self, key: tuple[str, str], rate: float) -> int | None:
        """Spend one request; ``None`` when it may go ahead, else whole seconds until it may."""
        if rate <= 0:
            return None
        capacity = max(1.0, rate)
        now = self._monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return None
            self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / rate))


@dataclass(frozen=True)
class WriteLimits:
    """The two write windows of Graph's identity and access service."""

    app_limit: int
    app_window_seconds: float
    tenant_limit: int
    tenant_window_seconds: float


@dataclass(frozen=True)
class WriteVerdict:
    """What the write windows say about one request.

    ``retry_after``: ``None`` when it may go ahead, else whole seconds until the full window has
    room. ``usage``: the larger share of a limit used, counting this request (for a refused one,
    the share it asked for, capped at 1.8 as Graph's header is). ``scope``: the window that refused
    it, or the fuller one (``Tenant_Application`` or ``Tenant``, as ``x-ms-throttle-scope`` names them).
    """

    retry_after: int | None
    usage: float
    scope: str

    @property
    def reported_usage(self) -> float | None:
        """The share Graph reports in ``x-ms-throttle-limit-percentage``: only above 0.8."""
        return self.usage if self.usage > USAGE_REPORTED_ABOVE else None


class WriteWindows:
    """Graph's write limits as sliding windows: per caller in a tenant, and per tenant.

    Each window keeps the times of the writes it let through, oldest first, so a request costs
    dropping the writes that left the window and one append: constant time however many writes a
    window holds. A refused write is not counted, so ``Retry-After`` is exact: when it has passed,
    the window has room. Reads are not counted but are told the usage.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._by_caller: dict[tuple[str, str], deque[float]] = {}
        self._by_tenant: dict[str, deque[float]] = {}

    def reset(self) -> None:
        with self._lock:
            self._by_caller.clear()
            self._by_tenant.clear()

    def take(self, tenant: str, caller: str, *, write: bool, limits: WriteLimits) -> WriteVerdict:
        """Count a write (when both windows have room) or look at the usage for a read."""
        now = self._monotonic()
        with self._lock:
            caller_log = _window(self._by_caller, (tenant, caller), now - limits.app_window_seconds)
            tenant_log = _window(self._by_tenant, tenant, now - limits.tenant_window_seconds)
            windows = (("Tenant_Application", caller_log, limits.app_limit, limits.app_window_seconds),
                       ("Tenant", tenant_log, limits.tenant_limit, limits.tenant_window_seconds))
            if write:
                waits = [(math.ceil(log[len(log) - limit] + window - now), scope)
                         for scope, log, limit, window in windows if len(log) >= limit]
                if waits:
                    wait, scope = max(waits)
                    usage = max((len(log) + 1) / limit for _, log, limit, _ in windows)
                    return WriteVerdict(max(1, wait), min(usage, _USAGE_CAP), scope)
                self._by_caller.setdefault((tenant, caller), caller_log).append(now)
                self._by_tenant.setdefault(tenant, tenant_log).append(now)
            usage, scope = max((len(log) / limit, scope) for scope, log, limit, _ in windows)
            return WriteVerdict(None, min(usage, _USAGE_CAP), scope)


def _window(logs: dict[_Key, deque[float]], key: _Key, expired_at: float) -> deque[float]:
    """The key's write times still inside the window (a fresh, unstored deque when it has none)."""
    log = logs.get(key)
    if log is None:
        return deque()
    while log and log[0] <= expired_at:
        log.popleft()
    if not log:
        del logs[key]  # keys without recent writes cost no memory
    return log


def generate_secret_text() -> str:
    """A secret shaped like Entra's: 40 characters, ``Q~`` at positions 4-5."""
    head = "".join(secrets.choice(_SECRET_HEAD) for _ in range(3)) + secrets.choice(string.digits)
    tail = "".join(secrets.choice(_SECRET_TAIL) for _ in range(34))
    return f"{head}Q~{tail}"


def _add_years(moment: dt.datetime, years: int) -> dt.datetime:
    """Same day ``years`` later (28 February for 29 February); ValueError past year 9999."""
    if moment.month == 2 and moment.day == 29:
        moment = moment.replace(day=28)
    return moment.replace(year=moment.year + years)


def is_guid(value: str) -> bool:
    """The canonical 8-4-4-4-12 form Graph uses for object ids and keyIds."""
    return _GUID.fullmatch(value) is not None


class IdentityBackend:
    """Tenants, applications and passwords, thread-safe and resettable.

    ``clock`` is injectable so the propagation delay and expiry can be tested without sleeping.
    """

    def __init__(self, *, managed_identity_tenant_id: str, managed_identity_client_id: str,
                 config: IdentityConfig | None = None,
                 clock: Callable[[], dt.datetime] = utc_now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.managed_identity_tenant_id = managed_identity_tenant_id.lower()
        self.managed_identity_client_id = managed_identity_client_id
        self._initial_config = config or IdentityConfig()
        self._config = self._initial_config
        self._clock = clock
        self._lock = threading.RLock()
        self._apps: dict[str, Application] = {}  # by lower-case appId
        self._seeds: list[Application] = []
        self.throttle = RequestThrottle(monotonic)
        self.write_windows = WriteWindows(monotonic)

    # -- lifecycle and settings -------------------------------------------------------------

    def reset(self) -> None:
        """Forget every application but the seeded ones (which lose their passwords) and restore
        the settings given at construction."""
        with self._lock:
            self._apps.clear()
            self._config = self._initial_config
            for seed in self._seeds:
                self.register_application(app_id=seed.app_id, tenant_id=seed.tenant_id,
                                          display_name=seed.display_name, object_id=seed.object_id,
                                          service_principal_id=seed.service_principal_id)
        self.throttle.reset()
        self.write_windows.reset()

    def seed_application(self, *, app_id: str, tenant_id: str, display_name: str | None = None) -> Application:
        """Register an application that :meth:`reset` brings back (same object id, no passwords)."""
        with self._lock:
            app, _ = self.register_application(app_id=app_id, tenant_id=tenant_id, display_name=display_name)
            self._seeds.append(app)
            return app

    @property
    def config(self) -> IdentityConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> IdentityConfig:
        """Change some settings (the fields of :class:`IdentityConfig`); validates all, changes all or none.

        Changing the write limits starts their windows afresh, so a test's small limits never meet
        writes counted under other ones.
        """
        with self._lock:
            before = self._config.write_limits
            self._config = replace(self._config, **changes)
            if self._config.write_limits != before:
                self.write_windows.reset()
            return self._config

    def now(self) -> dt.datetime:
        return self._clock()

    # -- tenants and applications -----------------------------------------------------------

    def tenant_exists(self, tenant_id: str) -> bool:
        tenant = tenant_id.lower()
        with self._lock:
            return tenant == self.managed_identity_tenant_id or any(
                app.tenant_id == tenant for app in self._apps.values())

    def register_application(self, *, app_id: str, tenant_id: str, display_name: str | None = None,
                             object_id: str | None = None,
                             service_principal_id: str | None = None) -> tuple[Application, bool]:
        """Create an app registration and its service principal; returns ``(app, created)`` and is
        idempotent on appId."""
        tenant = tenant_id.lower()
        with self._lock:
            existing = self._apps.get(app_id.lower())
            if existing is not None:
                if existing.tenant_id != tenant or (object_id and object_id.lower() != existing.object_id) or (
                        service_principal_id and service_principal_id.lower() != existing.service_principal_id):
                    raise ApplicationConflictError(
                        f"appId '{app_id}' is already registered in tenant '{existing.tenant_id}' "
                        f"with object id '{existing.object_id}'.")
                return existing, False
            taken = {app.object_id for app in self._apps.values()} | {
                app.service_principal_id for app in self._apps.values()}
            for label, value in (("objectId", object_id), ("servicePrincipalId", service_principal_id)):
                if value is not None:
                    if not is_guid(value):
                        raise ValueError(f"{label} '{value}' is not a GUID.")
                    if value.lower() in taken:
                        raise ApplicationConflictError(f"{label} '{value}' is already in use.")
            if object_id is not None and service_principal_id is not None and (
                    object_id.lower() == service_principal_id.lower()):
                raise ApplicationConflictError("objectId and servicePrincipalId must differ.")
            app = Application(
                object_id=(object_id or str(uuid.uuid4())).lower(), app_id=app_id, tenant_id=tenant,
                display_name=display_name if display_name is not None else app_id, created=self.now(),
                service_principal_id=(service_principal_id or str(uuid.uuid4())).lower())
            self._apps[app_id.lower()] = app
            return app, True

    def add_applications(self, tenant_id: str, applications: list[dict[str, Any]]) -> list[Application]:
        """Admin: app registrations with the passwords they hold already (``app_id``,
        ``display_name``, ``passwords``: ``key_id``, ``secret_text``, ``display_name``, ``start``,
        ``end``), all or none: what earlier onboardings left, for a benchmark of a large tenant. Only
        digests of the secrets are kept, as for :meth:`add_password`; appIds must be new. One pass,
        whatever the number of applications the tenant holds."""
        tenant = tenant_id.lower()
        now = self.now()
        made: list[Application] = []
        with self._lock:
            seen: set[str] = set()
            for item in applications:
                app_id = str(item["app_id"])
                if app_id.lower() in self._apps or app_id.lower() in seen:
                    raise ApplicationConflictError(f"appId '{app_id}' is already registered.")
                seen.add(app_id.lower())
                passwords = []
                for given in item.get("passwords") or []:
                    secret_text = str(given["secret_text"])
                    start, end = given.get("start") or now, given.get("end") or _add_years(now, _DEFAULT_LIFETIME_YEARS)
                    if end <= start:
                        raise InvalidPasswordDatesError("endDateTime must be later than startDateTime.")
                    salt = secrets.token_bytes(16)
                    passwords.append(PasswordCredential(
                        key_id=str(given.get("key_id") or uuid.uuid4()).lower(), display_name=given.get("display_name"),
                        hint=secret_text[:3], start=start, end=end, created=start, salt=salt,
                        digest=hashlib.sha256(salt + secret_text.encode("utf-8", "surrogatepass")).digest()))
                made.append(Application(object_id=str(uuid.uuid4()), app_id=app_id, tenant_id=tenant,
                                        display_name=str(item.get("display_name") or app_id), created=now,
                                        passwords=tuple(passwords), service_principal_id=str(uuid.uuid4())))
            self._apps.update((app.app_id.lower(), app) for app in made)
        return made

    def delete_application(self, app_id: str) -> bool:
        with self._lock:
            return self._apps.pop(app_id.lower(), None) is not None

    def list_applications(self, tenant_id: str) -> list[Application]:
        tenant = tenant_id.lower()
        with self._lock:
            return [app for app in self._apps.values() if app.tenant_id == tenant]

    def get_application(self, tenant_id: str, *, app_id: str | None = None,
                        object_id: str | None = None) -> Application:
        """Find an application of ``tenant_id`` by appId or object id (exactly one of them)."""
        with self._lock:
            return self._find(tenant_id.lower(), app_id, object_id)

    def _find(self, tenant: str, app_id: str | None, object_id: str | None) -> Application:
        if app_id is not None:
            app = self._apps.get(app_id.lower())
            if app is not None and app.tenant_id == tenant:
                return app
            raise ApplicationNotFoundError(app_id)
        if object_id is not None:
            wanted = object_id.lower()
            for app in self._apps.values():
                if app.object_id == wanted and app.tenant_id == tenant:
                    return app
            raise ApplicationNotFoundError(object_id)
        raise ValueError("Give app_id or object_id.")

    # -- passwords ----------------------------------------------------------------------------

    def add_password(self, tenant_id: str, *, app_id: str | None = None, object_id: str | None = None,
                     display_name: str | None = None, start: dt.datetime | None = None,
                     end: dt.datetime | None = None) -> tuple[PasswordCredential, str]:
        """Add a password; returns it with its ``secretText``, which is not kept anywhere."""
        now = self.now()
        start = start or now
        if end is None:
            try:
                end = _add_years(start, _DEFAULT_LIFETIME_YEARS)
            except ValueError:
                raise InvalidPasswordDatesError("startDateTime is too far in the future.") from None
        if end <= start:
            raise InvalidPasswordDatesError("endDateTime must be later than startDateTime.")
        if end <= now:
            raise InvalidPasswordDatesError("endDateTime must be in the future.")
        secret_text = generate_secret_text()
        salt = secrets.token_bytes(16)
        with self._lock:
            app = self._find(tenant_id.lower(), app_id, object_id)
            max_days = self._config.password_lifetime_max_days
            if max_days is not None and end - start > dt.timedelta(days=max_days):
                raise PasswordLifetimeError(max_days, DEFAULT_APP_MANAGEMENT_POLICY_ID)
            cap = self._config.password_cap
            if cap is not None and len(app.passwords) >= cap:
                raise PasswordLimitError(cap)
            password = PasswordCredential(
                key_id=str(uuid.uuid4()), display_name=display_name, hint=secret_text[:3], start=start,
                end=end, created=now, salt=salt,
                digest=hashlib.sha256(salt + secret_text.encode()).digest())
            self._apps[app.app_id.lower()] = replace(app, passwords=(*app.passwords, password))
        return password, secret_text

    def remove_password(self, tenant_id: str, key_id: str, *, app_id: str | None = None,
                        object_id: str | None = None) -> None:
        with self._lock:
            app = self._find(tenant_id.lower(), app_id, object_id)
            kept = tuple(p for p in app.passwords if p.key_id != key_id.lower())
            if len(kept) == len(app.passwords):
                raise PasswordNotFoundError(key_id)
            self._apps[app.app_id.lower()] = replace(app, passwords=kept)

    # -- sign-in ------------------------------------------------------------------------------

    def authenticate_client(self, tenant_id: str, client_id: str, client_secret: str) -> Application:
        """Check a client-credentials sign-in the way Entra ID does.

        A secret younger than the propagation delay, or not yet started, is refused exactly like a
        wrong one: for its first seconds the real service does not know it either.
        """
        tenant = tenant_id.lower()
        now = self.now()
        with self._lock:
            if not self.tenant_exists(tenant):
                raise TenantNotFoundError(tenant_id)
            app = self._find(tenant, client_id, None)
            delay = self._config.propagation_delay_seconds
        matched = [p for p in app.passwords if p.matches(client_secret)]
        usable = [p for p in matched
                  if (now - p.created).total_seconds() >= delay and p.start <= now]
        if not usable:
            raise InvalidClientSecretError(client_id)
        if all(p.end <= now for p in usable):
            raise ExpiredClientSecretError(client_id)
        return app

    # -- admin view ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view of everything except secret material (no digests, no hints)."""
        with self._lock:
            config = self._config
            apps = list(self._apps.values())
        tenants: dict[str, Any] = {self.managed_identity_tenant_id: {"applications": []}}
        for app in sorted(apps, key=lambda a: (a.tenant_id, a.app_id)):
            tenants.setdefault(app.tenant_id, {"applications": []})["applications"].append({
                "id": app.object_id,
                "appId": app.app_id,
                "servicePrincipalId": app.service_principal_id,
                "displayName": app.display_name,
                "createdDateTime": format_datetime(app.created),
                "passwordCredentials": [
                    {"keyId": p.key_id, "displayName": p.display_name,
                     "startDateTime": format_datetime(p.start), "endDateTime": format_datetime(p.end),
                     "createdDateTime": format_datetime(p.created)}
                    for p in app.passwords
                ],
            })
        return {
            "config": config_json(config),
            "managedIdentity": {"tenantId": self.managed_identity_tenant_id,
                                "clientId": self.managed_identity_client_id},
            "tenants": tenants,
        }


def config_json(config: IdentityConfig) -> dict[str, Any]:
    """The settings as ``/_devstack/config`` names them."""
    return {"propagationDelaySeconds": config.propagation_delay_seconds, "passwordCap": config.password_cap,
            "passwordLifetimeMaxDays": config.password_lifetime_max_days,
            "graphRequestsPerSecond": config.graph_requests_per_second,
            "graphWriteLimits": config.graph_write_limits,
            "graphAppWriteLimit": config.graph_app_write_limit,
            "graphAppWriteWindowSeconds": config.graph_app_write_window_seconds,
            "graphTenantWriteLimit": config.graph_tenant_write_limit,
            "graphTenantWriteWindowSeconds": config.graph_tenant_write_window_seconds}


def format_datetime(moment: dt.datetime) -> str:
    """Graph's form: UTC, ``Z``, seven fractional digits when there is a fraction."""
    moment = moment.astimezone(dt.UTC)
    base = moment.replace(tzinfo=None, microsecond=0).isoformat(timespec="seconds")
    return f"{base}.{moment.microsecond:06d}0Z" if moment.microsecond else f"{base}Z"


def parse_datetime(text: str) -> dt.datetime:
    """Parse an ISO 8601 date-time as Graph accepts it; a naive value is taken as UTC.

    Raises ``ValueError`` when ``text`` is not one.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        raise ValueError(f"not a date-time: {text!r}")
    moment = dt.datetime.fromisoformat(text.strip())  # takes Graph's seven fractional digits too
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"date-time out of range: {text!r}") from None
