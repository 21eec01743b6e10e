"""Readiness of the app, for ``GET /api/health``: settings present, state table, queue and topic reachable.

Each probe names what it looked at and how it went, never a value (no connection string, no key).
The probes run at once with one time limit, so an unreachable dependency makes the answer slow by
at most that limit, not by the SDKs' own retries.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: Seconds every probe together may take before the ones still running count as unavailable.
PROBE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Probe:
    name: str
    outcome: str  # ok, missing, unavailable, skipped
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "outcome": self.outcome, "detail": self.detail}


DEPENDENCIES = ("stateTable", "queue", "backgroundQueue", "topic")


def readiness(env: Mapping[str, str]) -> list[Probe]:
    """One probe for the settings, then one per dependency (skipped when the settings are incomplete)."""
    from functions import dependencies
    from shared.clients.queue import ServiceBusSenderHandle
    from shared.settings import Settings, SettingsError

    try:
        Settings.from_mapping(env)
    except SettingsError as exc:
        return [Probe("settings", "missing", str(exc)),
                *(Probe(name, "skipped", "not probed: the settings are incomplete") for name in DEPENDENCIES)]
    deps = dependencies.get()
    events = deps.clients.events
    probes: dict[str, Callable[[], str]] = {"stateTable": deps.clients.state.check_reachable,
                                            "queue": deps.queue.check_reachable,
                                            "backgroundQueue": deps.background_queue.check_reachable}
    if isinstance(events, ServiceBusSenderHandle):
        probes["topic"] = events.check_reachable
    found = [Probe("settings", "ok", "every required setting is present")]
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="readiness")
    try:
        futures = {name: pool.submit(probe) for name, probe in probes.items()}
        wait(futures.values(), timeout=PROBE_TIMEOUT_SECONDS)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for name, future in futures.items():
        if not future.done():
            found.append(Probe(name, "unavailable", f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"))
        elif (error := future.exception()) is not None:
            # The exception's type only: SDK messages can carry endpoints and, in rare paths, more.
            found.append(Probe(name, "unavailable", f"could not be reached ({type(error).__name__})"))
        else:
            found.append(Probe(name, "ok", future.result()))
    return found
