"""One request pace for the whole app, shared by every instance through a Table row per prefix.

Palette limits requests per resource prefix and source (10/s, with a burst queue of 5 seconds'
worth: 50 at once). An instance's own token
bucket cannot keep the *app* under that once several instances call Palette (Flex Consumption
scales out on queue length), so each call takes a slot from a schedule kept in the app's storage
account: the row of the prefix holds the time of its next free slot; a caller moves it on by one
interval with an ETag-conditioned replace and sleeps until its slot. Whatever the number of
instances, the app sends at most ``burst`` calls at once and ``rate_per_second`` after that.

Within one process the callers of a prefix take slots one at a time (a lock), so the process does
not race itself; the row is read once and then known from its own writes until another instance
moves it (a 412, then it is read again).

A call should not wait for that Table round trip, so each process keeps one slot per prefix taken
ahead: a call uses it (sleeping until its time if it is still ahead) and a new one is taken off the
call's path, by one worker that takes them one after another (a burst of calls then does not add a
burst of Table writes competing with the calls for the interpreter). A slot is used at most
:data:`MAX_LATE_SECONDS` after its time, else it is dropped and a slot is taken now. Late use can
only bunch calls by what the schedule gave out in that span: at 9/s, burst 4 and 5 s, at most
4 + 9 x 5 = 49 calls at once, within the 50 Palette's burst queue takes; over any longer span the app
stays at 9/s.

Time is wall-clock time, which Azure keeps within a few milliseconds between hosts. When the table
cannot be reached the call goes ahead with a warning: pacing is a courtesy to Palette, whose 429s
are still retried.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.clients.http import check_pace
from shared.errors import StateStoreError
from shared.state import retry
from shared.state.store import ConcurrentUpdateError, ensure_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)

#: Rows of one schedule share a partition, so a prefix's row is one point read.
PARTITION = "palette"
#: Conditional writes tried before a caller gives up on the schedule and goes ahead.
_ATTEMPTS = 20
#: How long after its time a slot taken ahead may still be used (see above).
MAX_LATE_SECONDS = 5.0


@dataclass
class _Known:
    next_free: float
    etag: str | None  # None: the row does not exist yet

    def copy(self) -> _Known:
        return _Known(self.next_free, self.etag)


class SharedPace:
    """Slots per key (a Palette resource prefix) from a schedule every instance shares.

    :param table: the ``ratelimits`` table of the app's storage account (created on first use).
    :param rate_per_second: slots per second for the whole app, per key.
    :param burst: slots that may be taken at once after a quiet spell.
    """

    def __init__(self, table: TableClient, rate_per_second: float, burst: int, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        check_pace(rate_per_second, burst)
        self.rate_per_second = float(rate_per_second)
        self.burst = int(burst)
        self._interval = 1.0 / self.rate_per_second
        self._table = table
        self._clock = clock
        self._sleep = sleep
        self._ready = False
        self._known: dict[str, _Known | None] = {}
        self._ahead: dict[str, float] = {}  # per key: a slot taken ahead, not yet used
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._taker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palette-pace")

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str, rate_per_second: float,
                               burst: int) -> SharedPace:
        from azure.data.tables import TableClient

        return cls(TableClient.from_connection_string(connection_string, table_name=table_name),
                   rate_per_second, burst)

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, table_name: str, rate_per_second: float,
                      burst: int) -> SharedPace:
        from azure.data.tables import TableClient

        return cls(TableClient(endpoint, table_name=table_name, credential=credential), rate_per_second, burst)

    def close(self) -> None:
        self._taker.shutdown(wait=False, cancel_futures=True)
        self._table.close()

    def acquire(self, key: str) -> float:
        """Block until this caller's slot for ``key``; return the seconds waited."""
        lock = self._lock_of(key)
        with lock:
            slot = self._ahead.pop(key, None)
            if slot is None or slot < self._clock() - MAX_LATE_SECONDS:
                slot = self._take(key)
        try:
            self._taker.submit(self._take_ahead, key)
        except RuntimeError:  # closed: nothing is kept ahead any more
            pass
        wait = slot - self._clock() if slot is not None else 0.0
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def _lock_of(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _take_ahead(self, key: str) -> None:
        """Keep one slot for the next call of ``key`` (none when the table failed)."""
        with self._lock_of(key):
            if key in self._ahead:
                return
            try:
                slot = self._take(key)
            except Exception:  # noqa: BLE001 - the process is closing its clients: nothing to keep
                return
            if slot is not None:
                self._ahead[key] = slot

    def taken_ahead(self, key: str) -> float | None:
        """The slot kept for the next call of ``key``, if one is (for tests and diagnostics)."""
        with self._lock_of(key):
            return self._ahead.get(key)

    def _take(self, key: str) -> float | None:
        """Move the key's schedule on by one slot; the slot's time (None: the table failed)."""
        row_key = _row_key(key)
        taken: list[float] = []

        def move_on(row: _Known) -> None:
            slot = max(row.next_free, self._clock() - (self.burst - 1) * self._interval)
            taken[:] = [slot]
            row.next_free = slot + self._interval

        def write(row: _Known) -> _Known:
            entity = {"PartitionKey": PARTITION, "RowKey": row_key, "NextFree": row.next_free}
            try:
                if row.etag is None:
                    written = self._table.create_entity(entity)
                else:
                    from azure.data.tables import UpdateMode

                    written = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=row.etag,
                                                        match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError) as exc:
                raise ConcurrentUpdateError(f"The pace of {key} moved on.") from exc  # read it again
            return _Known(row.next_free, str(written.get("etag") or "") or None)

        try:
            self._ensure()
            known = self._known.get(key) or self._read(row_key)
            self._known[key] = retry.update(known, move_on, write=write, read=lambda: self._read(row_key),
                                            attempts=_ATTEMPTS)
            return taken[0]
        except ConcurrentUpdateError:
            self._known[key] = None
            logger.warning("The shared Palette pace for %s kept changing; this call goes ahead unpaced.", key)
        except (AzureError, StateStoreError) as exc:
            self._known[key] = None
            logger.warning("The shared Palette pace could not be read (%s); this call goes ahead unpaced.",
                           type(exc).__name__)
        return None

    def _read(self, row_key: str) -> _Known:
        try:
            entity = self._table.get_entity(PARTITION, row_key)
        except ResourceNotFoundError:
            return _Known(0.0, None)
        return _Known(float(entity.get("NextFree") or 0.0), str(entity.metadata.get("etag") or "") or None)

    def _ensure(self) -> None:
        if not self._ready:
            ensure_table(self._table, "the Palette pace table")
            self._ready = True


def _row_key(key: str) -> str:
    """A prefix as a RowKey (which may not hold ``/``): ``/v1/cloudaccounts`` -> ``v1-cloudaccounts``."""
    return re.sub(r"[^0-9A-Za-z_-]+", "-", key).strip("-") or "root"
