"""The one optimistic-concurrency loop: read a row, change a copy, write it if nobody wrote it
meanwhile (the ETag), and on a lost race read it again and apply the change again, a few times.

Every conditional read-modify-write of a request's row, an account's row or an outbox goes through
:func:`update`, so the rule (and its bound) lives in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self, TypeVar

from shared.errors import ConcurrentUpdateError

if TYPE_CHECKING:
    from collections.abc import Callable

#: Conditional writes tried before a row that keeps changing is given up on.
ATTEMPTS = 5


class Row(Protocol):
    def copy(self) -> Self: ...


R = TypeVar("R", bound=Row)


class Unchanged(Exception):
    """Raised by a change to say: leave the row as it is (nothing is written)."""


def update(current: R | None, change: Callable[[R], None], *, write: Callable[[R], R],
           read: Callable[[], R | None], attempts: int = ATTEMPTS) -> R | None:
    """Apply ``change`` to a copy of ``current`` and ``write`` it (a conditional write that raises
    :class:`~shared.state.store.ConcurrentUpdateError` when the row changed since it was read);
    after a lost race, ``read`` the row again and try again, at most ``attempts`` times.

    ``change`` may raise :class:`Unchanged` to write nothing (the row as last read is returned),
    or any other exception to stop. Returns the row as written, or None when the row is gone.

    Raises
    ------
    ConcurrentUpdateError
        Every attempt lost its race.
    """
    for _ in range(attempts):
        if current is None:
            return None
        updated = current.copy()
        try:
            change(updated)
        except Unchanged:
            return current
        try:
            return write(updated)
        except ConcurrentUpdateError:
            current = read()
    raise ConcurrentUpdateError("The row kept changing; try again.")
