"""One exception tree for the domain; each class name says what the caller should do.

Messages name the object and the next action, and never carry a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass


class OnboardingError(Exception):
    """Root of every error the domain raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a request: its JSON path (``azure.tenantId``) and why."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}

    def described(self) -> str:
        """``path: message``; an error about the whole body (path ``""``) is its message alone,
        which already names the request body."""
        return f"{self.path}: {self.message}" if self.path else self.message


class RequestValidationError(OnboardingError):
    """The request is wrong and retrying cannot help: answer 400 or complete the message."""

    def __init__(self, errors: list[FieldError], *, what: str = "onboarding request") -> None:
        self.errors = errors
        summary = "; ".join(e.described() for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"The {what} is invalid: {summary}{more}")


class PermanentStepError(OnboardingError):
    """A step failed for a reason a retry will not fix (name clash, bad credentials, Palette 4xx).

    ``reason`` is a short machine-readable code; the message tells a person what to do. ``field``
    names the request field to change, when one is to blame. ``removed`` says what the step made
    and took back before giving up; ``cleanup`` what it made and could not remove yet (the sweeper
    keeps trying), each ``{"kind": ..., ...ids}``.
    """

    def __init__(self, step: str, reason: str, message: str, *, field: str | None = None,
                 removed: list[str] | None = None, cleanup: list[dict[str, str]] | None = None) -> None:
        self.step = step
        self.reason = reason
        self.field = field
        self.removed = removed or []
        self.cleanup = cleanup or []
        super().__init__(message)


class IdempotencyConflictError(OnboardingError):
    """The same requestId was already submitted with a different body: answer 409."""


class StepInProgressError(OnboardingError):
    """Another delivery is working on this request right now: back off and let it finish."""


class StateStoreError(OnboardingError):
    """The state store failed; the cause is chained. Treated as transient by the triggers."""


class ConcurrentUpdateError(StateStoreError):
    """Someone else changed the row since we read it (ETag mismatch) or created it first."""
