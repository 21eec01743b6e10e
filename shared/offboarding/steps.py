"""The steps of one offboarding, each idempotent and recorded, under the account's lease:

    check ── account ── keys ── passwords ── secrets ── (finish: the inventory, ``offboarded``)

* **check**: the account is one the product manages (its inventory row) and can prove it made
  (Palette still carries the product's annotations on it); no Palette cluster uses it (if any, the
  offboarding fails naming them, and nothing is removed);
* **account**: delete the Palette cloud account;
* **keys**: remove the SSH key the product uploaded for the account, when asked and no other
  managed account uses it; revoke and delete the API key(s) the product created for it, when asked;
* **passwords**: remove every Graph password the product made for the account, by keyId; others
  are reported, never touched;
* **secrets**: soft-delete the account's Key Vault secrets (client secret, SSH private key, API key
  value): recoverable for the vault's retention period, never purged by the product.

What was removed and what was left (and why) is recorded step by step, and announced with
``palette.onboarding.offboarded``. A second offboarding of an account already offboarded does
nothing; a new onboarding under the same name starts clean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceNotFoundError

from shared import credentials
from shared.credentials import SecretKind
from shared.errors import PermanentStepError
from shared.logs import get_logger
from shared.pipeline.plan import StepDone, WorkContext
from shared.state import StepOutcome
from shared.state.inventory import MANAGED, OFFBOARDED, AccountRecord

if TYPE_CHECKING:
    from shared.offboarding.models import OffboardingRequest

logger = get_logger(__name__)

SKIPPED = "_skipped"
ACCOUNT_UID = "accountUid"
REMOVED = "_removed:"
LEFT = "_left:"


@dataclass
class OffboardingContext(WorkContext):
    request: OffboardingRequest

    @property
    def account(self) -> AccountRecord:
        account = self.clients.inventory.get(self.account_name)
        if account is None:
            raise PermanentStepError("check", "not_managed",
                                     f"Account '{self.account_name}' is not one this product manages; nothing was "
                                     "removed.", field="accountName")
        return account

    @property
    def skipped(self) -> bool:
        return bool(self.result(SKIPPED))


def _removed(step: str, done: list[str], left: list[str], detail: str) -> StepDone:
    """A step's record of what it removed and what it left, and why (read back by the finish)."""
    return StepDone(detail, {f"{REMOVED}{step}": json.dumps(done), f"{LEFT}{step}": json.dumps(left)})


def check(ctx: OffboardingContext) -> StepDone:
    account = ctx.account
    if account.status == OFFBOARDED:
        return StepDone("already offboarded: nothing to do", {SKIPPED: "already offboarded"},
                        outcome=StepOutcome.SKIPPED)
    wanted = ctx.request.palette
    if wanted is not None and wanted.scope.value != account.scope:
        raise PermanentStepError("check", "scope_mismatch",
                                 f"Account '{ctx.account_name}' is {account.scope}-scoped in Palette, not "
                                 f"{wanted.scope.value}-scoped; nothing was removed.", field="palette.scope")
    palette = ctx.clients.palette
    try:
        existing = palette.get_azure_account(account.palette_uid, project_uid=account.project_uid or None)
    except ResourceNotFoundError:
        return StepDone("the Palette account is already gone", {ACCOUNT_UID: ""})
    if existing.name != ctx.account_name or not credentials.made_by_product(existing.annotations):
        raise PermanentStepError(
            "check", "account_not_provably_ours",
            f"Palette account {existing.uid} no longer carries this product's annotations, so the product cannot "
            f"prove it made it; nothing was removed. Remove it by hand, or onboard '{ctx.account_name}' again "
            "(which puts the annotations back) and then offboard it.")
    clusters = palette.clusters_using_account(existing.uid, project_uid=account.project_uid or None)
    if clusters:
        names = ", ".join(f"{c.name} ({c.uid})" for c in clusters[:20])
        more = f" and {len(clusters) - 20} more" if len(clusters) > 20 else ""
        raise PermanentStepError(
            "check", "account_in_use",
            f"Palette clusters still use cloud account '{ctx.account_name}': {names}{more}. Delete them or move them "
            "to another account first; nothing was removed.")
    return StepDone("the account is the product's and no cluster uses it", {ACCOUNT_UID: existing.uid})


def remove_account(ctx: OffboardingContext) -> StepDone:
    if ctx.skipped:
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    uid = ctx.result(ACCOUNT_UID) or ""
    if not uid:
        return _removed("account", [], ["Palette cloud account: already gone"], "nothing to delete")
    ctx.clients.palette.delete_azure_account(uid, project_uid=ctx.account.project_uid or None)
    return _removed("account", [f"Palette cloud account {uid}"], [], "cloud account deleted")


def remove_keys(ctx: OffboardingContext) -> StepDone:
    if ctx.skipped:
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    account = ctx.account
    palette = ctx.clients.palette
    done: list[str] = []
    left: list[str] = []
    if account.ssh_key_uid:
        if not ctx.request.remove_ssh_key:
            left.append(f"SSH key {account.ssh_key_name}: not asked to remove it (removeSshKey)")
        elif not account.ssh_key_owned:
            left.append(f"SSH key {account.ssh_key_name}: not uploaded by this product")
        elif _shared_ssh_key(ctx, account):
            left.append(f"SSH key {account.ssh_key_name}: another managed account uses it")
        else:
            palette.delete_ssh_key(account.ssh_key_uid, project_uid=account.ssh_key_project_uid or None)
            done.append(f"SSH key {account.ssh_key_name} ({account.ssh_key_uid})")
    for uid in filter(None, (account.api_key_uid, account.previous_api_key_uid)):
        if not ctx.request.remove_api_key:
            left.append(f"API key {uid}: asked to keep it (removeApiKey false)")
            continue
        try:
            key = palette.get_api_key(uid)
        except ResourceNotFoundError:
            continue
        if not credentials.made_by_product(key.annotations):
            left.append(f"API key {uid}: not made by this product")
            continue
        palette.revoke_api_key(uid)
        palette.delete_api_key(uid)
        done.append(f"Palette API key {key.name} ({uid})")
    return _removed("keys", done, left, f"{len(done)} key(s) removed")


def _shared_ssh_key(ctx: OffboardingContext, account: AccountRecord) -> bool:
    others = ctx.clients.inventory.query("Status eq @managed and SshKeyUid eq @uid",
                                         {"managed": MANAGED, "uid": account.ssh_key_uid})
    return any(other.account_name != account.account_name for other in others)


def remove_passwords(ctx: OffboardingContext) -> StepDone:
    if ctx.skipped:
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    graph = ctx.clients.graph
    account = ctx.account
    if graph is None or not account.client_id:
        return _removed("passwords", [], ["Graph passwords: this deployment cannot reach Graph for the app"],
                        "nothing removed")
    done: list[str] = []
    left: list[str] = []
    try:
        passwords = graph.get_application(account.client_id).passwords
    except ResourceNotFoundError:
        return _removed("passwords", [], [f"Graph passwords: app {account.client_id} is gone or no longer ours"],
                        "nothing removed")
    for password in passwords:
        if credentials.is_product_password(password.display_name, account.account_name):
            graph.remove_password(account.client_id, password.key_id)
            done.append(f"Graph password {password.key_id}")
        elif not credentials.is_product_password(password.display_name):
            left.append(f"Graph password {password.key_id}: not made by this product")
    return _removed("passwords", done, left, f"{len(done)} password(s) removed")


def remove_secrets(ctx: OffboardingContext) -> StepDone:
    if ctx.skipped:
        return StepDone("skipped", outcome=StepOutcome.SKIPPED)
    store = ctx.clients.secrets
    done: list[str] = []
    left: list[str] = []
    for kind in SecretKind:
        name = credentials.secret_name(ctx.account_name, kind)
        versions = store.list_versions(name)
        if not versions:
            continue
        if not credentials.is_secret_of(versions[0].tags, ctx.account_name, kind):
            left.append(f"Key Vault secret {name}: not written by this product for the account")
            continue
        store.delete_secret(name)
        done.append(f"Key Vault secret {name} (soft-deleted: recoverable for the vault's retention period)")
    account = ctx.account
    if account.secret_name and credentials.parse_secret_name(account.secret_name) is None:
        left.append(f"Key Vault secret {account.secret_name}: the operator's, named by the request")
    return _removed("secrets", done, left, f"{len(done)} secret(s) soft-deleted")
