"""A row's outbox: events written into the row with the change that causes them, and sent from
there. A request's row (:mod:`shared.state.records`) and an account's inventory row
(:mod:`shared.state.inventory`) both carry one; :func:`flush_outbox` sends a row's pending events
and confirms them, whoever else writes the row meanwhile.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from shared.state import retry

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.clients.events import EventSink

logger = logging.getLogger(__name__)


def publish(sink: EventSink, documents: list[dict[str, Any]], request_id: str) -> bool:
    """Send ``documents`` (structured-mode CloudEvent JSON); False, logged, when the topic refused."""
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


def flush_outbox(row: Row, sink: EventSink, *, write: Callable[[Row], Row], read: Callable[[], Row | None]) -> Row:
    """Send the pending events of a row nobody holds and confirm them, whoever else writes the row
    meanwhile. Returns the row as last written (or read). Sending twice is harmless: event ids are
    stable."""
    if not row.outbox or not publish(sink, row.outbox, row.request_id):
        return row
    sent = {str(event["id"]) for event in row.outbox}

    def confirm(current: Row) -> None:
        if not any(str(event["id"]) in sent for event in current.outbox):
            raise retry.Unchanged
        current.confirm_sent(sent)
    return retry.update(row, confirm, write=write, read=read) or row
