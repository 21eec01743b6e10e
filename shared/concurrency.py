"""Start independent round trips at the same time.

An onboarding waits on other services, not on its CPU: lookups that do not depend on each other
(the check step's, the read-backs of ``verify``) cost one round trip together instead of one each.
Each call runs on a daemon thread of its own with the caller's log fields (:mod:`shared.logs`
keeps them in a context variable), and hands back a :class:`~concurrent.futures.Future`.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def in_thread(work: Callable[[], T], *, name: str = "onboarding-lookup") -> Future[T]:
    """``work()`` started now on a thread of its own; its result (or exception) in the future."""
    future: Future[T] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = context.run(work)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
