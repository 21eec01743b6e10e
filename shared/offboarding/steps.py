"""The steps of one offboarding, each idempotent and recorded, under the account's lease:

    check ── account ── keys ── passwords ── secrets ── (finish: the inventory, ``offboarded``)

* **check**: the account is one the product manages (its inventory row) and can prove it made
  (Palette still carries the product's annotations on it); no Palette cluster uses it (if any, the
  offboarding fails naming them, and nothing is removed);
* **account**: delete the Palette cloud account;
* **keys**: remove the SSH key the product uploaded for the account, when asked and no other
  managed account uses it; revoke and delete the API key(s) the product created for it, when asked;
* **passwords**: remove every Graph password the product made for the account, by keyId; others
  are reported, never touched; so is each other holder of the principal's secret (an Azure backup
  location in the account's scope), which the offboarding neither deletes nor changes;
* **secrets**: soft-delete the account's Key Vault secrets (client secret, SSH private key, API key
  value): recoverable for the vault's retention period, never purged by the product.

Each removing step first decides what it removes (:class:`Removal`, plain data) and what it
leaves, records that decision in the state row, then carries it out: a redelivery after a crash
carries out the same decision again (every removal succeeds when already done) and reports it the
same. The dry run (:func:`shared.offboarding.preview.preview`) shows the same decisions.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared import credentials
from shared.credentials import SecretKind
from shared.engine.plan import StepDone, WorkContext
from shared.errors import PermanentStepError, StepInProgressError
from shared.logs import get_logger
from shared.rotation import holders
from shared.state import StepOutcome
from shared.state.inventory import MANAGED, OFFBOARDED, AccountRecord
from shared.state.records import utcnow

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.offboarding.models import OffboardingRequest
    from shared.services import Services

logger = get_logger(__name__)

SKIPPED = "_skipped"
ACCOUNT_UID = "accountUid"
DECIDED = "_decided:"
REMOVED = "_removed:"
LEFT = "_left:"
MAX_CLUSTERS_NAMED = 20
#: A step's detail names at most this many of what it removed, and of what it left; every one is
#: in the state's ``removed`` and ``left`` and in the ``offboarded`` event.
MAX_NAMED_IN_DETAIL = 20
SSH_KEY_LEASE_SECONDS = 60


# ------------------------------------------------------------------------------------ decisions

@dataclass(frozen=True)
class Removal:
    """One thing an offboarding removes: ``kind`` says how, ``ids`` which, ``what`` in words."""

    kind: str  # paletteAccount | sshKey | apiKey | graphPassword | keyVaultSecret
    what: str
    ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What one step removes and what it leaves (each with the reason)."""

    remove: list[Removal] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"remove": [asdict(r) for r in self.remove], "left": self.left})

    @classmethod
    def from_json(cls, text: str) -> Decision:
        data = json.loads(text)
        return cls([Removal(**r) for r in data["remove"]], list(data["left"]))


@dataclass(frozen=True)
class AccountCheck:
    """What the check found: the inventory row and the Palette account's uid ('' when gone), or
    why nothing may be removed."""

    account: AccountRecord | None
    palette_uid: str = ""
    failure: PermanentStepError | None = None
    clusters: list[str] = field(default_factory=list)

    @property
    def offboarded(self) -> bool:
        return self.account is not None and self.account.status == OFFBOARDED


def check_account(request: OffboardingRequest, clients: Services) -> AccountCheck:
    """Read (never write) whether the account may be offboarded."""
    name = request.account_name
    account = clients.inventory.get(name)
    if account is None:
        return AccountCheck(None, failure=PermanentStepError(
            "check", "not_managed", f"Account '{name}' is not one this product manages; nothing was removed.",
            field="accountName"))
    if account.status == OFFBOARDED:
        return AccountCheck(account)
    mismatch = _placement_mismatch(request, account, clients)
    if mismatch is not None:
        return AccountCheck(account, failure=mismatch)
    palette = clients.palette
    project_uid = account.project_uid or None
    try:
        existing = palette.get_azure_account(account.palette_uid, project_uid=project_uid)
    except ResourceNotFoundError:
        return AccountCheck(account)
    if existing.name != name or not credentials.made_by_product(existing.annotations):
        return AccountCheck(account, failure=PermanentStepError(
            "check", "account_not_provably_ours",
            f"Palette account {existing.uid} is no longer named '{name}' or no longer carries this product's "
            "annotations, so the product cannot prove it made it; nothing was removed. Remove it by hand, or "
            f"onboard '{name}' again (which puts the annotations back) and then offboard it."))
    clusters = palette.clusters_using_account(existing.uid, project_uid=project_uid)
    if clusters:
        named = [f"{c.name} ({c.uid})" for c in clusters]
        more = f" and {len(named) - MAX_CLUSTERS_NAMED} more" if len(named) > MAX_CLUSTERS_NAMED else ""
        return AccountCheck(account, existing.uid, clusters=named, failure=PermanentStepError(
            "check", "account_in_use",
            f"Palette clusters still use cloud account '{name}': {', '.join(named[:MAX_CLUSTERS_NAMED])}{more}. "
            "Delete them or move them to another account first; nothing was removed."))
    return AccountCheck(account, existing.uid)


def _placement_mismatch(request: OffboardingRequest, account: AccountRecord,
                        clients: Services) -> PermanentStepError | None:
    """``palette.scope`` and ``palette.project``, when the request gives them, must be where the
    account is (a safety catch: the inventory knows where it is)."""
    wanted = request.palette
    if wanted is None:
        return None
    if wanted.scope.value != account.scope:
        return PermanentStepError("check", "scope_mismatch",
                                  f"Account '{account.account_name}' is {account.scope}-scoped in Palette, not "
                                  f"{wanted.scope.value}-scoped; nothing was removed.", field="palette.scope")
    if account.scope == "project" and "project" in wanted.model_fields_set:
        project = clients.palette.get_project(wanted.project)
        if project is None or project.uid != account.project_uid:
            return PermanentStepError("check", "project_mismatch",
                                      f"Account '{account.account_name}' is not in Palette project "
                                      f"'{wanted.project}'; nothing was removed.", field="palette.project")
    return None


def decide_account(palette_uid: str, account: AccountRecord) -> Decision:
    if not palette_uid:
        return Decision(left=["Palette cloud account: already gone"])
    return Decision([Removal("paletteAccount", f"Palette cloud account {account.account_name} ({palette_uid})",
                             {"uid": palette_uid, "projectUid": account.project_uid})])


def decide_keys(request: OffboardingRequest, account: AccountRecord, clients: Services) -> Decision:
    palette = clients.palette
    remove: list[Removal] = []
    left: list[str] = []
    if account.ssh_key_uid:
        label = f"SSH key {account.ssh_key_name} ({account.ssh_key_uid})"
        if not request.remove_ssh_key:
            left.append(f"{label}: kept, as removeSshKey is false")
        elif not account.ssh_key_owned:
            left.append(f"{label}: not uploaded by this product")
        elif users := _ssh_key_users(clients, account):
            left.append(f"{label}: other managed accounts use it ({', '.join(users)})")
        else:
            remove.append(Removal("sshKey", label, {
                "uid": account.ssh_key_uid, "name": account.ssh_key_name,
                "projectUid": account.ssh_key_project_uid, "project": account.ssh_key_project}))
    for uid in dict.fromkeys(filter(None, (account.api_key_uid, account.previous_api_key_uid))):
        try:
            key = palette.get_api_key(uid)
        except ResourceNotFoundError:
            continue
        label = f"Palette API key {key.name} ({uid})"
        if not credentials.made_by_product(key.annotations):
            left.append(f"{label}: not made by this product")
        elif not request.remove_api_key:
            left.append(f"{label}: kept, as removeApiKey is false")
        else:
            remove.append(Removal("apiKey", label, {"uid": uid}))
    return Decision(remove, left)


def _ssh_key_users(clients: Services, account: AccountRecord) -> list[str]:
    """Other managed accounts recorded with the same SSH key."""
    others = clients.inventory.query("Status eq @managed and SshKeyUid eq @uid",
                                     {"managed": MANAGED, "uid": account.ssh_key_uid})
    return sorted(other.account_name for other in others if other.account_name != account.account_name)


def decide_passwords(account: AccountRecord, clients: Services) -> Decision:
    graph_passwords = _decide_graph_passwords(account, clients)
    return Decision(graph_passwords.remove, [*graph_passwords.left, *holders_left(account, clients)])


def holders_left(account: AccountRecord, clients: Services) -> list[str]:
    """Other holders of the principal's secret (Azure backup locations in the account's scope): an
    offboarding neither deletes nor changes them, and names each, since the passwords it removes may
    be the ones they sign in with."""
    if not account.client_id:
        return []
    try:
        found = holders.find(clients.palette, account)
    except HttpResponseError as exc:
        if exc.status_code is None or not 400 <= exc.status_code < 500 or exc.status_code == 429:
            raise  # transient: the step is tried again
        return [f"Azure backup locations: Palette refused to list them ({exc.status_code}), so any that sign in as "
                f"app {account.client_id} are not named here"]
    left = []
    for location in found:
        key_id = account.holders.get(location.uid)
        uses = f"Graph password {key_id}, which this product gave it" if key_id else "a password removed here"
        left.append(f"Azure backup location {location.name} ({location.uid}): signs in as app {account.client_id} "
                    f"and is left unchanged; it stops working if it uses {uses}")
    return left


def _decide_graph_passwords(account: AccountRecord, clients: Services) -> Decision:
    graph = clients.graph
    if graph is None or not account.client_id:
        if account.current_key_id or account.previous_key_id:
            return Decision(left=["Graph passwords: this deployment cannot reach Microsoft Graph for the app"])
        return Decision()
    try:
        passwords = graph.get_application(account.client_id).passwords
    except ResourceNotFoundError:
        return Decision(left=[f"Graph passwords: app registration {account.client_id} is gone, or this app's "
                              "identity no longer owns it"])
    remove: list[Removal] = []
    left: list[str] = []
    for password in passwords:
        if credentials.is_product_password(password.display_name, account.account_name):
            remove.append(Removal("graphPassword", f"Graph password {password.key_id}",
                                  {"appId": account.client_id, "keyId": password.key_id}))
        elif credentials.is_product_password(password.display_name):
            left.append(f"Graph password {password.key_id}: made by this product for another account")
        else:
            left.append(f"Graph password {password.key_id}: not made by this product")
    return Decision(remove, left)


def decide_secrets(account: AccountRecord, clients: Services) -> Decision:
    store = clients.secrets
    remove: list[Removal] = []
    left: list[str] = []
    for kind in SecretKind:
        name = credentials.secret_name(account.account_name, kind)
        versions = store.list_versions(name)
        if not versions:
            continue
        if not credentials.is_secret_of(versions[0].tags, account.account_name, kind):
            left.append(f"Key Vault secret {name}: not written by this product for the account")
            continue
        remove.append(Removal("keyVaultSecret", f"Key Vault secret {name} (soft-deleted: recoverable for the "
                              "vault's retention period)", {"name": name}))
    if account.secret_name and credentials.parse_secret_name(account.secret_name) is None:
        left.append(f"Key Vault secret {account.secret_name}: the operator's, named by the onboarding request")
    return Decision(remove, left)


# ------------------------------------------------------------------------------------ the steps

@dataclass
class OffboardingContext(WorkContext):
    request: OffboardingRequest

    @property
    def account(self) -> AccountRecord:
        account = self.clients.inventory.get(self.account_name)
        if account is None:
            raise PermanentStepError("check", "not_managed",
                                     f"Account '{self.account_name}' is no longer in the inventory.")
        return account

    @property
    def skipped(self) -> bool:
        return bool(self.result(SKIPPED))


def check(ctx: OffboardingContext) -> StepDone:
    found = check_account(ctx.request, ctx.clients)
    if found.failure is not None:
        raise found.failure
    if found.offboarded:
        return StepDone("already offboarded: nothing to do", {SKIPPED: "already offboarded"},
                        outcome=StepOutcome.SKIPPED)
    detail = "the account is the product's and no cluster uses it" if found.palette_uid else \
        "the account is the product's; its Palette account is already gone"
    return StepDone(detail, {ACCOUNT_UID: found.palette_uid})


def _carry_out(ctx: OffboardingContext, step: str, decide: Callable[[], Decision]) -> StepDone:
    """Decide once (recorded before anything is removed), then carry the decision out."""
    if ctx.skipped:
        return StepDone("skipped: already offboarded", outcome=StepOutcome.SKIPPED)
    recorded = ctx.result(f"{DECIDED}{step}")
    decision = Decision.from_json(recorded) if recorded else decide()
    if not recorded:
        ctx.handle.write(lambda row: row.results.update({f"{DECIDED}{step}": decision.to_json()}))
    done: list[str] = []
    left = list(decision.left)
    for removal in decision.remove:
        ctx.handle.fence()
        kept = _remove(ctx, removal)
        if kept is None:
            done.append(removal.what)
        else:
            left.append(f"{removal.what}: {kept}")
        ctx.checkpoint(f"{step}.removed")
    return StepDone(removed_and_left_detail(done, left),
                    {f"{REMOVED}{step}": json.dumps(done), f"{LEFT}{step}": json.dumps(left)})


def removed_and_left_detail(removed: list[str], left: list[str]) -> str:
    """A step's detail: what it removed and what it left (with why), each by kind and id or name,
    as the decision words them: never a secret value."""
    def named(items: list[str]) -> str:
        more = f"; and {len(items) - MAX_NAMED_IN_DETAIL} more" if len(items) > MAX_NAMED_IN_DETAIL else ""
        return "; ".join(items[:MAX_NAMED_IN_DETAIL]) + more

    if not removed and not left:
        return "Nothing to remove."
    return " ".join([f"Removed: {named(removed)}." if removed else "Removed nothing.",
                     f"Left: {named(left)}." if left else "Left nothing."])


def _remove(ctx: OffboardingContext, removal: Removal) -> str | None:
    """Carry out one removal; succeeds when it is already done. Returns why it was kept instead
    (only an SSH key another account took up meanwhile), else None."""
    ids = removal.ids
    palette = ctx.clients.palette
    if removal.kind == "paletteAccount":
        palette.delete_azure_account(ids["uid"], project_uid=ids.get("projectUid") or None)
    elif removal.kind == "sshKey":
        return _remove_ssh_key(ctx, ids)
    elif removal.kind == "apiKey":
        try:
            palette.revoke_api_key(ids["uid"])
        except ResourceNotFoundError:
            return None
        palette.delete_api_key(ids["uid"])
    elif removal.kind == "graphPassword":
        graph = ctx.clients.graph
        assert graph is not None  # decided only when Graph is reachable
        try:
            graph.remove_password(ids["appId"], ids["keyId"])
        except ResourceNotFoundError:
            logger.info("the app of password %s is gone: nothing to remove", ids["keyId"])
    elif removal.kind == "keyVaultSecret":
        ctx.clients.secrets.delete_secret(ids["name"])
    else:  # pragma: no cover - a decision this code did not make
        raise ValueError(f"unknown removal kind {removal.kind!r}")
    return None


def _remove_ssh_key(ctx: OffboardingContext, ids: dict[str, str]) -> str | None:
    """Delete the SSH key under its name's lease, so no onboarding takes it up meanwhile; an
    account recorded with it since the decision keeps it."""
    from shared.engine.leases import NameLeases

    lease = NameLeases(ctx.clients.state, ctx.request_id, [credentials.ssh_key_lease(ids["project"], ids["name"])])
    held = lease.acquire(utcnow() + dt.timedelta(seconds=SSH_KEY_LEASE_SECONDS))
    if held is not None:
        raise StepInProgressError(f"Request {held.owner} is using SSH key {ids['name']}; the offboarding "
                                  "removes it once that request is done.")
    try:
        users = _ssh_key_users(ctx.clients, ctx.account)
        if users:
            return f"kept, as other managed accounts use it now ({', '.join(users)})"
        ctx.clients.palette.delete_ssh_key(ids["uid"], project_uid=ids.get("projectUid") or None)
        return None
    finally:
        lease.release()


def remove_account(ctx: OffboardingContext) -> StepDone:
    return _carry_out(ctx, "account", lambda: decide_account(ctx.result(ACCOUNT_UID) or "", ctx.account))


def remove_keys(ctx: OffboardingContext) -> StepDone:
    return _carry_out(ctx, "keys", lambda: decide_keys(ctx.request, ctx.account, ctx.clients))


def remove_passwords(ctx: OffboardingContext) -> StepDone:
    return _carry_out(ctx, "passwords", lambda: decide_passwords(ctx.account, ctx.clients))


def remove_secrets(ctx: OffboardingContext) -> StepDone:
    return _carry_out(ctx, "secrets", lambda: decide_secrets(ctx.account, ctx.clients))
