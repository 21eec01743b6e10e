"""The warmup trigger, run by the local host at start as the platform runs it when it adds an
instance: the worker's first onboarding then finds its clients built and its first calls made."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import requests

from tests.test_http_api import hosted_app

if TYPE_CHECKING:
    from devstack.stack import Stack


def _vault_requests(stack: Stack) -> list[dict[str, object]]:
    assert stack.keyvault is not None
    answer = requests.get(f"{stack.keyvault.url}/_devstack/requests", verify=stack.settings["REQUESTS_CA_BUNDLE"],
                          timeout=10)
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def test_the_warm_up_builds_the_clients_and_makes_the_first_calls_before_any_trigger_runs(stack: Stack) -> None:
    from functions import dependencies
    from functions.dependencies import WARM_UP_PROBE

    dependencies.reset()
    before = len(_vault_requests(stack))
    with hosted_app(stack, warm_up=True):
        deps = dependencies.get()
        probes = [r for r in _vault_requests(stack)[before:] if WARM_UP_PROBE in str(r["path"])]
        # The read went through with a token (after the vault's challenge, unless this process met
        # it before: the SDK keeps challenges per vault): the first onboarding has both.
        assert probes and probes[-1]["status"] == 404 and [r["status"] for r in probes[:-1]] in ([], [401])
        deadline = time.monotonic() + 30
        while deps.clients.key_pairs.ready < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert deps.clients.key_pairs.ready == 2
        assert deps.warm_up() == []  # a second warm-up finds everything ready


def test_a_host_without_the_warm_up_builds_nothing_until_a_call(stack: Stack) -> None:
    from functions import dependencies

    dependencies.reset()
    with hosted_app(stack):
        assert dependencies._current is None
