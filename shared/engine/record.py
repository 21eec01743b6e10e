"""A leased, lock-guarded handle on one request's state row, and its outbox.

Steps run on two threads (the account branch and the key branch) and a heartbeat renews the lease
on a third, so every change goes through :meth:`RecordHandle.save`, which applies it under a lock to
a copy, renews the lease and replaces the row with its ETag. A lost ETag race means another
delivery took the request over: this one stops (:class:`LeaseLostError`) rather than work on it at
the same time.

Events go into the row with the change that causes them (``save(..., events=...)``) and are sent
by :meth:`RecordHandle.publish_pending`; :func:`flush_outbox` does the same for a row nobody
holds (a finished request redelivered, the sweeper). While the delivery holds the row, that events
were sent is written with its next write (the next step's result, a marker, a heartbeat) rather
than with a write of its own: each step then costs one write, not two, on the onboarding's
critical path. A crash before that write only means the same events are sent again, with the
same ids, which the topic's duplicate detection drops. Once the lease is released (the request
finished, failed or paused) the confirmation is written at once.

Two more writes stay off the critical path:

* :meth:`RecordHandle.stage` keeps a result a crash may lose (that of a step that only read, and
  runs again) in what this delivery sees, and writes it with the next write;
* :meth:`RecordHandle.save_behind` leaves a result's write (and its publishing) to
  :meth:`~RecordHandle.settle`, which the delivery calls once its next reads are on their way; the
  next :meth:`~RecordHandle.save` settles first, so writes keep their order.
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
        #: The row as this delivery sees it: the last write, with the staged changes applied.
        self._view = record
        self._staged: list[Callable[[OnboardingRecord], None]] = []
        #: Results, their events and what follows their write, left to :meth:`settle`.
        self._behind: list[tuple[Callable[[OnboardingRecord], None], list[dict[str, Any]],
                                 Callable[[], None] | None]] = []
        self._settle_lock = threading.Lock()
        self._owner = owner
        self._lease = dt.timedelta(seconds=lease_seconds)
        self._lock = threading.RLock()
        self._publish_lock = threading.Lock()
        self._lost = False
        #: Ids of events sent by this delivery whose confirmation is not written yet.
        self._unconfirmed: set[str] = set()

    @property
    def record(self) -> OnboardingRecord:
        with self._lock:
            return self._view.copy()

    @property
    def request_id(self) -> str:
        return self._record.request_id

    def result(self, key: str) -> str | None:
        with self._lock:
            return self._view.results.get(key)

    def stage(self, mutate: Callable[[OnboardingRecord], None]) -> None:
        """Apply ``mutate`` to what this delivery sees now and write it with the next write.

        Only for what a crash may lose: a step that only read runs again on the next delivery.
        Never for events (they are sent only once written) or markers (they must be written
        before the call they announce)."""
        with self._lock:
            self._staged.append(mutate)
            self._view = self._seen(self._record)

    def save_behind(self, mutate: Callable[[OnboardingRecord], None], *,
                    events: Iterable[dict[str, Any]] = (), then: Callable[[], None] | None = None) -> None:
        """Leave ``mutate`` and ``events`` to one write at :meth:`settle` (then ``then``, such as
        publishing them), seen at once: a run's last results, written while the run reads them
        back rather than before. Other writes meanwhile leave them out, so a step's result is
        never written without its events."""
        with self._lock:
            self._behind.append((mutate, list(events), then))
            self._view = self._seen(self._record)

    def _seen(self, record: OnboardingRecord) -> OnboardingRecord:
        """``record`` with the staged changes and those left for :meth:`settle` applied."""
        if not self._staged and not self._behind:
            return record
        view = record.copy()
        for mutate in self._staged:
            mutate(view)
        for mutate, _events, _then in self._behind:
            mutate(view)
        return view

    def settle(self) -> None:
        """Write what :meth:`save_behind` left (in one write), then run what follows each. Every
        last write settles first, so nothing lands after it."""
        with self._settle_lock:
            with self._lock:
                behind, self._behind = self._behind, []
            if not behind:
                return

            def apply(record: OnboardingRecord) -> None:
                for mutate, _events, _then in behind:
                    mutate(record)
            try:
                self._write(apply, events=[event for _, events, _ in behind for event in events])
            except BaseException:
                with self._lock:  # still owed: the next settle (or the failure's save) tries again
                    self._behind[:0] = behind
                raise
            for _, _events, then in behind:
                if then is not None:
                    then()

    def save(self, mutate: Callable[[OnboardingRecord], None], *, keep_lease: bool = True,
             events: Iterable[dict[str, Any]] = (), settle: bool = True) -> None:
        """Apply ``mutate`` and record ``events`` in one conditional write of the row, with the
        staged changes; with ``settle``, after what :meth:`save_behind` left (a last write:
        nothing may land after it). Writes in between need not: each holds every staged change.

        Others may write the row while this delivery holds it, in ways that do not take it over
        (another delivery confirming sent events, or recording a conflict event); on an ETag
        mismatch the row is read again and, if the lease is still this delivery's, the change is
        applied again to it. A lease taken over stops this delivery (:class:`LeaseLostError`).
        """
        if settle:
            self.settle()
        self._write(mutate, keep_lease=keep_lease, events=events)

    def _write(self, mutate: Callable[[OnboardingRecord], None], *, keep_lease: bool = True,
               events: Iterable[dict[str, Any]] = ()) -> None:
        events = list(events)
        with self._lock:
            base = self._record
            for _ in range(_SAVE_ATTEMPTS):
                if self._lost:
                    raise LeaseLostError(f"Request {base.request_id} was taken over by another delivery.")
                updated = base.copy()
                for staged in self._staged:
                    staged(updated)
                mutate(updated)
                confirmed = set(self._unconfirmed)
                if confirmed:
                    updated.confirm_sent(confirmed)
                for event in events:
                    updated.record_event(event)
                if keep_lease:
                    updated.lease_owner = self._owner
                    updated.lease_expires_at = iso(utcnow() + self._lease)
                try:
                    self._record = self._store.replace(updated)
                    self._staged.clear()
                    self._view = self._seen(self._record)
                    self._unconfirmed -= confirmed
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
        """Record results (or markers written before a creating call) at once; nothing to write
        when the row holds them already (markers the claim wrote)."""
        with self._lock:
            if all(self._record.results.get(k) == v for k, v in results.items()):
                return
        self._write(lambda r: r.results.update(results))

    def forget(self, *keys: str) -> None:
        def apply(record: OnboardingRecord) -> None:
            for key in keys:
                record.results.pop(key, None)
        self._write(apply)

    def renew(self) -> None:
        """Extend the lease (the heartbeat); a row taken over in the meantime stops this delivery.
        A lease already released (the request finished or paused) is left released."""
        with self._lock:
            if self._record.lease_owner != self._owner or self._lost:
                return
            self._write(lambda _record: None)  # not waiting for writes behind: they renew it too

    def publish_pending(self, sink: EventSink, *, sent: Callable[[], None] | None = None) -> bool:
        """Send the events waiting in the row, then take them out of it (with the next write while
        the lease is held, at once otherwise: see above). False when sending failed: they stay for
        the next delivery or the sweeper. ``sent`` runs between the send and the confirmation (a
        test seam: a crash there re-sends the same ids later)."""
        with self._publish_lock:
            with self._lock:
                pending = [e for e in self._record.outbox if str(e["id"]) not in self._unconfirmed]
            if pending:
                if not _publish(sink, pending, self.request_id):
                    return False
                with self._lock:
                    self._unconfirmed |= {str(event["id"]) for event in pending}
            if sent is not None:
                sent()  # this point's events are out (another branch's send may have taken them along)
            with self._lock:
                released = self._record.lease_owner != self._owner
            if released:
                self.flush()
            return True

    def flush(self) -> None:
        """Write the confirmation of sent events now, if one is owed (the lease left as it is)."""
        with self._lock:
            if not self._unconfirmed or self._lost:
                return
            held = self._record.lease_owner == self._owner
        try:
            self._write(lambda _record: None, keep_lease=held)
        except LeaseLostError:
            pass  # sent; the new holder confirms them on its own flush


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
