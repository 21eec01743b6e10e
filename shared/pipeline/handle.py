"""A leased, lock-guarded handle on one request's state row, and its outbox.

Steps run on two threads (the account branch and the key branch) and a heartbeat renews the lease
on a third, so every change goes through :meth:`RecordHandle.save`, which applies it under a lock to
a copy, renews the lease and replaces the row with its ETag. A lost ETag race means another
delivery took the request over: this one stops (:class:`LeaseLostError`) rather than work on it at
the same time.

Events go into the row with the change that causes them (``save(..., events=...)``) and are sent
by :meth:`RecordHandle.publish_pending`; :func:`flush_outbox` does the same for a row nobody
holds (a finished request redelivered, the sweeper).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from shared.errors import StepInProgressError
from shared.logs import get_logger
from shared.state import ConcurrentUpdateError, OnboardingRecord
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from shared.clients.events import EventSink
    from shared.state import StateStore

logger = get_logger(__name__)

#: Conditional writes tried before a row that keeps changing is given up on.
_SAVE_ATTEMPTS = 5


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
        self._publish_lock = threading.Lock()
        self._lost = False

    @property
    def record(self) -> OnboardingRecord:
        with self._lock:
            return self._record.copy()

    @property
    def request_id(self) -> str:
        return self._record.request_id

    def result(self, key: str) -> str | None:
        with self._lock:
            return self._record.results.get(key)

    def save(self, mutate: Callable[[OnboardingRecord], None], *, keep_lease: bool = True,
             events: Iterable[dict[str, Any]] = ()) -> None:
        """Apply ``mutate`` and record ``events`` in one conditional write of the row.

        Others may write the row while this delivery holds it, in ways that do not take it over
        (another delivery confirming sent events, or recording a conflict event); on an ETag
        mismatch the row is read again and, if the lease is still this delivery's, the change is
        applied again to it. A lease taken over stops this delivery (:class:`LeaseLostError`).
        """
        events = list(events)
        with self._lock:
            base = self._record
            for _ in range(_SAVE_ATTEMPTS):
                if self._lost:
                    raise LeaseLostError(f"Request {base.request_id} was taken over by another delivery.")
                updated = base.copy()
                mutate(updated)
                for event in events:
                    updated.record_event(event)
                if keep_lease:
                    updated.lease_owner = self._owner
                    updated.lease_expires_at = iso(utcnow() + self._lease)
                try:
                    self._record = self._store.replace(updated)
                    return
                except ConcurrentUpdateError:
                    fresh = self._store.get(base.request_id)
                held = bool(self._record.lease_owner)
                if fresh is None or (held and fresh.lease_owner != self._owner):
                    self._lost = True
                else:
                    base = fresh
            self._lost = True
            raise LeaseLostError(f"Request {base.request_id} kept changing under this delivery; it stops.")

    def abandon(self) -> None:
        """Stop this delivery at its next save (a name lease it needs was taken over)."""
        with self._lock:
            self._lost = True

    def mark(self, **results: str) -> None:
        """Record results (or markers written before a creating call) at once."""
        self.save(lambda r: r.results.update(results))

    def forget(self, *keys: str) -> None:
        def apply(record: OnboardingRecord) -> None:
            for key in keys:
                record.results.pop(key, None)
        self.save(apply)

    def renew(self) -> None:
        """Extend the lease (the heartbeat); a row taken over in the meantime stops this delivery.
        A lease already released (the request finished or paused) is left released."""
        with self._lock:
            if self._record.lease_owner != self._owner or self._lost:
                return
            self.save(lambda _record: None)

    def publish_pending(self, sink: EventSink, *, sent: Callable[[], None] | None = None) -> bool:
        """Send the events waiting in the row, then take them out of it. False when sending
        failed: they stay for the next delivery or the sweeper. ``sent`` runs between the send and
        the write that confirms it (a test seam: a crash there re-sends the same ids later)."""
        with self._publish_lock:
            pending = self.record.outbox
            if not pending:
                return True
            if not _publish(sink, pending, self.request_id):
                return False
            if sent is not None:
                sent()
            ids = {str(event["id"]) for event in pending}
            try:
                with self._lock:
                    keep = bool(self._record.lease_owner)
                self.save(lambda r: r.confirm_sent(ids), keep_lease=keep)
            except LeaseLostError:
                return True  # sent; the new holder confirms them on its own flush
            return True


def _publish(sink: EventSink, documents: list[dict[str, Any]], request_id: str) -> bool:
    from azure.core.messaging import CloudEvent

    try:
        sink.publish(*(CloudEvent.from_dict(dict(document)) for document in documents))
    except Exception:
        logger.warning("request %s: %d event(s) not sent yet; they stay in the outbox", request_id,
                       len(documents), exc_info=True)
        return False
    return True


class OutboxRow(Protocol):
    """A row that carries an outbox: a request's state (shared.state.records) or an account's
    inventory row (shared.state.inventory)."""

    outbox: list[dict[str, Any]]

    @property
    def request_id(self) -> str: ...

    def copy(self) -> Self: ...

    def confirm_sent(self, event_ids: set[str]) -> None: ...


Row = TypeVar("Row", bound=OutboxRow)


class OutboxStore(Protocol[Row]):
    def replace(self, record: Row, /) -> Row: ...


def flush_outbox(store: OutboxStore[Row], sink: EventSink, record: Row, *,
                 reread: Callable[[], Row | None] | None = None) -> Row:
    """Send a row's pending events and confirm them, whoever else writes the row meanwhile.

    ``reread`` fetches the row again after a lost ETag race (a request's row by default). Returns
    the row as last written (or read). Sending twice is harmless: event ids are stable.
    """
    if not record.outbox or not _publish(sink, record.outbox, record.request_id):
        return record
    sent = {str(event["id"]) for event in record.outbox}
    fetch = reread or (lambda: store.get(record.request_id))  # type: ignore[attr-defined]
    current: Row | None = record
    for _ in range(5):
        if current is None:
            return record
        if not any(event["id"] in sent for event in current.outbox):
            return current
        updated = current.copy()
        updated.confirm_sent(sent)
        try:
            return store.replace(updated)
        except ConcurrentUpdateError:
            current = fetch()
    return current or record
