"""Running a plan's stages: the branches of a stage at the same time, the steps of a branch in
order; each step checked first (the delivery still holds the request), each step's result, events
and what it made written in one write and then published."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from shared.concurrency import in_thread
from shared.engine.failures import FailureKind, classify
from shared.engine.record import LeaseLostError, StopRequested
from shared.logs import bind, get_logger
from shared.state import StepRecord
from shared.state.records import iso, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.engine.plan import Branch, Plan, StepDone, WorkContext
    from shared.state import RequestRecord

logger = get_logger(__name__)


def run_stages(plan: Plan, ctx: WorkContext, publish: Callable[[str], None], failed_in: dict[int, str]) -> None:
    """Run every step not done yet. ``publish(point)`` sends what the write at ``point`` recorded;
    ``failed_in`` gets the step each raised exception came from (for the failure's event).
    Raises the failure that matters most once every branch of its stage has stopped."""
    handle = ctx.handle

    def run_branch(branch: Branch) -> None:
        for name, step in branch:
            if handle.record.step_done(name):
                continue
            with bind(step=name):
                logger.info("request %s: step %s", ctx.request_id, name)
                try:
                    handle.check()
                    done = step(ctx)
                except Exception as exc:
                    failed_in.setdefault(id(exc), name)
                    raise
                handle.write(_recorder(name, done), events=done.events)
                publish(name)

    for stage in plan.stages:
        first, *others = stage
        if not others:
            run_branch(first)
            continue
        futures = [in_thread(functools.partial(run_branch, branch), name="onboarding-branch") for branch in others]
        first_error: BaseException | None = None
        try:
            run_branch(first)
        except Exception as exc:  # noqa: BLE001 - wait for the other branches, then decide
            first_error = exc
        raise_first(first_error, *(future.exception() for future in futures))


def _recorder(name: str, done: StepDone) -> Callable[[RequestRecord], None]:
    def apply(record: RequestRecord) -> None:
        record.steps[name] = StepRecord(done.outcome, iso(utcnow()), done.detail)
        record.results.update(done.results)
        record.made.update({key: entry.to_dict() for key, entry in done.made.items()})
        record.current_step = name
    return apply


def raise_first(*errors: BaseException | None) -> None:
    """Raise the error that decides what happens next: a crash (nothing may handle it), then a lost
    lease (this delivery must do nothing more), a requested stop, permanent failures over
    transient ones (the message a person reads should be the one that needs them), defects last."""
    present = [e for e in errors if e is not None]
    if present:
        present.sort(key=_rank)
        raise present[0]


def _rank(error: BaseException) -> int:
    if not isinstance(error, Exception):
        return 0
    if isinstance(error, LeaseLostError):
        return 1
    if isinstance(error, StopRequested):
        return 2
    order: dict[FailureKind, Any] = {FailureKind.PERMANENT: 3, FailureKind.BUSY: 4, FailureKind.TRANSIENT: 5,
                                     FailureKind.DEFECT: 6}
    return int(order[classify(error).kind])
