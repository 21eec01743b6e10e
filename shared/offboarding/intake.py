"""Offboardings that arrive over HTTP: ``DELETE /api/accounts/{name}`` (start one, or answer with
the one already running or done) and the dry run of an offboarding body on
``POST /api/onboardings/validate`` (what would be removed, what left, and why)."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.offboarding import steps
from shared.offboarding.models import OffboardingRequest
from shared.state.inventory import OFFBOARDED, AccountRecord

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.clients.queue import RequestQueue
    from shared.dryrun import CheckResult, DryRun
    from shared.services import Services


class OffboardNow(StrEnum):
    ACCEPTED = "accepted"        # a new offboarding was queued
    IN_FLIGHT = "in_flight"      # one is queued or running already: its id
    DONE = "done"                # the account was offboarded already: by which request
    NOT_MANAGED = "not_managed"


def offboard_now(clients: Services, queue: RequestQueue, account_name: str, *, remove_ssh_key: bool,
                 remove_api_key: bool, request_id: str | None = None) -> tuple[OffboardNow, str]:
    """Start offboarding ``account_name`` unless one is under way or done; returns what happened
    and the offboarding's id.

    Without a ``request_id`` the id is made from the account's row (its name, the onboarding that
    made it, the last offboarding tried), so DELETEs at the same time, or a DELETE retried after a
    lost answer, all name one request and the queue intake records it once. The request is queued
    first and then named in the row: a crash between the two leaves a queued request that the
    next DELETE finds again.

    Raises
    ------
    IdempotencyConflictError
        An offboarding with that id (or made at the same moment) asks for other options.
    """
    from shared.engine.enqueue import enqueue
    from shared.offboarding.plan import OFFBOARDING

    account = clients.inventory.get(account_name)
    if account is None:
        return OffboardNow.NOT_MANAGED, ""
    if account.status == OFFBOARDED:
        return OffboardNow.DONE, account.offboarded_by
    running = _running(clients, account)
    if running:
        return OffboardNow.IN_FLIGHT, running
    offboarding_id = request_id or next_offboarding_id(account)
    enqueue(clients, queue, OFFBOARDING, OffboardingRequest.of(
        offboarding_id, account_name, remove_ssh_key=remove_ssh_key, remove_api_key=remove_api_key))

    def claim(row: AccountRecord) -> None:
        if row.status != OFFBOARDED:
            row.offboarding_in_flight = offboarding_id
    clients.inventory.update(account_name, claim)
    return OffboardNow.ACCEPTED, offboarding_id


def next_offboarding_id(account: AccountRecord) -> str:
    """``off-`` and 24 hex digits, the same for every caller that sees the same row."""
    seed = f"{account.account_name}|{account.onboarded_by}|{account.offboarding_in_flight}"
    return f"off-{hashlib.sha256(seed.encode()).hexdigest()[:24]}"


def _running(clients: Services, account: AccountRecord) -> str:
    """The id of the account's offboarding still queued or running, or ''."""
    if not account.offboarding_in_flight:
        return ""
    record = clients.state.get(account.offboarding_in_flight)
    return account.offboarding_in_flight if record is not None and not record.status.finished else ""


# ------------------------------------------------------------------------------------ the dry run

def preview(body: bytes | str | Mapping[str, Any], clients: Services) -> DryRun:
    """The dry run of an offboarding body: the checks of the check step and, step by step, what
    would be removed and what left. Nothing is recorded, queued or removed."""
    from shared.dryrun import Action, CheckOutcome, CheckResult, DryRun, request_id_check
    from shared.errors import RequestValidationError
    from shared.models import identity_of
    from shared.offboarding.models import fingerprint, parse_offboarding

    try:
        request = parse_offboarding(body)
    except RequestValidationError as exc:
        request_id, account_name = identity_of(body)
        return DryRun(request_id, account_name, [CheckResult(
            "schema", CheckOutcome.INVALID, str(exc), reason="invalid_request",
            errors=tuple(error.as_dict() for error in exc.errors))], operation="offboard")
    submission, runs = request_id_check(request.request_id, fingerprint(request), clients)
    found: list[CheckResult] = [
        CheckResult("schema", CheckOutcome.OK, "the request is a valid schema-v1 offboarding request"), submission]
    if not runs:  # submitted before with this body: submitting it again removes nothing
        return DryRun(request.request_id, request.account_name, found, operation="offboard")
    try:
        checked = steps.check_account(request, clients)
    except Exception as exc:  # noqa: BLE001 - a service down: reported, as the onboarding dry run does
        found.append(_lookup_failed("inventory", exc))
        return DryRun(request.request_id, request.account_name, found, operation="offboard")
    if checked.failure is not None:
        outcome = CheckOutcome.MISSING if checked.account is None else CheckOutcome.CLASH
        found.append(CheckResult.failed("account", outcome, checked.failure))
        return DryRun(request.request_id, request.account_name, found, operation="offboard")
    account = checked.account
    assert account is not None
    if checked.offboarded:
        found.append(CheckResult("account", CheckOutcome.OK, f"account '{account.account_name}' was offboarded "
                                 f"already (by {account.offboarded_by}); nothing would be done"))
        return DryRun(request.request_id, request.account_name, found, operation="offboard")
    found.append(CheckResult("account", CheckOutcome.OK, "the account is the product's and no Palette cluster "
                             "uses it" if checked.palette_uid else "the account is the product's; its Palette "
                             "account is already gone"))
    decisions = (("palette.account", lambda: steps.decide_account(checked.palette_uid, account)),
                 ("palette.keys", lambda: steps.decide_keys(request, account, clients)),
                 ("graph.passwords", lambda: steps.decide_passwords(account, clients)),
                 ("keyVault.secrets", lambda: steps.decide_secrets(account, clients)))
    removed: list[str] = []
    left: list[str] = []
    for name, decide in decisions:
        try:
            decision = decide()
        except Exception as exc:  # noqa: BLE001
            found.append(_lookup_failed(name, exc))
            continue
        removed += [r.what for r in decision.remove]
        left += decision.left
        parts = [f"would remove {', '.join(r.what for r in decision.remove)}" if decision.remove else
                 "nothing to remove"] + [f"would leave {item}" for item in decision.left]
        found.append(CheckResult(name, CheckOutcome.OK, "; ".join(parts),
                                 Action.REMOVE if decision.remove else Action.KEEP))
    return DryRun(request.request_id, request.account_name, found, operation="offboard",
                  would_remove=removed, would_leave=left)


def _lookup_failed(name: str, exc: Exception) -> CheckResult:
    from shared.dryrun import CheckOutcome, CheckResult
    from shared.engine.failures import classify

    failure = classify(exc)
    return CheckResult(name, CheckOutcome.ERROR, f"The lookup failed; nothing was decided: {failure.message}",
                       reason=failure.reason)

