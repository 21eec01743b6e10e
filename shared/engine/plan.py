"""What the engine needs to know about one kind of work, and what every step gets and gives back.

The engine (:mod:`shared.engine.delivery`) owns the protocol: claim the row, lease the names, run
the steps under a heartbeat, record each step's result and events in one write, publish, decide
failures. A :class:`Plan` tells it the rest for one operation; the plans live beside the engine
(``shared/onboarding``, ``shared/rotation``, ``shared/offboarding``) and :mod:`shared.operations`
names them.

Steps run in *stages*; a stage is one or more *branches* that run at the same time, each a list of
named steps run in order. A step returns :class:`StepDone`; the plan's ``finish`` reads what the
steps made and decides the final event(s), or a last failure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.state import StepOutcome

if TYPE_CHECKING:
    from concurrent.futures import Future

    from shared.engine.failures import Failure
    from shared.engine.record import RecordHandle
    from shared.made import Made
    from shared.services import Services
    from shared.settings import PipelineConfig
    from shared.state import RequestRecord


@dataclass(frozen=True)
class StepDone:
    """What a step achieved: the engine records it, with its events and what it made, in one write."""

    detail: str
    results: Mapping[str, str] = field(default_factory=dict)
    events: Sequence[dict[str, Any]] = ()
    outcome: StepOutcome = StepOutcome.SUCCEEDED
    #: What the step made (or now depends on), by the keys its fences used: recorded ``made`` with
    #: their ids, or ``kept``.
    made: Mapping[str, Made] = field(default_factory=dict)


class Lookups:
    """What this delivery looked up, for the steps after it.

    One rule: a value this delivery found (or started finding) is reused by the later steps of the
    same delivery; a new delivery looks again. A lookup may be started ahead on a worker
    (:meth:`start`), so that it overlaps other round trips.
    """

    def __init__(self) -> None:
        self._found: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def start(self, name: str, fetch: Callable[[], Any]) -> Future[Any]:
        """``fetch`` started now on a worker, unless this delivery started ``name`` already."""
        from shared.concurrency import in_thread

        with self._lock:
            if name not in self._found:
                self._found[name] = in_thread(fetch, name="onboarding-lookup")
            return self._found[name]

    def put(self, name: str, value: Any) -> None:
        """Keep what a step found under ``name``."""
        from concurrent.futures import Future

        done: Future[Any] = Future()
        done.set_result(value)
        with self._lock:
            self._found[name] = done

    def get(self, name: str, fetch: Callable[[], Any]) -> Any:
        """What this delivery found under ``name``; otherwise ``fetch()`` now, kept for later steps."""
        with self._lock:
            found = self._found.get(name)
        if found is not None:
            return found.result()
        value = fetch()
        self.put(name, value)
        return value

    def pop(self, name: str) -> Future[Any] | None:
        """Take a lookup that is used once (an early first attempt), if this delivery started it."""
        with self._lock:
            return self._found.pop(name, None)

    def forget(self, name: str) -> None:
        """``name`` is about to change: the next step looks again."""
        self.pop(name)


@dataclass
class WorkContext:
    """What every step of every plan gets: the parsed request, the services, the config, the hold
    on the state row and this delivery's lookups. Plans subclass it with what their steps share."""

    request: Any
    clients: Services
    config: PipelineConfig
    handle: RecordHandle
    lookups: Lookups = field(default_factory=Lookups)
    #: Called at named points inside a step: the engine's test seam (see shared.engine.delivery).
    checkpoint: Callable[[str], None] = field(default=lambda _name: None, repr=False)

    @property
    def request_id(self) -> str:
        return str(self.request.request_id)

    @property
    def account_name(self) -> str:
        return str(self.request.account_name)

    def result(self, key: str) -> str | None:
        return self.handle.result(key)

    def event(self, short_type: str, step: str, outcome: str, discriminator: str = "",
              **data: Any) -> dict[str, Any]:
        """The structured-mode JSON of one event about this request (its id is stable)."""
        return build_document(self.request_id, self.account_name, short_type, step, outcome,
                              discriminator=discriminator, **data)

    def palette_uids(self) -> dict[str, str]:
        """Palette uids this request recorded (``*Uid`` results), for events."""
        return palette_uids(self.handle.record)


def palette_uids(record: RequestRecord) -> dict[str, str]:
    """The Palette uids a request's row records (``*Uid`` results)."""
    return {k: v for k, v in record.results.items() if k.endswith("Uid") and v and not k.startswith("_")}


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
    success when the end state is not what was asked for. ``then`` is what success records
    elsewhere (the inventory): the engine runs it once the request is committed to succeed
    (``RequestRecord.finishing``), before the final write; it must be safe to run twice."""

    events: Sequence[dict[str, Any]] = ()
    failure: Failure | None = None
    step: str = "finish"
    detail: str = "done"
    then: Callable[[], object] | None = None


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One operation the engine can carry out.

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
    background: request -> whether its calls are background work in the shared paces (timed
        rotation, API key renewal: :func:`shared.state.pace.background_work`); interactive else.
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
    failed: Callable[[Services, RequestRecord, Failure], None] | None = None
    background: Callable[[Any], bool] = field(default=lambda _request: False, repr=False)
