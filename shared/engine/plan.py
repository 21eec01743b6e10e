"""What the runner needs to know about one kind of work, and what every step gets and gives back.

The runner (:mod:`shared.engine.delivery`) owns the protocol: claim the row, lease the names, run
the steps under a heartbeat, record each step's result and events in one write, publish, decide
failures. A :class:`Plan` tells it the rest for one operation: onboarding
(:mod:`shared.onboarding.plan`) and rotation (:mod:`shared.rotation.plan`) are the plans.

Steps run in *stages*; a stage is one or more *branches* that run at the same time, each a list of
named steps run in order. A step returns :class:`StepDone`; the plan's ``finish`` reads what the
steps made and decides the final event(s), or a last failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.state import StepOutcome

if TYPE_CHECKING:
    from shared.engine.failures import Failure
    from shared.engine.record import RecordHandle
    from shared.services import Services
    from shared.settings import PipelineConfig


@dataclass(frozen=True)
class StepDone:
    """What a step achieved: the runner records it, with its events, in one save."""

    detail: str
    results: Mapping[str, str] = field(default_factory=dict)
    events: Sequence[dict[str, Any]] = ()
    outcome: StepOutcome = StepOutcome.SUCCEEDED
    #: The step only read: its result goes with the next write, and a crash before that means the
    #: step runs again (never with events).
    deferred: bool = False


@dataclass
class WorkContext:
    """What every step of every plan gets: the parsed request, the clients, the config and the
    handle on the state row. Plans subclass it with what their steps share."""

    request: Any
    clients: Services
    config: PipelineConfig
    handle: RecordHandle
    #: Called at named points inside a step: the runner's test seam (see shared.engine.delivery).
    checkpoint: Callable[[str], None] = field(default=lambda _name: None, repr=False)
    #: Markers (``Plan.markers``) this delivery's claim wrote: nothing they announce was made yet.
    fresh_markers: frozenset[str] = frozenset()

    @property
    def request_id(self) -> str:
        return str(self.request.request_id)

    @property
    def account_name(self) -> str:
        return str(self.request.account_name)

    def result(self, key: str) -> str | None:
        return self.handle.result(key)

    def earlier_attempt(self, marker: str) -> bool:
        """Whether ``marker`` says an earlier delivery may have sent the call it announces (so
        what that call made must be looked for), rather than this delivery's claim foreseeing it."""
        return bool(self.result(marker)) and marker not in self.fresh_markers

    def event(self, short_type: str, step: str, outcome: str, discriminator: str = "",
              **data: Any) -> dict[str, Any]:
        """The structured-mode JSON of one event about this request (its id is stable)."""
        return build_document(self.request_id, self.account_name, short_type, step, outcome,
                              discriminator=discriminator, **data)

    def palette_uids(self) -> dict[str, str]:
        """Palette uids this request recorded (``*Uid`` results), for events."""
        return {k: v for k, v in self.handle.record.results.items() if k.endswith("Uid") and v}


def build_document(request_id: str, account_name: str, short_type: str, step: str, outcome: str, *,
                   discriminator: str = "", **data: Any) -> dict[str, Any]:
    from shared.clients.events import build_event, cloud_event_to_dict

    return cloud_event_to_dict(build_event(
        event_type=short_type, account_name=account_name, request_id=request_id,
        data={"requestId": request_id, "step": step, "outcome": outcome, **data}, discriminator=discriminator))


Step = Callable[[Any], StepDone]
Branch = Sequence[tuple[str, Step]]


@dataclass(frozen=True)
class Finish:
    """The plan's last word: events recorded with the final status, and a failure instead of
    success when the end state is not what was asked for."""

    events: Sequence[dict[str, Any]] = ()
    failure: Failure | None = None
    step: str = "finish"
    detail: str = "done"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One operation the runner can carry out.

    parse: body -> request, raising RequestValidationError (one error per field).
    fingerprint: request -> hash of its meaning (same requestId with another body is a conflict).
    queued: request -> the JSON the sweeper re-drives it with (never a raw secret).
    lease_names: request -> the names it creates or changes (see :mod:`shared.engine.leases`).
    context: builds the steps' shared context.
    stages: the steps.
    finish: reads the end state; decides the final events, or a failure.
    started_event: the event recorded when a delivery first claims the request, if any.
    failed_event: the short type of the event a failure is announced with.
    failed: called when the request fails for good, before its failure is recorded (to keep
        other state, such as the inventory, in step); its own failure never hides the first.
    markers: request -> the markers of every create it may make, written with the claim, so that
        no step has to write one of its own before its create (see ``WorkContext.earlier_attempt``).
    finish_reads_first: the finish only reads until it calls ``handle.settle()``: the last steps'
        writes then go on behind it (``RecordHandle.save_behind``) instead of before it.
    prefetch: called once the row is claimed, before the names are leased: it may start lookups no
        name lease covers, for the steps to use (it must not write anything).
    """

    operation: str
    parse: Callable[[bytes | str | Mapping[str, Any], PipelineConfig], Any]
    fingerprint: Callable[[Any], str]
    queued: Callable[[Any], str]
    lease_names: Callable[[Any], list[str]]
    context: Callable[[Any, Services, PipelineConfig, RecordHandle], WorkContext]
    stages: Sequence[Sequence[Branch]]
    finish: Callable[[Any], Finish]
    started_event: Callable[[Any], dict[str, Any]] | None = None
    failed_event: str = "failed"
    failed: Callable[[Any, Failure], None] | None = None
    markers: Callable[[Any], Mapping[str, str]] | None = None
    finish_reads_first: bool = False
    prefetch: Callable[[Any], None] | None = None
