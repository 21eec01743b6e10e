"""Typed app settings, read once at the edge from a mapping (``os.environ`` in the app).

The names are the app settings of the product contract. Nothing in the domain reads the
environment itself; the triggers build :class:`Settings` and hand clients over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from shared.errors import OnboardingError

if TYPE_CHECKING:
    from collections.abc import Mapping


class SettingsError(OnboardingError):
    """A required app setting is missing or malformed; the message names each one."""


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Knobs of the onboarding pipeline, with their defaults.

    validation_budget_seconds: how long to keep retrying Palette's credential validation while a
        new client secret propagates through Entra ID (the real service takes 4-18 s).
    lease_seconds: how long a delivery holds a request before another may take over; the host's
        ``functionTimeout`` (10 min), after which the host has killed the invocation anyway.
    retry_delays_seconds: delays of the delayed copies scheduled when a dependency stays down
        past the in-call budget; after the last one the request is failed for good.
    busy_delay_seconds: when a duplicate delivery finds the request leased by another, it checks
        back after this long.
    validation_initial_delay_seconds: first backoff between credential validation attempts.
    """

    validation_budget_seconds: float = 60.0
    validation_initial_delay_seconds: float = 1.0
    lease_seconds: float = 600.0
    retry_delays_seconds: tuple[float, ...] = (30, 60, 120, 300, 600, 900)
    busy_delay_seconds: float = 30.0
    default_project: str = "Default"
    require_pcg_for_us_government: bool = True


@dataclass(frozen=True, kw_only=True)
class Settings:
    palette_endpoint: str
    palette_api_key: SecretStr
    key_vault_url: str
    service_bus_connection: str | None
    service_bus_namespace: str | None
    onboarding_queue: str
    events_topic: str
    storage_connection: str | None
    table_endpoint: str | None
    graph_endpoint: str
    graph_scope: str
    authority_host: str | None
    rotation_schedule: str
    rotation_threshold_days: int
    state_table: str = "onboardings"
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

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
        pipeline = _pipeline_config(env, problems)
        settings = cls(
            palette_endpoint=required("PALETTE_ENDPOINT").rstrip("/"),
            palette_api_key=SecretStr(required("PALETTE_API_KEY")),
            key_vault_url=required("KEY_VAULT_URL"),
            service_bus_connection=sb_connection,
            service_bus_namespace=sb_namespace,
            onboarding_queue=env.get("ONBOARDING_QUEUE", "onboarding"),
            events_topic=env.get("EVENTS_TOPIC", "events"),
            storage_connection=storage,
            table_endpoint=table_endpoint,
            graph_endpoint=graph_endpoint,
            graph_scope=env.get("GRAPH_SCOPE") or f"{graph_endpoint}/.default",
            authority_host=env.get("AZURE_AUTHORITY_HOST") or None,
            rotation_schedule=env.get("ROTATION_SCHEDULE", "0 0 3 * * *"),
            rotation_threshold_days=threshold,
            pipeline=pipeline,
        )
        if problems:
            raise SettingsError("App settings are incomplete: " + "; ".join(problems) + ".")
        return settings


def _pipeline_config(env: Mapping[str, str], problems: list[str]) -> PipelineConfig:
    """Optional overrides of :class:`PipelineConfig` (all have sane defaults)."""
    defaults = PipelineConfig()
    budget = defaults.validation_budget_seconds
    delays = defaults.retry_delays_seconds
    text = (env.get("VALIDATION_BUDGET_SECONDS") or "").strip()
    if text:
        try:
            budget = float(text)
            if not 0 <= budget <= 600:
                raise ValueError
        except ValueError:
            problems.append("VALIDATION_BUDGET_SECONDS must be a number of seconds between 0 and 600")
    text = (env.get("RETRY_DELAYS_SECONDS") or "").strip()
    if text:
        try:
            delays = tuple(float(part) for part in text.split(","))
            if not delays or any(d < 0 for d in delays):
                raise ValueError
        except ValueError:
            problems.append("RETRY_DELAYS_SECONDS must be a comma-separated list of seconds, e.g. 30,60,120")
    require_pcg = (env.get("PALETTE_REQUIRE_PCG_FOR_US_GOVERNMENT") or "true").strip().lower() != "false"
    return PipelineConfig(validation_budget_seconds=budget, retry_delays_seconds=delays,
                          require_pcg_for_us_government=require_pcg)
