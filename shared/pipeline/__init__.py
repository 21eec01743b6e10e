"""The onboarding pipeline: Palette's "Set up Palette with Azure" guide as idempotent steps."""

from shared.pipeline.outcome import Outcome, OutcomeKind
from shared.pipeline.runner import OnboardingClients, process_request

__all__ = ["OnboardingClients", "Outcome", "OutcomeKind", "process_request"]
