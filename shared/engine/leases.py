"""Leases on names, so that two requests never work on one account (or one key name) at once, and
the heartbeat that keeps a delivery's leases short and alive.

A request's row lease stops two deliveries of *one* request; it cannot stop two tickets that name
the same ``accountName`` from registering it at the same moment (Palette does not document that it
refuses a duplicate name, so nothing may rely on it). Before any step runs, a request therefore
takes a lease on every name it will create or change: its account, its SSH key in its project, its
API key. All or none: a name held by another live request makes this one wait and check back when
that lease ends; it then updates or clashes by the usual rules. The leases are inserted at once
(one round trip); only when one insert fails are they taken one by one, in a fixed order.

Leases belong to the request (the owner is its requestId), not to one delivery, so a request keeps
its names across its own redeliveries and delayed retries, and a second request waits until the
first has finished. They are short (``lease_seconds``) and renewed by the :class:`Heartbeat` while
work runs; after a hard kill they lapse within one lease period, and the redelivery resumes.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.concurrency import in_thread
from shared.credentials import lease_key
from shared.logs import get_logger
from shared.state import ConcurrentUpdateError, NameLease
from shared.state.records import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    from shared.state import StateStore

logger = get_logger(__name__)


@dataclass(frozen=True)
class Held:
    """A name another request holds, and until when (the earliest moment to check back)."""

    key: str
    owner: str
    until: dt.datetime


class NameLeases:
    """The leases of one request on its names."""

    def __init__(self, store: StateStore, request_id: str, keys: list[str]) -> None:
        self._store = store
        self._request_id = request_id
        self._keys = [lease_key(key) for key in keys]
        self._held: dict[str, NameLease] = {}
        self._lock = threading.Lock()
        #: Until when (monotonic seconds) every lease is held, as last proved: a taking or a renewal.
        self.held_until = float("inf")

    def _is_finished(self, request_id: str) -> bool:
        """A lease whose owner finished is free. An owner with no row (the drift pass) is not."""
        record = self._store.get(request_id)
        return record is not None and record.status.finished

    def _proved(self, began: float, until: dt.datetime) -> None:
        self.held_until = began + max((until - utcnow()).total_seconds(), 0.0)

    def acquire(self, until: dt.datetime) -> Held | None:
        """Take every lease until ``until``. On the first name held by another live request, give
        back the leases this call took, keep those the request held already (it may have made
        things under them), and return who holds the name.

        The usual case, nobody holding any of them, costs one round trip: every lease is inserted
        at once. When one insert fails, those this call inserted are given back and the names are
        taken one by one in a fixed order, so two requests never wait on each other for good."""
        return self.begin(until)()

    def begin(self, until: dt.datetime) -> Callable[[], Held | None]:
        """:meth:`acquire`, with the inserts sent now and the rest done by the call returned (the
        caller starts other work in between)."""
        began = time.monotonic()
        inserts = self._insert_all(until) if not self._held and len(self._keys) > 1 else None

        def finish() -> Held | None:
            with self._lock:
                held = None if inserts is not None and self._inserted(inserts) else self._take_in_order(until)
                if held is None:
                    self._proved(began, until)
                return held
        return finish

    def _take_in_order(self, until: dt.datetime) -> Held | None:
        taken: list[str] = []
        for key in self._keys:
            held, newly = self._take(key, until)
            if held is not None:
                for name in taken:
                    self._give_back(name)
                return held
            if newly:
                taken.append(key)
        return None

    def _insert_all(self, until: dt.datetime) -> list[Future[NameLease]]:
        """Start inserting every lease at the same time."""
        return [in_thread(functools.partial(self._store.create_lease, NameLease(
            key=key, owner=self._request_id, expires_at=iso(until))), name="onboarding-lease") for key in self._keys]

    def _inserted(self, inserts: list[Future[NameLease]]) -> bool:
        """Whether every insert went in (all are held then); else those that did are given back."""
        errors = [future.exception() for future in inserts]
        for future, error in zip(inserts, errors, strict=True):
            if error is None:
                lease = future.result()
                self._held[lease.key] = lease
        failure = next((error for error in errors if error is not None), None)
        if failure is None:
            return True
        for key in list(self._held):
            self._give_back(key)
        if not isinstance(failure, ConcurrentUpdateError):
            raise failure  # the store failing (or a crash): decided by the caller
        return False

    def _take(self, key: str, until: dt.datetime) -> tuple[Held | None, bool]:
        """(who holds ``key`` if not us, whether this call took it from nobody)."""
        wanted = NameLease(key=key, owner=self._request_id, expires_at=iso(until))
        for _ in range(2):
            try:
                self._held[key] = self._store.create_lease(wanted)
                return None, True
            except ConcurrentUpdateError:
                pass
            current = self._store.get_lease(key)
            if current is not None:
                break
        else:  # released and re-taken twice in between: somebody is busy with it
            return Held(key, "(another request)", utcnow() + dt.timedelta(seconds=1)), False
        now = utcnow()
        ours = current.owner == self._request_id
        if not ours and current.active(now) and not self._is_finished(current.owner):
            return Held(key, current.owner, parse_iso(current.expires_at) or now), False
        wanted.etag = current.etag
        try:
            self._held[key] = self._store.replace_lease(wanted)
        except ConcurrentUpdateError:
            return Held(key, "(another request)", now + dt.timedelta(seconds=1)), False
        return None, not ours

    def extend(self, until: dt.datetime) -> bool:
        """Renew every lease until ``until``; False when one was taken over meanwhile."""
        began = time.monotonic()
        with self._lock:
            for key, lease in list(self._held.items()):
                renewed = NameLease(key=key, owner=self._request_id, expires_at=iso(until), etag=lease.etag)
                try:
                    self._held[key] = self._store.replace_lease(renewed)
                except ConcurrentUpdateError:
                    logger.warning("request %s: lost the lease on %s", self._request_id, key)
                    return False
            self._proved(began, until)
            return True

    def release(self) -> None:
        """Give every lease back (best effort: one left behind lapses by itself)."""
        with self._lock:
            for key in list(self._held):
                self._give_back(key)

    def _give_back(self, key: str) -> None:
        lease = self._held.pop(key, None)
        if lease is None:
            return
        try:
            self._store.delete_lease(lease)
        except Exception:
            logger.info("request %s: lease on %s left to lapse", self._request_id, key, exc_info=True)


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds on a daemon thread until stopped, or until
    ``max_seconds`` have passed: by then the Functions host has ended the invocation
    (``functionTimeout``), and leases must be left to lapse."""

    def __init__(self, beat: Callable[[], bool], *, interval: float, max_seconds: float) -> None:
        self._beat = beat
        self._interval = interval
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._running: Future[None] | None = None

    def __enter__(self) -> Heartbeat:
        self._running = in_thread(self._run, name="onboarding-heartbeat")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._running is not None:
            futures.wait([self._running], timeout=self._interval + 5)

    def _run(self) -> None:
        deadline = utcnow() + dt.timedelta(seconds=self._max_seconds)
        while not self._stop.wait(self._interval):
            if utcnow() >= deadline:
                logger.warning("heartbeat: past the function timeout; leases are left to lapse")
                return
            try:
                if not self._beat():
                    return
            except Exception:
                logger.warning("heartbeat: renewing the leases failed", exc_info=True)
