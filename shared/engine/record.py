"""A delivery's hold on its request's row: the one way it writes the row, its fences, its outbox.

**One write path.** Every change a delivery makes to its row (a step's result with its events, a
fence, a heartbeat, the final status) goes through :meth:`RecordHandle.write`: the change is
applied to a copy, the events go into the row's outbox, the events this delivery sent since the
last write are confirmed, the lease is renewed (or released), and the row is replaced if its ETag
still matches. A lost race is read again (:func:`shared.state.retry.update`): if the lease is
still this delivery's (someone only asked it to stop, or sent its pending events), the change is
applied again; otherwise the request was taken over and this delivery stops
(:class:`LeaseLostError`). Writes are one at a time (the branches of a stage share the row).

**Fences.** :meth:`RecordHandle.fence` is the write before a create or a destructive call: it
records what the calls right after it may make (:mod:`shared.made`) and proves, by the conditional
write itself, that nobody else holds the request at that moment; the lease it renews lasts
``lease_seconds``, so the calls that follow at once happen under it. The name leases are proved by
their last renewal (the heartbeat's): another request takes a name only once its lease has expired.
A fence, and every step, first :meth:`~RecordHandle.check`: a lost lease, a lease (row or names)
the heartbeat could not renew in time and that cannot be proved again, or a failure someone asked
for (:class:`StopRequested`) stops the delivery before its next call.

**Outbox.** Events are sent (:meth:`RecordHandle.publish`) only once written; that they were sent
is written with the next write, or at once when the lease is released. A crash in between sends
them again with the same ids, which the topic's duplicate detection drops.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING, Any

from shared.engine.failures import Failure, FailureKind
from shared.errors import OnboardingError, StepInProgressError
from shared.logs import get_logger
from shared.made import Made
from shared.state import retry
from shared.state.outbox import publish
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from shared.clients.events import EventSink
    from shared.engine.leases import NameLeases
    from shared.state import RequestRecord, StateStore

logger = get_logger(__name__)

#: A lease counts as held only until this share of it is left: room for clocks that disagree and
#: for the call that follows a check.
LEASE_MARGIN = 1 / 6


class LeaseLostError(StepInProgressError):
    """Another delivery took this request over, or this delivery could not renew its leases in
    time: stop without touching anything else."""


class StopRequested(OnboardingError):
    """A failure was asked for while this delivery held the request (``RequestRecord.stop``)."""

    def __init__(self, failure: Failure, discriminator: str) -> None:
        self.failure = failure
        self.discriminator = discriminator
        super().__init__(failure.message)


def requested_stop(record: RequestRecord) -> StopRequested | None:
    """The failure a row asks for, if any."""
    if not record.stop:
        return None
    failure = Failure(FailureKind.PERMANENT, record.stop.get("reason", "stopped"), record.stop.get("message", ""))
    return StopRequested(failure, record.stop.get("discriminator", "stop"))


class RecordHandle:
    def __init__(self, store: StateStore, record: RequestRecord, *, owner: str, lease_seconds: float,
                 names: NameLeases | None = None) -> None:
        self._store = store
        self._record = record
        self._owner = owner
        self._lease = dt.timedelta(seconds=lease_seconds)
        self._margin = lease_seconds * LEASE_MARGIN
        self._names = names
        self._lock = threading.RLock()
        self._publish_lock = threading.Lock()
        self._lost = False
        self._released = not record.lease_owner
        #: The row lease as this delivery last proved it (monotonic seconds).
        self._held_until = time.monotonic() + lease_seconds - self._margin
        #: Ids of events this delivery sent whose confirmation is not written yet.
        self._unconfirmed: set[str] = set()

    # -- reading ----------------------------------------------------------------------------------

    @property
    def record(self) -> RequestRecord:
        with self._lock:
            return self._record.copy()

    @property
    def request_id(self) -> str:
        return self._record.request_id

    def result(self, key: str) -> str | None:
        with self._lock:
            return self._record.results.get(key)

    def made(self, key: str) -> Made | None:
        """The entry ``key`` of what the request made (or may have made), if any."""
        with self._lock:
            entry = self._record.made.get(key)
        return Made.from_dict(entry) if entry else None

    # -- the one write path --------------------------------------------------------------------------

    def write(self, change: Callable[[RequestRecord], None] | None = None, *,
              events: Iterable[dict[str, Any]] = (), release: bool = False) -> None:
        """Apply ``change`` and record ``events`` in one conditional write (see the module's
        docstring); ``release`` gives the row's lease back (the request finished or waits).

        Raises
        ------
        LeaseLostError
            Another delivery holds the request now (nothing was written).
        """
        documents = list(events)
        with self._lock:
            if self._lost:
                raise LeaseLostError(f"Request {self.request_id} was taken over by another delivery.")
            confirmed = set(self._unconfirmed)
            holding = not self._released

            def apply(row: RequestRecord) -> None:
                if holding and row.lease_owner != self._owner:
                    raise LeaseLostError(f"Request {self.request_id} was taken over by another delivery.")
                if change is not None:
                    change(row)
                if confirmed:
                    row.confirm_sent(confirmed)
                for document in documents:
                    row.record_event(document)
                if release:
                    row.release_lease()
                elif holding:
                    row.lease_owner = self._owner
                    row.lease_expires_at = iso(utcnow() + self._lease)

            began = time.monotonic()
            try:
                written = retry.update(self._record, apply, write=self._store.replace,
                                       read=lambda: self._store.get(self.request_id))
            except LeaseLostError:
                self._lost = True
                raise
            if written is None:
                self._lost = True
                raise LeaseLostError(f"The state of request {self.request_id} vanished.")
            self._record = written
            self._unconfirmed -= confirmed
            if release:
                self._released = True
            elif holding:
                self._held_until = began + self._lease.total_seconds() - self._margin

    def check(self) -> None:
        """Go on only while this delivery provably holds the request. A lease the heartbeat could
        not renew in time is proved again (a conditional write, a renewal of the names), or the
        delivery stops here.

        Raises
        ------
        LeaseLostError
            The request (or one of its names) was taken over meanwhile.
        StopRequested
            Someone asked for the request to fail (the dead-letter handler, the sweeper).
        shared.errors.StateStoreError
            The lease could not be proved: the state table is unreachable.
        """
        with self._lock:
            if self._lost:
                raise LeaseLostError(f"Request {self.request_id} was taken over by another delivery.")
            now = time.monotonic()
            if not self._released and now > self._held_until:
                self.write()
            names = self._names
        stale = names is not None and now > names.held_until - self._margin
        if stale and names is not None and not names.extend(utcnow() + self._lease):
            self.abandon()
            raise LeaseLostError(f"Request {self.request_id}: a lease on its names was taken over; it stops.")
        with self._lock:
            stop = requested_stop(self._record)
        if stop is not None:
            raise stop

    def fence(self, **entries: Made) -> None:
        """The write before a create or a destructive call: record ``entries`` (what the calls that
        follow at once may make, under the keys the plan gives them) and prove the request is still
        this delivery's. Call it right before those calls, never before a wait.

        Raises
        ------
        LeaseLostError, StopRequested
            As :meth:`check`: the calls must not be made.
        """
        self.check()
        if entries:
            self.write(lambda row: row.made.update({key: entry.to_dict() for key, entry in entries.items()}))
        else:
            self.write()
        self.check()

    def renew(self) -> None:
        """The heartbeat's write: the lease renewed, nothing else (a released lease stays released)."""
        with self._lock:
            if self._released or self._lost:
                return
        self.write()

    def abandon(self) -> None:
        """Stop this delivery at its next check (a name lease it needs was taken over)."""
        with self._lock:
            self._lost = True

    # -- the outbox ---------------------------------------------------------------------------------

    def publish(self, sink: EventSink, *, sent: Callable[[], None] | None = None) -> bool:
        """Send the events waiting in the row that this delivery has not sent yet; their
        confirmation goes with the next write (at once when the lease is released). False when
        sending failed: they stay for the next delivery or the sweeper. ``sent`` runs between the
        send and the confirmation (a test seam: a crash there re-sends the same ids later)."""
        with self._publish_lock:
            with self._lock:
                pending = [e for e in self._record.outbox if str(e["id"]) not in self._unconfirmed]
            if pending and not publish(sink, pending, self.request_id):
                return False
            with self._lock:
                self._unconfirmed |= {str(event["id"]) for event in pending}
                owed = self._released and bool(self._unconfirmed) and not self._lost
            if sent is not None:
                sent()
            if owed:
                try:
                    self.write()
                except LeaseLostError:
                    pass  # sent; whoever holds the row now confirms them with its own writes
            return True
