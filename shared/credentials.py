"""What the product makes, how it names it, and how it proves later that it made it.

One module owns every rule about the credentials and objects the onboarding creates, so that
onboarding, rotation and offboarding agree on them:

* **Key Vault secret names** (:func:`secret_name`): one secret per account and kind, named so that
  no two different (account, kind) pairs can ever share a name (:func:`parse_secret_name` inverts
  it). Versions of a secret are the generations of that credential; the key name a version holds
  (an SSH key's or an API key's Palette name) is in its tags.
* **Key Vault tags** (:func:`secret_tags`, :func:`is_product_secret`): every secret the product
  writes carries the managed-by marker, the account and the kind; that is how the product tells its
  own secrets from an operator's, and what it refuses to hand out as somebody else's client secret.
* **Palette annotations** (:func:`ownership_annotations`, :func:`made_by_product`,
  :func:`made_by_request`): every cloud account, SSH key and API key the product creates carries
  the managed-by marker and the requestId that wrote it. The product never deletes, updates or
  adopts a Palette object without that proof.
* **Graph passwords** (:func:`password_display_name`, :func:`issue_client_secret`,
  :func:`remove_passwords_of_request`): a password's display name carries the account and the
  requestId, its keyId is recorded before anything else can fail, and a password whose value could
  not be handed over to Key Vault is removed at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

    from pydantic import SecretStr

    from shared.clients.graph import GraphClient
    from shared.clients.keyvault import SecretStore, StoredSecret

logger = logging.getLogger(__name__)

PRODUCT = "palette-onboarding"


class SecretKind(StrEnum):
    """The kinds of secret the product keeps for an account; the value ends the secret name."""

    CLIENT_SECRET = "client-secret"
    SSH_KEY = "ssh-key"
    API_KEY = "api-key"


# --- Key Vault secret names ------------------------------------------------------------------

SECRET_NAME_PREFIX = "palette-"
MAX_SECRET_NAME_LENGTH = 127


#: The ``purpose`` tag of an inline secret the HTTP intake keeps until its request passed its checks.
STAGED_PURPOSE = "staged-client-secret"


def staged_secret_name(request_id: str, *, run: int = 1) -> str:
    """Where the HTTP intake keeps a request's inline secret until its checks passed:
    ``palette-staged-<40 hex digits of the requestId's SHA-256>`` (for a later run of the request,
    of ``<requestId>/run/<n>``). No account name can make it (it ends in no kind's suffix, so
    :func:`parse_secret_name` gives None): rotation, drift and offboarding never read it."""
    import hashlib

    seed = request_id if run <= 1 else f"{request_id}/run/{run}"
    return f"{SECRET_NAME_PREFIX}staged-{hashlib.sha256(seed.encode()).hexdigest()[:40]}"


def secret_name(account_name: str, kind: SecretKind) -> str:
    """The Key Vault secret that keeps ``kind`` for ``account_name``: ``palette-<account>-<kind>``.

    Why it cannot alias: account names are ``[a-z][a-z0-9-]{2,63}`` (lower case, so Key Vault's
    case-insensitive names change nothing), and no kind's ``-<kind>`` suffix is a suffix of
    another's (``-client-secret``, ``-ssh-key``, ``-api-key``). A name therefore ends in exactly one
    kind suffix, and stripping it and the prefix gives back the one account it was made from:
    :func:`parse_secret_name` is the inverse, so two different (account, kind) pairs never meet.
    The longest name is 8 + 64 + 14 = 86 characters, inside Key Vault's 127.

    Raises
    ------
    ValueError
        ``account_name`` is not a valid account name (the request schema rejects such names first).
    """
    from shared.models.fields import ACCOUNT_NAME_PATTERN

    if not ACCOUNT_NAME_PATTERN.fullmatch(account_name):
        raise ValueError("An account name must be 3-64 lower-case letters, digits or '-', starting with a letter.")
    return f"{SECRET_NAME_PREFIX}{account_name}-{SecretKind(kind).value}"


def parse_secret_name(name: str) -> tuple[str, SecretKind] | None:
    """The (account, kind) a product secret name was made from, or None for any other name."""
    from shared.models.fields import ACCOUNT_NAME_PATTERN

    lowered = name.lower()
    if not lowered.startswith(SECRET_NAME_PREFIX):
        return None
    rest = lowered[len(SECRET_NAME_PREFIX):]
    for kind in SecretKind:
        suffix = f"-{kind.value}"
        if rest.endswith(suffix):
            account = rest[: -len(suffix)]
            return (account, kind) if ACCOUNT_NAME_PATTERN.fullmatch(account) else None
    return None


# --- Key Vault tags --------------------------------------------------------------------------
# Key Vault allows 15 tags per secret. The CamelCase three are the names Microsoft's credential-
# rotation samples use, kept so their tooling understands our secrets.

MANAGED_BY_TAG = "managed-by"
ACCOUNT_TAG = "palette-account"
KIND_TAG = "purpose"
REQUEST_ID_TAG = "request-id"
"""The requestId that wrote this version: how a resumed step finds its own write."""
KEY_NAME_TAG = "key-name"
"""The Palette name of the SSH key or API key this version holds."""
PUBLIC_KEY_TAG = "public-key-sha256"
"""The OpenSSH SHA-256 fingerprint of a generated key pair's public half: which Palette key the
private key belongs to, readable without the value (and from a soft-deleted secret)."""
PALETTE_UID_TAG = "palette-uid"
TENANT_ID_TAG = "azure-tenant-id"
CLIENT_ID_TAG = "azure-client-id"
CREDENTIAL_ID_TAG = "CredentialId"
"""The Graph ``keyId`` of the password this version holds."""
PROVIDER_ADDRESS_TAG = "ProviderAddress"
VALIDITY_PERIOD_DAYS_TAG = "ValidityPeriodDays"

CONTENT_TYPES = {
    SecretKind.CLIENT_SECRET: "text/plain; purpose=azure-client-secret",
    SecretKind.SSH_KEY: "application/x-pem-file",
    SecretKind.API_KEY: "text/plain; purpose=palette-api-key",
}


def public_key_fingerprint(public_key: str) -> str:
    """``SHA256:<base64>`` of an OpenSSH public key's blob, as ``ssh-keygen -l`` prints it ('' when
    the key does not parse)."""
    import base64
    import binascii
    import hashlib

    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True) if len(parts) >= 2 else b""
    except (binascii.Error, ValueError):
        return ""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=") if blob else ""


def secret_tags(account_name: str, kind: SecretKind, *, request_id: str, tenant_id: str, client_id: str,
                **extra: str) -> dict[str, str]:
    """The tags of every version the product writes: who made it, for which account and request."""
    return {
        MANAGED_BY_TAG: PRODUCT,
        ACCOUNT_TAG: account_name,
        KIND_TAG: SecretKind(kind).value,
        REQUEST_ID_TAG: request_id,
        TENANT_ID_TAG: tenant_id,
        CLIENT_ID_TAG: client_id,
        **{key: value for key, value in extra.items() if value},
    }


def is_product_secret(tags: Mapping[str, str]) -> bool:
    """True when the product wrote the secret (its managed-by tag)."""
    return tags.get(MANAGED_BY_TAG) == PRODUCT


def is_secret_of(tags: Mapping[str, str], account_name: str, kind: SecretKind) -> bool:
    """True when the product wrote the secret as ``kind`` of ``account_name``."""
    return (is_product_secret(tags) and tags.get(ACCOUNT_TAG) == account_name
            and tags.get(KIND_TAG) == SecretKind(kind).value)


# --- Palette annotations ---------------------------------------------------------------------
# Palette's v1ObjectMeta (cloud accounts, API keys) and v1ObjectMetaInputEntity (SSH keys) carry a
# free-form annotations map; these two keys are the product's proof of authorship.

MANAGED_BY_ANNOTATION = f"{PRODUCT}/managed-by"
REQUEST_ID_ANNOTATION = f"{PRODUCT}/request-id"
SECRET_REF_ANNOTATION = f"{PRODUCT}/secret"
"""On a cloud account: which secret the product last put into it, ``key:<Graph keyId>`` or
``kv:<Key Vault version>``. Palette never shows the secret back; a full PUT by anybody else (a
Terraform apply with a stale secret) drops this annotation, which is how drift is seen."""


def ownership_annotations(request_id: str, *, secret_ref: str = "") -> dict[str, str]:
    annotations = {MANAGED_BY_ANNOTATION: PRODUCT, REQUEST_ID_ANNOTATION: request_id}
    if secret_ref:
        annotations[SECRET_REF_ANNOTATION] = secret_ref
    return annotations


def secret_ref(key_id: str | None, version: str | None) -> str:
    """The ``SECRET_REF_ANNOTATION`` value for a generated secret's keyId, else a Key Vault version."""
    return f"key:{key_id}" if key_id else f"kv:{version}" if version else ""


def made_by_product(annotations: Mapping[str, str]) -> bool:
    return annotations.get(MANAGED_BY_ANNOTATION) == PRODUCT


def made_by_request(annotations: Mapping[str, str], request_id: str) -> bool:
    return made_by_product(annotations) and annotations.get(REQUEST_ID_ANNOTATION) == request_id


# --- Graph passwords -------------------------------------------------------------------------

MAX_DISPLAY_NAME_CHARS = 256


def password_display_name(account_name: str, request_id: str) -> str:
    """``palette-onboarding <account> <requestId>``: names the password's maker in Entra's UI, and
    lets a retry find a password whose ``addPassword`` answer was lost."""
    return f"{PRODUCT} {account_name} {request_id}"


def is_product_password(display_name: str | None, account_name: str | None = None) -> bool:
    """Whether the product added the password (for ``account_name``, when given: two accounts may
    share one app registration, and each rotates only its own passwords)."""
    prefix = f"{PRODUCT} {account_name} " if account_name else f"{PRODUCT} "
    return bool(display_name) and str(display_name).startswith(prefix)


@dataclass(frozen=True)
class IssuedSecret:
    """A new client secret, in Key Vault; ``value`` lives only in memory for this delivery."""

    key_id: str
    value: SecretStr
    stored: StoredSecret
    end: datetime | None


class CredentialNotStoredError(Exception):
    """A password was added but its value could not be kept; ``removed`` says whether it was taken
    back (``False``: the caller must record the keyId for a later removal). ``__cause__`` is the
    Key Vault (or state store) failure."""

    def __init__(self, key_id: str, *, removed: bool) -> None:
        self.key_id = key_id
        self.removed = removed
        state = "it was removed again" if removed else "removing it failed too"
        super().__init__(f"Graph password {key_id} was added but its value could not be stored; {state}.")


def issue_client_secret(graph: GraphClient, store: SecretStore, *, app_id: str, account_name: str,
                        request_id: str, end: datetime, tags: Mapping[str, str],
                        record_key_id: Callable[[str], None],
                        alongside: Callable[[SecretStr], None] | None = None) -> IssuedSecret:
    """Add a Graph password and keep its value in the account's client-secret secret.

    ``record_key_id`` is called with the new keyId before the value is written anywhere, so that a
    crash after ``addPassword`` leaves a record of what to remove. If recording or the Key Vault
    write fails, the password is removed at once (its value can never be handed over later) and
    :class:`CredentialNotStoredError` is raised from the original failure.

    ``alongside`` gets the new value as soon as Graph returns it, for work that reads it without
    keeping it (Palette's validation); it must start that work on a thread of its own and return.

    Raises
    ------
    azure.core.exceptions.HttpResponseError
        Graph refused the password (nothing was made).
    CredentialNotStoredError
        The password was made, but not kept.
    """
    password = graph.add_password(app_id, display_name=password_display_name(account_name, request_id), end=end)
    if alongside is not None:
        alongside(password.secret_text)
    try:
        record_key_id(password.key_id)
        stored = store.set_secret(
            secret_name(account_name, SecretKind.CLIENT_SECRET), password.secret_text,
            content_type=CONTENT_TYPES[SecretKind.CLIENT_SECRET], expires_on=password.end or end,
            tags={**tags, CREDENTIAL_ID_TAG: password.key_id})
    except Exception as exc:
        removed = remove_password_quietly(graph, app_id, password.key_id)
        raise CredentialNotStoredError(password.key_id, removed=removed) from exc
    return IssuedSecret(key_id=password.key_id, value=password.secret_text, stored=stored, end=password.end)


def remove_password_quietly(graph: GraphClient, app_id: str, key_id: str) -> bool:
    """Remove one password the product made; True when it is gone (or was already)."""
    try:
        graph.remove_password(app_id, key_id)
    except Exception:
        logger.warning("could not remove Graph password %s of app %s", key_id, app_id, exc_info=True)
        return False
    logger.info("removed Graph password %s of app %s", key_id, app_id)
    return True


def remove_passwords_of_request(graph: GraphClient, app_id: str, account_name: str, request_id: str,
                                *, keep: str | None = None) -> list[str]:
    """Remove every password this request added (found by display name) except ``keep``: the
    ones whose ``addPassword`` answer was lost before their keyId could be recorded. Returns the
    keyIds removed."""
    wanted = password_display_name(account_name, request_id)
    removed = []
    for credential in graph.get_application(app_id).passwords:
        if credential.display_name == wanted and credential.key_id != keep:
            graph.remove_password(app_id, credential.key_id)
            removed.append(credential.key_id)
    return removed


def kept_version(store: SecretStore, account_name: str, kind: SecretKind, *, tag: str,
                 value: str) -> StoredSecret | None:
    """The newest version of the account's ``kind`` secret whose ``tag`` is ``value``."""
    return store.find_version(secret_name(account_name, kind), tag=tag, value=value)


# --- lease names -----------------------------------------------------------------------------
# What a request leases before it creates or changes a name (shared.engine.leases): the account,
# an SSH key in its project, an API key. Onboarding, rotation, offboarding and the drift pass take
# the same keys, so no two of them work on one name at once.

def account_lease(account_name: str) -> str:
    return f"account:{account_name}"


def ssh_key_lease(project: str, name: str) -> str:
    return f"sshkey:{project}:{name}"


def api_key_lease(name: str) -> str:
    return f"apikey:{name}"


def lease_key(key: str) -> str:
    """``key`` as a Table key: '/', '\\\\', '#', '?' and control characters are not allowed there."""
    return "".join(c if c.isprintable() and c not in "/\\#?" else f"%{ord(c):02x}" for c in key)
