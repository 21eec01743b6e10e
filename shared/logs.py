"""Correlation fields on every log line: ``requestId``, ``step``, ``messageId``, ``invocationId``.

The trigger binds the message and invocation ids, the pipeline the request and the step; every
logger made by :func:`get_logger` passes the bound fields as ``extra=``, which Application Insights
shows as custom dimensions, so an operator can follow one request through the logs. Fields live in
a :class:`contextvars.ContextVar`: each invocation (and each thread started with
:func:`contextvars.copy_context`) sees its own. Nothing here configures handlers or levels.
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, MutableMapping

FIELDS = ("requestId", "step", "messageId", "invocationId")

_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("palette_onboarding_log_fields",
                                                                              default=None)


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Add (or replace) correlation fields for the code inside the ``with`` block."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"Unknown log fields {sorted(unknown)}; use {', '.join(FIELDS)}.")
    token = _bound.set({**(_bound.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def bound() -> dict[str, str]:
    """The fields bound here and now."""
    return dict(_bound.get() or {})


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the bound correlation fields as attributes (``extra``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(_bound.get() or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def get_logger(name: str) -> ContextLogger:
    return ContextLogger(logging.getLogger(name), {})


class Counts:
    """Base of a pass's report (a dataclass of counters), logged as one line by its timer."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)
