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

Two classes of work share a schedule. **Interactive** work (onboarding, offboarding, a rotation
someone asked for) takes slots as above. **Background** work (the drift pass, timed rotation, API
key renewal; :func:`background_work` marks it) never takes a slot ahead, and takes one only

* when the schedule is idle enough that the burst is left to interactive work (a background call
  uses a slot only once ``burst - 1`` slots are free before it), so an onboarding arriving in the
  middle of a drift pass finds its calls go out at once; and
* while interactive work has been seen in the last :data:`INTERACTIVE_WINDOW_SECONDS`, at most at
  ``background_share`` of the rate (the row's ``BackgroundNextFree``); when none has, at all of it.

A background caller that may not take a slot yet sleeps until it may (without holding the process's
lock) and looks again: its waiting reserves nothing that interactive work then queues behind.

A row may also be slowed down for a while (:meth:`SharedPace.slow_down`): Graph says when a caller
has used more than 80 % of its limit, and every instance then goes slower until that passes.

Time is wall-clock time, which Azure keeps within a few milliseconds between hosts. When the table
cannot be reached the call goes ahead with a warning: pacing is a courtesy to Palette, whose 429s
are still retried.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.clients.http import check_pace
from shared.errors import StateStoreError
from shared.state import retry
from shared.state.store import ConcurrentUpdateError, ensure_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: Rows of one schedule share a partition, so a prefix's row is one point read.
PARTITION = "palette"
#: Conditional writes tried before a caller gives up on the schedule and goes ahead.
_ATTEMPTS = 20
#: How long after its time a slot taken ahead may still be used (see above).
MAX_LATE_SECONDS = 5.0
#: Interactive work took a slot this recently: background work keeps to its share.
INTERACTIVE_WINDOW_SECONDS = 10.0
#: The longest a background caller sleeps before it looks at the schedule again.
MAX_BACKGROUND_NAP = 1.0

#: The key of Graph's writes in their own shared pace (an app writes to one tenant's applications).
GRAPH_WRITES = "graph-writes"
#: Graph writes that may go at once after a quiet spell.
GRAPH_BURST = 10
#: How long a warning from Graph that the app is near its limit slows its writes down.
GRAPH_SLOW_SECONDS = 30.0

_background: contextvars.ContextVar[bool] = contextvars.ContextVar("background_work", default=False)


@contextlib.contextmanager
def background_work(background: bool = True) -> Iterator[None]:
    """Calls made inside are background work in every shared pace (see the module's docstring)."""
    token = _background.set(background)
    try:
        yield
    finally:
        _background.reset(token)


def is_background() -> bool:
    return _background.get()


def in_background(function: Callable[P, T]) -> Callable[P, T]:
    """Run ``function`` as background work (the drift pass, the sweep)."""
    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with background_work():
            return function(*args, **kwargs)
    return run


@dataclass
class _Known:
    next_free: float
    etag: str | None  # None: the row does not exist yet
    background_next_free: float = 0.0
    interactive_at: float = 0.0
    slow_until: float = 0.0
    slow_factor: float = 1.0

    def copy(self) -> _Known:
        return replace(self)


class SharedPace:
    """Slots per key (a Palette resource prefix) from a schedule every instance shares.

    :param table: the ``ratelimits`` table of the app's storage account (created on first use).
    :param rate_per_second: slots per second for the whole app, per key.
    :param burst: slots that may be taken at once after a quiet spell.
    """

    def __init__(self, table: TableClient, rate_per_second: float, burst: int, *, background_share: float = 0.5,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        check_pace(rate_per_second, burst)
        if not 0 < background_share <= 1:
            raise ValueError("background_share must be more than 0 and at most 1.")
        self.rate_per_second = float(rate_per_second)
        self.burst = int(burst)
        self.background_share = float(background_share)
        self._interval_base = 1.0 / self.rate_per_second
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
                               burst: int, **options: Any) -> SharedPace:
        from azure.data.tables import TableClient

        return cls(TableClient.from_connection_string(connection_string, table_name=table_name),
                   rate_per_second, burst, **options)

    @classmethod
    def from_endpoint(cls, endpoint: str, credential: Any, table_name: str, rate_per_second: float,
                      burst: int, **options: Any) -> SharedPace:
        from azure.data.tables import TableClient

        return cls(TableClient(endpoint, table_name=table_name, credential=credential), rate_per_second, burst,
                   **options)

    def close(self) -> None:
        self._taker.shutdown(wait=False, cancel_futures=True)
        self._table.close()

    def acquire(self, key: str) -> float:
        """Block until this caller's slot for ``key``; return the seconds waited."""
        if is_background():
            return self._acquire_background(key)
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

    def _acquire_background(self, key: str) -> float:
        """Block until background work may take a slot for ``key``; return the seconds waited."""
        began = self._clock()
        while True:
            with self._lock_of(key):
                ready = self._take(key, background=True)
            if ready is None:
                return self._clock() - began
            self._sleep(min(max(ready - self._clock(), 0.001), MAX_BACKGROUND_NAP))

    def slow_down(self, key: str, factor: float, seconds: float) -> None:
        """Go at ``factor`` of the rate for ``key`` for ``seconds``, in every instance (a slower
        factor or a later end than the row holds wins)."""
        until = self._clock() + seconds
        factor = min(max(factor, 0.05), 1.0)
        row_key = _row_key(key)

        def slower(row: _Known) -> None:
            if row.slow_until >= until - 1 and row.slow_factor <= factor:
                raise retry.Unchanged  # as slow already: nothing to write
            row.slow_until, row.slow_factor = max(row.slow_until, until), min(
                factor, row.slow_factor if row.slow_until > self._clock() else 1.0)

        with self._lock_of(key):
            try:
                self._ensure()
                known = self._known.get(key) or self._read(row_key)
                self._known[key] = retry.update(known, slower, write=lambda row: self._write(key, row),
                                                read=lambda: self._read(row_key), attempts=_ATTEMPTS)
            except (ConcurrentUpdateError, AzureError, StateStoreError) as exc:
                self._known[key] = None
                logger.warning("The shared pace of %s could not be slowed down (%s).", key, type(exc).__name__)

    def _interval(self, row: _Known, now: float) -> float:
        return self._interval_base / (row.slow_factor if row.slow_until > now else 1.0)

    def _take(self, key: str, *, background: bool = False) -> float | None:
        """Move the key's schedule on by one slot; the slot's time (None: the table failed).

        For background work: None once a slot was taken (or the table failed), else the time to
        look again (nothing was taken)."""
        row_key = _row_key(key)
        taken: list[float] = []
        later: list[float] = []

        def move_on(row: _Known) -> None:
            now = self._clock()
            interval = self._interval(row, now)
            slot = max(row.next_free, now - (self.burst - 1) * interval)
            if background:
                # The burst stays interactive work's; while it is about, background keeps to its share.
                may_at = row.next_free + (self.burst - 1) * interval
                if now - row.interactive_at < INTERACTIVE_WINDOW_SECONDS:
                    may_at = max(may_at, row.background_next_free)
                if may_at > now:
                    later[:] = [may_at]
                    raise retry.Unchanged
                row.background_next_free = now + interval / self.background_share
            else:
                row.interactive_at = max(row.interactive_at, slot)
            taken[:] = [slot]
            row.next_free = slot + interval

        try:
            self._ensure()
            known = self._known.get(key) or self._read(row_key)
            self._known[key] = retry.update(known, move_on, write=lambda row: self._write(key, row),
                                            read=lambda: self._read(row_key), attempts=_ATTEMPTS)
            if background:
                return later[0] if later else None
            return taken[0]
        except ConcurrentUpdateError:
            self._known[key] = None
            logger.warning("The shared Palette pace for %s kept changing; this call goes ahead unpaced.", key)
        except (AzureError, StateStoreError) as exc:
            self._known[key] = None
            logger.warning("The shared Palette pace could not be read (%s); this call goes ahead unpaced.",
                           type(exc).__name__)
        return None

    def _write(self, key: str, row: _Known) -> _Known:
        entity = {"PartitionKey": PARTITION, "RowKey": _row_key(key), "NextFree": row.next_free,
                  "BackgroundNextFree": row.background_next_free, "InteractiveAt": row.interactive_at,
                  "SlowUntil": row.slow_until, "SlowFactor": row.slow_factor}
        try:
            if row.etag is None:
                written = self._table.create_entity(entity)
            else:
                from azure.data.tables import UpdateMode

                written = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=row.etag,
                                                    match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError) as exc:
            raise ConcurrentUpdateError(f"The pace of {key} moved on.") from exc  # read it again
        return replace(row, etag=str(written.get("etag") or "") or None)

    def _read(self, row_key: str) -> _Known:
        try:
            entity = self._table.get_entity(PARTITION, row_key)
        except ResourceNotFoundError:
            return _Known(0.0, None)
        return _Known(float(entity.get("NextFree") or 0.0), str(entity.metadata.get("etag") or "") or None,
                      background_next_free=float(entity.get("BackgroundNextFree") or 0.0),
                      interactive_at=float(entity.get("InteractiveAt") or 0.0),
                      slow_until=float(entity.get("SlowUntil") or 0.0),
                      slow_factor=float(entity.get("SlowFactor") or 1.0))

    def _ensure(self) -> None:
        if not self._ready:
            ensure_table(self._table, "the Palette pace table")
            self._ready = True


def graph_usage_heard(pace: SharedPace, share: float) -> None:
    """Graph said the app has used ``share`` of its limit (it says so past 0.8): every instance
    writes slower for :data:`GRAPH_SLOW_SECONDS`, at half the pace at 0.8 and down to a tenth at 1.0
    and past it, so that the limit is not reached and no 429 comes."""
    if share > 0.8:
        pace.slow_down(GRAPH_WRITES, max(0.1, 0.5 - 2 * (share - 0.8)), GRAPH_SLOW_SECONDS)


def _row_key(key: str) -> str:
    """A prefix as a RowKey (which may not hold ``/``): ``/v1/cloudaccounts`` -> ``v1-cloudaccounts``."""
    return re.sub(r"[^0-9A-Za-z_-]+", "-", key).strip("-") or "root"
