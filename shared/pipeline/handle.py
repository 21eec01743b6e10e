"""A leased, lock-guarded handle on one request's state row.

Steps run on two threads (the account branch and the key branch), so every change goes through
:meth:`RecordHandle.save`, which applies it under a lock to a copy, renews the lease and replaces
the row with its ETag. A lost ETag race means another delivery took the request over: this one
stops (:class:`LeaseLostError`) rather than work on it at the same time.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING

from shared.errors import StepInProgressError
from shared.state import ConcurrentUpdateError, OnboardingRecord, StepOutcome, StepRecord
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.state import StateStore


class LeaseLostError(StepInProgressError):
    """Another delivery took this request over; stop without touching anything else."""


class RecordHandle:
    def __init__(self, store: StateStore, record: OnboardingRecord, *, owner: str,
                 lease_seconds: float) -> None:
        self._store = store
        self._record = record
        self._owner = owner
        self._lease = dt.timedelta(seconds=lease_seconds)
        self._lock = threading.RLock()

    @property
    def record(self) -> OnboardingRecord:
        with self._lock:
            return self._record.copy()

    def result(self, key: str) -> str | None:
        with self._lock:
            return self._record.results.get(key)

    def save(self, mutate: Callable[[OnboardingRecord], None], *, keep_lease: bool = True) -> None:
        with self._lock:
            updated = self._record.copy()
            mutate(updated)
            if keep_lease:
                updated.lease_owner = self._owner
                updated.lease_expires_at = iso(utcnow() + self._lease)
            try:
                self._record = self._store.replace(updated)
            except ConcurrentUpdateError as exc:
                raise LeaseLostError(
                    f"Request {updated.request_id} was taken over by another delivery; this one stops."
                ) from exc

    def set_results(self, **results: str) -> None:
        self.save(lambda r: r.results.update(results))

    def step(self, name: str, outcome: StepOutcome, detail: str = "", **results: str) -> None:
        def apply(record: OnboardingRecord) -> None:
            record.steps[name] = StepRecord(outcome, iso(utcnow()), detail)
            record.results.update(results)
            if outcome is StepOutcome.STARTED:
                record.current_step = name
        self.save(apply)

    def emit_once(self, event_id: str, publish: Callable[[], None]) -> None:
        """Publish an event unless this request already did; the id is stable, so a crash between
        publishing and recording re-sends the same id, which the topic's duplicate detection and
        consumers drop."""
        with self._lock:
            if event_id in self._record.emitted:
                return
        publish()
        # Recording it must not take back a lease already released (the failure just recorded).
        with self._lock:
            held = bool(self._record.lease_owner)
        self.save(lambda r: r.emitted.append(event_id), keep_lease=held)
