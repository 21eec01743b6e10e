"""What a request makes, written down before the call that makes it, and how a request that fails
takes it back.

Every create goes through a *fence* (:meth:`shared.engine.record.RecordHandle.fence`): one
conditional write of the request's row that proves the delivery still holds the request and
records, for each object the calls right after it may make, a :class:`Made` entry in the
``sending`` state: its kind, and how to find it by the proof the product leaves on everything it
makes (:mod:`shared.credentials`: the requestId in a Palette object's annotations, a Graph
password's display name, a Key Vault version's ``request-id`` tag). The step's result then
records the entry ``made``, with its ids. So whatever a crash interrupts, the row says what may
exist and how to find it.

A request that fails takes back (:func:`take_back`) every entry it still owns: by its ids, or, for
one left ``sending``, by the proof. An entry something else now depends on (a password the request
put into an account it did not make) is ``kept``: reported, never removed. Nothing is removed that
does not carry this request's proof.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import ResourceNotFoundError

from shared import credentials

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from shared.services import Services

T = TypeVar("T")


class Kind(StrEnum):
    GRAPH_PASSWORD = "graphPassword"
    PALETTE_ACCOUNT = "paletteAccount"
    SSH_KEY = "sshKey"
    API_KEY = "paletteApiKey"
    KEY_VAULT_VERSION = "keyVaultVersion"
    #: An inline client secret the HTTP intake keeps under a name of its own until the request
    #: passed its checks (see :mod:`shared.onboarding.staging`).
    STAGED_SECRET = "stagedSecret"


class State(StrEnum):
    SENDING = "sending"  # the call that makes it may have gone out: look for it by the proof
    MADE = "made"        # it exists, with these ids
    KEPT = "kept"        # something this request did not make depends on it: never taken back


@dataclass(frozen=True)
class Made:
    """One object a request makes: ``find`` says how to look for it (names, the app), ``ids``
    what identifies it once made (a keyId, a uid, a Key Vault version)."""

    kind: Kind
    find: Mapping[str, str]
    ids: Mapping[str, str] = field(default_factory=dict)
    state: State = State.SENDING
    why: str = ""

    def made(self, **ids: str) -> Made:
        return replace(self, ids={**self.ids, **ids}, state=State.MADE)

    def kept(self, why: str) -> Made:
        return replace(self, state=State.KEPT, why=why)

    @property
    def owned(self) -> bool:
        """Whether a failure of the request takes it back."""
        return self.state is not State.KEPT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "state": self.state.value, "find": dict(self.find)}
        if self.ids:
            out["ids"] = dict(self.ids)
        if self.why:
            out["why"] = self.why
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Made:
        return cls(Kind(data["kind"]), dict(data.get("find") or {}), dict(data.get("ids") or {}),
                   State(data.get("state") or State.SENDING.value), str(data.get("why") or ""))

    def describe(self) -> str:
        """The object in words, for events and the state (never a secret)."""
        find, ids = self.find, self.ids
        if self.kind is Kind.GRAPH_PASSWORD:
            return f"Graph password {ids.get('keyId') or repr(find.get('displayName'))} of app {find.get('appId')}"
        if self.kind is Kind.PALETTE_ACCOUNT:
            return f"Palette cloud account {find.get('name')}" + (f" ({ids['uid']})" if ids.get("uid") else "")
        if self.kind is Kind.SSH_KEY:
            return f"Palette SSH key {find.get('name')}" + (f" ({ids['uid']})" if ids.get("uid") else "")
        if self.kind is Kind.API_KEY:
            return f"Palette API key {find.get('name')}" + (f" ({ids['uid']})" if ids.get("uid") else "")
        if self.kind is Kind.KEY_VAULT_VERSION:
            version = ids.get("version")
            return f"Key Vault secret {find.get('name')}" + (f" version {version}" if version else " (this request's "
                                                                                                   "version)")
        return f"Key Vault secret {find.get('name')} (the staged inline secret)"


# -- what each step makes ---------------------------------------------------------------------------

def graph_password(app_id: str, display_name: str) -> Made:
    return Made(Kind.GRAPH_PASSWORD, {"appId": app_id, "displayName": display_name})


def palette_account(name: str, project_uid: str | None) -> Made:
    return Made(Kind.PALETTE_ACCOUNT, {"name": name, "projectUid": project_uid or ""})


def ssh_key(name: str, project_uid: str) -> Made:
    return Made(Kind.SSH_KEY, {"name": name, "projectUid": project_uid})


def api_key(name: str) -> Made:
    return Made(Kind.API_KEY, {"name": name})


def key_vault_version(name: str) -> Made:
    return Made(Kind.KEY_VAULT_VERSION, {"name": name})


def staged_secret(name: str) -> Made:
    return Made(Kind.STAGED_SECRET, {"name": name})


# -- taking it back ---------------------------------------------------------------------------------

def take_back(entry: Made, request_id: str, clients: Services) -> str:
    """Remove what ``entry`` made (only with ``request_id``'s proof on it); returns what was
    removed in words, '' when nothing of this request's was found. Removing twice is harmless.

    Raises
    ------
    azure.core.exceptions.AzureError
        A service refused or failed: the entry stays for a later try (the sweeper's).
    """
    find, ids = entry.find, entry.ids
    palette = clients.palette

    def ours(annotations: Mapping[str, str], uid: str) -> bool:
        return credentials.made_by_request(annotations, request_id) and ids.get("uid", uid) == uid

    if entry.kind is Kind.GRAPH_PASSWORD:
        return _remove_passwords(entry, clients)
    if entry.kind in (Kind.PALETTE_ACCOUNT, Kind.SSH_KEY):
        project = find.get("projectUid") or None
        account = entry.kind is Kind.PALETTE_ACCOUNT
        found = (palette.find_azure_account if account else palette.find_ssh_key)(find["name"], project_uid=project)
        if found is None or not ours(found.annotations, found.uid):
            return ""
        (palette.delete_azure_account if account else palette.delete_ssh_key)(found.uid, project_uid=project)
        return f"Palette {'cloud account' if account else 'SSH key'} {found.name} ({found.uid})"
    if entry.kind is Kind.API_KEY:
        removed = []
        for key in palette.list_api_keys():
            if key.name == find["name"] and ours(key.annotations, key.uid):
                palette.delete_api_key(key.uid)
                removed.append(f"Palette API key {key.name} ({key.uid})")
        return ", ".join(removed)
    if entry.kind is Kind.KEY_VAULT_VERSION:
        store = clients.secrets
        disabled = []
        for version in store.list_versions(find["name"]):
            if version.enabled and version.tags.get(credentials.REQUEST_ID_TAG) == request_id \
                    and (not ids.get("version") or version.version == ids["version"]):
                store.disable_version(find["name"], version.version)
                disabled.append(version.version)
        return f"Key Vault secret {find['name']} version {', '.join(disabled)} (disabled)" if disabled else ""
    # The staged inline secret: named for this request alone.
    store = clients.secrets
    versions = store.list_versions(find["name"])
    if not versions or versions[0].tags.get(credentials.REQUEST_ID_TAG) != request_id:
        return ""
    store.delete_secret(find["name"])
    return f"Key Vault secret {find['name']} (the staged inline secret, soft-deleted)"


def _remove_passwords(entry: Made, clients: Services) -> str:
    graph = clients.graph
    if graph is None:
        raise RuntimeError("Microsoft Graph is not configured; the password cannot be removed.")
    app_id = entry.find["appId"]
    try:
        passwords = graph.get_application(app_id).passwords
    except ResourceNotFoundError:
        return ""  # the app is gone, and its passwords with it
    key_id = entry.ids.get("keyId")
    removed = []
    for password in passwords:
        if password.key_id == key_id or password.display_name == entry.find["displayName"]:
            graph.remove_password(app_id, password.key_id)
            removed.append(password.key_id)
    return f"Graph password {', '.join(removed)} of app {app_id}" if removed else ""


#: Statuses after which a creating call may have been carried out (the server answered late or
#: not at all), so its step looks for what it made before calling again.
MAYBE_DONE_STATUSES = frozenset({500, 502, 503, 504})


def maybe_done(exc: BaseException) -> bool:
    """True when a creating call failed in a way that does not prove nothing was created."""
    from azure.core.exceptions import HttpResponseError, ServiceResponseError

    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    return isinstance(exc, ServiceResponseError) or status in MAYBE_DONE_STATUSES


#: A create whose outcome is unknown is looked for and, if absent, tried again this many times.
CREATE_ATTEMPTS = 3


def create_once(create: Callable[[], T], recover: Callable[[], T | None], *,
                sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``create``; when it fails in a way that leaves unknown whether it happened (a 5xx, a
    lost answer), ask ``recover`` for what it made (by this request's proof) before trying again.
    ``recover`` returns the object to keep, or None once nothing of this request's is left (it
    removes what it cannot keep, such as a password whose value was lost with the answer)."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return create()
        except Exception as exc:
            if not maybe_done(exc):
                raise
            found = recover()
            if found is not None:
                return found
            if attempt == CREATE_ATTEMPTS:
                raise
            sleep(0.5 * attempt * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")  # pragma: no cover
