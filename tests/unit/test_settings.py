"""App settings: every problem named at once, optional knobs with their documented defaults."""

from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError, requires_client_principal

BASE = {
    "PALETTE_ENDPOINT": "https://api.example.com", "PALETTE_API_KEY": "key", "KEY_VAULT_URL": "https://v.example",
    "ServiceBusConnection__fullyQualifiedNamespace": "sb.example", "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def test_defaults() -> None:
    settings = Settings.from_mapping(BASE)
    assert settings.pipeline.lease_seconds == 30
    assert settings.pipeline.allowed_secret_prefix == ""
    assert settings.sweep_schedule == "0 */2 * * * *"
    assert settings.require_client_principal is False


def test_optional_knobs_are_read() -> None:
    settings = Settings.from_mapping({**BASE, "LEASE_SECONDS": "5", "KEY_VAULT_ALLOWED_SECRET_PREFIX": "ops-",
                                      "REQUIRE_CLIENT_PRINCIPAL": "TRUE", "SWEEP_SCHEDULE": "0 * * * * *"})
    assert settings.pipeline.lease_seconds == 5
    assert settings.pipeline.allowed_secret_prefix == "ops-"
    assert settings.require_client_principal is True
    assert settings.sweep_schedule == "0 * * * * *"


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as problems:
        Settings.from_mapping({**BASE, "LEASE_SECONDS": "600", "VALIDATION_BUDGET_SECONDS": "nan",
                               "KEY_VAULT_ALLOWED_SECRET_PREFIX": "not a prefix!", "REQUIRE_CLIENT_PRINCIPAL": "yes"})
    text = str(problems.value)
    for name in ("LEASE_SECONDS", "VALIDATION_BUDGET_SECONDS", "KEY_VAULT_ALLOWED_SECRET_PREFIX",
                 "REQUIRE_CLIENT_PRINCIPAL"):
        assert name in text


def test_the_principal_requirement_is_readable_on_its_own() -> None:
    assert requires_client_principal({"REQUIRE_CLIENT_PRINCIPAL": "true"}) is True
    assert requires_client_principal({}) is False
    assert requires_client_principal({"REQUIRE_CLIENT_PRINCIPAL": "maybe"}) is False
