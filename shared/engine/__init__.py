"""The engine every operation runs on: claim a request, lease its names, run its plan's steps
under a heartbeat, record each result with its events, decide failures, and keep nothing stuck.

It knows the :class:`~shared.engine.plan.Plan` type and nothing of the plans themselves:
onboarding, rotation and offboarding are sibling packages, and :mod:`shared.operations` maps an
operation to its plan at the edge.
"""

from shared.engine.outcome import Outcome, OutcomeKind

__all__ = ["Outcome", "OutcomeKind"]
