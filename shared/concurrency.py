"""Start independent round trips at the same time.

An onboarding waits on other services, not on its CPU: lookups that do not depend on each other
(the check step's, the read-backs of ``verify``) cost one round trip together instead of one each.
Each call runs on a worker of one pool per process, with the caller's log fields
(:mod:`shared.logs` keeps them in a context variable), and hands back a
:class:`~concurrent.futures.Future`.

The workers are kept, not made per call: starting a thread waits until the new thread holds the
GIL, which, while other threads are busy, can take a switch interval (5 ms) each, and a dozen
lookups started one after another would then begin 50 ms apart.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: More than the calls of every onboarding a host runs at once can keep busy (a task that waits
#: for another must never find every worker taken); a worker is only made when none is idle.
MAX_WORKERS = 1024

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="worker")
        return _pool


def in_thread(work: Callable[[], T], *, name: str = "onboarding-lookup") -> Future[T]:
    """``work()`` started now on a worker of its own; its result (or exception) in the future.
    ``name`` names the worker's thread while it runs (it shows in logs and tracebacks)."""
    context = contextvars.copy_context()

    def run() -> T:
        thread = threading.current_thread()
        thread.name = name
        try:
            return context.run(work)
        finally:
            thread.name = "worker-idle"

    return _executor().submit(run)
