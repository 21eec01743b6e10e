"""Typed app settings, read once at the edge from a mapping (``os.environ`` in the app).

The names are the app settings of the product contract. Nothing in the domain reads the
environment itself; the triggers build :class:`Settings` and hand clients over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from shared.errors import OnboardingError

if TYPE_CHECKING:
    from collections.abc import Mapping


class SettingsError(OnboardingError):
    """A required app setting is missing or malformed; the message names each one."""


@dataclass(frozen=True, kw_only=True)
class RotationConfig:
    """Knobs of secret rotation, with their defaults.

    threshold_days: ``ROTATION_THRESHOLD_DAYS``: a generated secret is due when its current
        version expires within this many days.
    min_age_minutes: ``ROTATION_MIN_AGE_MINUTES``: ... and is at least this old (no double
        rotation when the timer and Key Vault's event fire together; Entra has settled). A secret
        born inside the threshold (a ``validityDays`` shorter than it) is therefore rotated by each
        sweep once it is this old. An on-demand rotation ignores it.
    api_key_overlap_days: ``API_KEY_OVERLAP_DAYS``: a replaced Palette API key is deactivated this
        long after its replacement was stored (or after it was reactivated).
    api_key_delete_after_days: ``API_KEY_DELETE_AFTER_DAYS``: ... and deleted this long after it was
        deactivated; until then it can be reactivated.
    orphan_grace_hours: ``ORPHAN_GRACE_HOURS``: a Graph password the product made that is neither
        current nor previous is removed by the drift pass once it has been seen this long.
    expiry_warning_days: milestones (besides the threshold) at which an expiring secret the product
        does not rotate is announced again.
    drift_period_days: ``DRIFT_PERIOD_DAYS``: every managed account is looked at by the drift pass
        once in this period; each run of ``DRIFT_SCHEDULE`` looks at the slice that falls due.
    drift_slice_max: ``DRIFT_SLICE_MAX``: at most this many accounts per drift run (a run that
        was missed is caught up over the next runs, not in one burst).
    """

    threshold_days: int = 30
    min_age_minutes: float = 60.0
    api_key_overlap_days: float = 7.0
    api_key_delete_after_days: float = 14.0
    orphan_grace_hours: float = 24.0
    expiry_warning_days: tuple[int, ...] = (7, 1)
    drift_period_days: float = 7.0
    drift_slice_max: int = 600


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Knobs of the onboarding pipeline, with their defaults.

    validation_budget_seconds: how long to keep retrying Palette's credential validation while a
        new client secret propagates through Entra ID (the real service takes 4-18 s).
    validation_initial_delay_seconds: first backoff between credential validation attempts.
    lease_seconds: how long a delivery's leases (on the request's row and on its names) last
        without renewal. A heartbeat renews them every third of it while the work runs, so after
        a hard kill another delivery resumes the request within one lease period. Keep it at or
        under the queue's lock duration (1 min), so a redelivery after a kill finds it lapsed.
    max_run_seconds: the host's ``functionTimeout`` (host.json, 10 min): the heartbeat stops
        renewing after this long, since the host has ended the invocation by then.
    retry_delays_seconds: delays before a request resumes when a dependency stays down past the
        in-call budget; the budget is the request's, counted in its row. After the last delay the
        request fails for good.
    busy_delay_seconds: when two deliveries race to claim one row, the loser checks back after this.
    max_defects: unexpected errors (bugs) a request may hit before it is failed with
        ``internal_error`` instead of being redelivered again (the queue's ``maxDeliveryCount`` is 10).
    allowed_secret_prefix: ``KEY_VAULT_ALLOWED_SECRET_PREFIX``; see :class:`shared.models.fields.ParseOptions`.
    """

    validation_budget_seconds: float = 60.0
    validation_initial_delay_seconds: float = 1.0
    lease_seconds: float = 30.0
    max_run_seconds: float = 600.0
    retry_delays_seconds: tuple[float, ...] = (30, 60, 120, 300, 600, 900)
    busy_delay_seconds: float = 5.0
    max_defects: int = 3
    default_project: str = "Default"
    require_pcg_for_us_government: bool = True
    allowed_secret_prefix: str = ""
    rotation: RotationConfig = field(default_factory=RotationConfig)


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """Knobs of the sweeper that re-drives stuck requests (``SWEEP_SCHEDULE``, every 2 minutes).

    queued_after_seconds: a row left ``queued`` this long (the HTTP intake wrote it, the queue
        send failed) has its message sent again.
    grace_seconds: a lease or due time this far in the past, with no delivery taking the row
        over, means its message is gone: the sweeper sends a new one.
    max_redrives: re-drives of one request before it is failed as ``stuck``.
    """

    queued_after_seconds: float = 120.0
    grace_seconds: float = 60.0
    max_redrives: int = 5


@dataclass(frozen=True, kw_only=True)
class Settings:
    palette_endpoint: str
    palette_api_key: SecretStr
    key_vault_url: str
    service_bus_connection: str | None
    service_bus_namespace: str | None
    onboarding_queue: str
    #: ``BACKGROUND_QUEUE``: where timed rotations and API key renewals wait, so that onboardings,
    #: offboardings and rotations someone asked for never queue behind thousands of them.
    background_queue: str
    events_topic: str
    storage_connection: str | None
    table_endpoint: str | None
    graph_endpoint: str
    graph_scope: str
    authority_host: str | None
    #: ``RESOURCE_MANAGER_ENDPOINT`` and ``RESOURCE_MANAGER_SCOPE`` (the token's): where the
    #: onboarded principal's role assignments are read (``azure.permissions``); sovereign clouds
    #: and the local stack set their own.
    resource_manager_endpoint: str = "https://management.azure.com"
    resource_manager_scope: str = "https://management.azure.com/.default"
    #: ``REQUESTS_CA_BUNDLE``: requests trusts it by itself; the Service Bus clients are handed it,
    #: since their AMQP transport trusts certifi's bundle alone. Unset in Azure.
    ca_bundle: str | None = None
    rotation_schedule: str
    rotation_threshold_days: int
    sweep_schedule: str = "0 */2 * * * *"
    drift_schedule: str = "0 20 * * * *"
    require_client_principal: bool = False
    state_table: str = "onboardings"
    inventory_table: str = "accounts"
    #: The app-wide pace of Palette calls per resource prefix (``PALETTE_RATE_PER_SECOND``,
    #: ``PALETTE_RATE_BURST``), kept in this table for every instance (:mod:`shared.state.pace`).
    pace_table: str = "ratelimits"
    palette_rate_per_second: float = 9.0
    palette_burst: int = 4
    #: ``PALETTE_BACKGROUND_SHARE``: the share of each prefix's rate background work (drift, timed
    #: rotation, API key renewal) may use while interactive work is about (:mod:`shared.state.pace`).
    palette_background_share: float = 0.5
    #: ``GRAPH_WRITES_PER_SECOND``: the app-wide pace of Graph writes (Graph allows an app 3,000
    #: per 2.5 minutes per tenant, 20/s); slowed further while Graph says the app is above 80 %.
    graph_writes_per_second: float = 16.0
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Read every setting, collecting all problems into one :class:`SettingsError`."""
        problems: list[str] = []

        def required(name: str) -> str:
            value = (env.get(name) or "").strip()
            if not value:
                problems.append(f"{name} is not set")
            return value

        sb_connection = (env.get("ServiceBusConnection") or "").strip() or None
        sb_namespace = (env.get("ServiceBusConnection__fullyQualifiedNamespace") or "").strip() or None
        if sb_connection is None and sb_namespace is None:
            problems.append("ServiceBusConnection (or ServiceBusConnection__fullyQualifiedNamespace) is not set")
        storage = (env.get("AzureWebJobsStorage") or "").strip() or None
        table_endpoint = (env.get("AzureWebJobsStorage__tableServiceUri") or "").strip() or None
        if storage is None and table_endpoint is None:
            problems.append("AzureWebJobsStorage (or AzureWebJobsStorage__tableServiceUri) is not set")
        threshold_text = env.get("ROTATION_THRESHOLD_DAYS", "30").strip() or "30"
        threshold = 30
        try:
            threshold = int(threshold_text)
            if not 1 <= threshold <= 365:
                problems.append("ROTATION_THRESHOLD_DAYS must be between 1 and 365")
        except ValueError:
            problems.append("ROTATION_THRESHOLD_DAYS must be a whole number of days")
        graph_endpoint = (env.get("GRAPH_ENDPOINT") or "https://graph.microsoft.com").rstrip("/")
        resource_manager = (env.get("RESOURCE_MANAGER_ENDPOINT") or "https://management.azure.com").rstrip("/")
        pipeline = _pipeline_config(env, problems, threshold)
        # Under Palette's 10/s per prefix, with room for the stragglers of a slot.
        rate = _number(env, "PALETTE_RATE_PER_SECOND", 9.0, 0.1, 10, problems, unit="requests per second",
                       why=" (Palette allows 10 per resource prefix)")
        burst = _number(env, "PALETTE_RATE_BURST", 4, 1, 50, problems, unit="requests",
                        why=" (Palette takes 50 at once: 10/s with a burst queue of 5)")
        share = _number(env, "PALETTE_BACKGROUND_SHARE", 0.5, 0.05, 1, problems, unit="of the rate")
        graph_writes = _number(env, "GRAPH_WRITES_PER_SECOND", 16.0, 0.1, 20, problems, unit="writes per second",
                               why=" (Graph allows an app 3,000 writes per 2.5 minutes in a tenant)")
        settings = cls(
            palette_endpoint=required("PALETTE_ENDPOINT").rstrip("/"),
            palette_api_key=SecretStr(required("PALETTE_API_KEY")),
            key_vault_url=required("KEY_VAULT_URL"),
            service_bus_connection=sb_connection,
            service_bus_namespace=sb_namespace,
            onboarding_queue=env.get("ONBOARDING_QUEUE", "onboarding"),
            background_queue=env.get("BACKGROUND_QUEUE", "background"),
            events_topic=env.get("EVENTS_TOPIC", "events"),
            storage_connection=storage,
            table_endpoint=table_endpoint,
            graph_endpoint=graph_endpoint,
            graph_scope=env.get("GRAPH_SCOPE") or f"{graph_endpoint}/.default",
            authority_host=env.get("AZURE_AUTHORITY_HOST") or None,
            ca_bundle=env.get("REQUESTS_CA_BUNDLE") or None,
            resource_manager_endpoint=resource_manager,
            resource_manager_scope=env.get("RESOURCE_MANAGER_SCOPE") or f"{resource_manager}/.default",
            rotation_schedule=env.get("ROTATION_SCHEDULE", "0 0 3 * * *"),
            rotation_threshold_days=threshold,
            sweep_schedule=env.get("SWEEP_SCHEDULE", "0 */2 * * * *"),
            drift_schedule=env.get("DRIFT_SCHEDULE", "0 20 * * * *"),
            require_client_principal=requires_client_principal(env, problems),
            palette_rate_per_second=rate,
            palette_burst=int(burst),
            palette_background_share=share,
            graph_writes_per_second=graph_writes,
            pipeline=pipeline,
        )
        if problems:
            raise SettingsError("App settings are incomplete: " + "; ".join(problems) + ".")
        return settings


def _pipeline_config(env: Mapping[str, str], problems: list[str], threshold_days: int) -> PipelineConfig:
    """Optional overrides of :class:`PipelineConfig` (all have sane defaults)."""
    defaults = PipelineConfig()
    budget = _number(env, "VALIDATION_BUDGET_SECONDS", defaults.validation_budget_seconds, 0, 600, problems)
    lease = _number(env, "LEASE_SECONDS", defaults.lease_seconds, 1, 60, problems,
                    why=" (at most the queue's lock duration)")
    delays = defaults.retry_delays_seconds
    text = (env.get("RETRY_DELAYS_SECONDS") or "").strip()
    if text:
        try:
            delays = tuple(float(part) for part in text.split(","))
            if not delays or any(d < 0 for d in delays):
                raise ValueError
        except ValueError:
            problems.append("RETRY_DELAYS_SECONDS must be a comma-separated list of seconds, e.g. 30,60,120")
    require_pcg = _flag(env, "PALETTE_REQUIRE_PCG_FOR_US_GOVERNMENT", default=True, problems=problems)
    prefix = (env.get("KEY_VAULT_ALLOWED_SECRET_PREFIX") or "").strip()
    if prefix and not re.fullmatch(r"[0-9A-Za-z-]{1,100}", prefix):
        problems.append("KEY_VAULT_ALLOWED_SECRET_PREFIX must be letters, digits or '-' (the start of a Key Vault "
                        "secret name)")
    min_age = _number(env, "ROTATION_MIN_AGE_MINUTES", RotationConfig.min_age_minutes, 0, 7 * 24 * 60, problems,
                      unit="minutes")
    overlap = _number(env, "API_KEY_OVERLAP_DAYS", RotationConfig.api_key_overlap_days, 0, 90, problems, unit="days")
    delete_after = _number(env, "API_KEY_DELETE_AFTER_DAYS", RotationConfig.api_key_delete_after_days, 0, 365,
                           problems, unit="days")
    grace = _number(env, "ORPHAN_GRACE_HOURS", RotationConfig.orphan_grace_hours, 0, 24 * 30, problems, unit="hours")
    period = _number(env, "DRIFT_PERIOD_DAYS", RotationConfig.drift_period_days, 0.0001, 90, problems, unit="days")
    slice_max = _number(env, "DRIFT_SLICE_MAX", RotationConfig.drift_slice_max, 1, 100_000, problems, unit="accounts")
    rotation = RotationConfig(threshold_days=threshold_days, min_age_minutes=min_age, api_key_overlap_days=overlap,
                              api_key_delete_after_days=delete_after, orphan_grace_hours=grace,
                              drift_period_days=period, drift_slice_max=int(slice_max))
    return PipelineConfig(validation_budget_seconds=budget, retry_delays_seconds=delays, lease_seconds=lease,
                          require_pcg_for_us_government=require_pcg, allowed_secret_prefix=prefix, rotation=rotation)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float, problems: list[str], *,
            unit: str = "seconds", why: str = "") -> float:
    """An optional number (of ``unit``) between ``low`` and ``high``; a problem noted otherwise."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        problems.append(f"{name} must be a number of {unit} between {low:g} and {high:g}{why}")
        return default
    return value


def requires_client_principal(env: Mapping[str, str], problems: list[str] | None = None) -> bool:
    """``REQUIRE_CLIENT_PRINCIPAL``: refuse HTTP calls that come without Easy Auth's principal.

    Read on its own too, so the HTTP API can refuse a caller before any client is built.
    """
    return _flag(env, "REQUIRE_CLIENT_PRINCIPAL", default=False, problems=problems if problems is not None else [])


def _flag(env: Mapping[str, str], name: str, *, default: bool, problems: list[str]) -> bool:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text not in ("true", "false"):
        problems.append(f"{name} must be true or false")
        return default
    return text == "true"
