"""Every failure the pipeline can meet, sorted once: permanent, transient, busy, or a defect.

* **permanent**: a retry cannot help (a bad request, a name clash, credentials Palette rejects, a
  Key Vault or Graph refusal a person must fix): record it, announce ``failed`` with the reason,
  complete the message.
* **transient**: it may pass (429, 5xx, a lost connection, a topic hiccup, our own credential
  being renewed or fixed): keep the state resumable and resume after a delay, within the
  request's own retry budget.
* **busy**: another delivery or another request holds what this one needs: check back later,
  outside the retry budget.
* **defect**: anything else is a bug: release the lease and let the host redeliver; a request that
  keeps hitting one ends ``failed`` with ``internal_error``.

The rows of :data:`RULES` are checked in order; the first that matches decides. Service-specific
rows match on the ``service`` attribute our clients (and :class:`~shared.clients.keyvault.SecretStore`)
put on every azure-core error they raise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.errors import PermanentStepError, StateStoreError, StepInProgressError


class FailureKind(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    BUSY = "busy"
    DEFECT = "defect"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    reason: str
    message: str


def _status(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, HttpResponseError) else None


def _service(exc: BaseException) -> str:
    return str(getattr(exc, "service", "") or "")


def _is(service: str, *statuses: int) -> Callable[[BaseException], bool]:
    def match(exc: BaseException) -> bool:
        return _service(exc) == service and _status(exc) in statuses
    return match


def _server_side(exc: BaseException) -> bool:
    status = _status(exc)
    return status is not None and (status == 429 or status >= 500)


def _service_bus(*names: str) -> Callable[[BaseException], bool]:
    """Match azure-servicebus errors by class name, without importing the SDK for every caller."""
    def match(exc: BaseException) -> bool:
        return any(cls.__name__ in names and cls.__module__.startswith("azure.servicebus")
                   for cls in type(exc).__mro__)
    return match


def _code(exc: BaseException) -> str:
    """The service's own error code (``error.code`` of an azure-core ``HttpResponseError``)."""
    return str(getattr(getattr(exc, "error", None), "code", "") or "")


def _scope(exc: BaseException) -> str:
    return str(getattr(exc, "scope", "") or "the scope asked about")


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", "") or exc) or type(exc).__name__


Describe = Callable[[BaseException], str]
Rule = tuple[Callable[[BaseException], bool], FailureKind, str, Describe]

RULES: tuple[Rule, ...] = (
    # The domain's own decisions.
    (lambda e: isinstance(e, PermanentStepError), FailureKind.PERMANENT, "", _message),
    (lambda e: isinstance(e, StepInProgressError), FailureKind.BUSY, "in_progress", _message),
    (lambda e: isinstance(e, StateStoreError), FailureKind.TRANSIENT, "state_store_unavailable", _message),
    # Service Bus (events topic, scheduled retries): entity or rights missing is an operator's fix,
    # which a retry later picks up; a message too large is our bug.
    (_service_bus("MessageSizeExceededError"), FailureKind.DEFECT, "internal_error", _message),
    (_service_bus("ServiceBusError"), FailureKind.TRANSIENT, "service_bus_unavailable", _message),
    # Key Vault: the vault refusing (no rights, a soft-deleted secret in the way, no such secret)
    # needs a person; throttling and server errors pass.
    (_is("Key Vault", 403), FailureKind.PERMANENT, "key_vault_forbidden",
     lambda e: f"Key Vault refused the call (403): grant the app's identity Key Vault Secrets Officer on the "
               f"vault. {_message(e)}"),
    (_is("Key Vault", 409), FailureKind.PERMANENT, "key_vault_conflict",
     lambda e: f"Key Vault refused the write (409): a deleted secret of that name is still recoverable; "
               f"recover or purge it. {_message(e)}"),
    (_is("Key Vault", 400, 404), FailureKind.PERMANENT, "key_vault_rejected", _message),
    # Graph: 401 is our token (renewed on the next try); 403 means we do not own the app.
    (_is("Graph", 403), FailureKind.PERMANENT, "graph_forbidden",
     lambda e: "This app's identity may not change that app registration: make it an owner of the app "
               f"(Application.ReadWrite.OwnedBy). {_message(e)}"),
    (_is("Graph", 404), FailureKind.PERMANENT, "app_not_found", _message),
    (_is("Graph", 400), FailureKind.PERMANENT, "graph_rejected", _message),
    # Resource Manager (the onboarded principal's role and deny assignments): our identity not
    # allowed to read them at the scope, or no such subscription or resource group, needs a person.
    (_is("Resource Manager", 403), FailureKind.PERMANENT, "permissions_unreadable",
     lambda e: f"The product's identity may not read role assignments at {_scope(e)} (Resource Manager answered "
               f"403): grant it Reader there, or Microsoft.Authorization/roleAssignments/read, roleDefinitions/read "
               f"and denyAssignments/read. {_message(e)}"),
    (lambda e: _is("Resource Manager", 401)(e) and _code(e) == "InvalidAuthenticationTokenTenant",
     FailureKind.PERMANENT, "permissions_unreadable",
     lambda e: f"The subscription of {_scope(e)} is in another Entra tenant than the product's identity, whose "
               "tokens Resource Manager accepts only in its own tenant: its role assignments cannot be read from "
               f"this deployment. Set azure.permissions.enforce to false to onboard with this reported. {_message(e)}"),
    (_is("Resource Manager", 404), FailureKind.PERMANENT, "permissions_scope_not_found",
     lambda e: f"Resource Manager has no scope {_scope(e)} (404): check the subscription and resource group in "
               f"azure.permissions.scopes. {_message(e)}"),
    # Palette refusing a create past one of the tenant's resource limits: the check step counts
    # first, so only a race or objects it cannot count (SSH keys of other projects) get here; an
    # admin raises the limit. Palette's code for it is not documented: the stand-in's is matched.
    (lambda e: _service(e) == "Palette" and _code(e) == "ResourceLimitExceeded", FailureKind.PERMANENT,
     "palette_limit_reached",
     lambda e: f"Palette refused to make another object past one of the tenant's resource limits: {_message(e)} "
               "A Palette tenant admin can raise it (Tenant Settings > Resource Limits, or PATCH "
               "/v1/tenants/{tenantUid}/resourceLimits); then submit the request again under a new requestId."),
    # Palette: our own API key failing (401/403) is an operator's fix that a later retry picks up,
    # rather than a reason to fail every request for good; other 4xx are about the request.
    (_is("Palette", 401, 403), FailureKind.TRANSIENT, "palette_credentials", _message),
    # Any service: throttled or broken server side, or the network.
    (_server_side, FailureKind.TRANSIENT, "dependency_unavailable", _message),
    (lambda e: isinstance(e, ServiceRequestError | ServiceResponseError), FailureKind.TRANSIENT,
     "dependency_unavailable", _message),
    # Our managed identity or token endpoint failing without a status: operator-fixable.
    (lambda e: isinstance(e, ClientAuthenticationError) or type(e).__name__ == "CredentialUnavailableError",
     FailureKind.TRANSIENT, "identity_unavailable", _message),
    (lambda e: isinstance(e, HttpResponseError), FailureKind.PERMANENT, "dependency_rejected",
     lambda e: f"{_service(e) or 'A service'} refused a call ({_status(e)}): {_message(e)}"),
)


def classify(exc: BaseException) -> Failure:
    """The first rule of :data:`RULES` that matches ``exc``; a defect when none does."""
    for matches, kind, reason, describe in RULES:
        if matches(exc):
            if isinstance(exc, PermanentStepError):
                return Failure(kind, exc.reason, str(exc))
            return Failure(kind, reason, describe(exc))
    return Failure(FailureKind.DEFECT, "internal_error",
                   f"An unexpected error stopped the onboarding ({type(exc).__name__}).")
