"""An inline client secret, from the HTTP intake to the account's Key Vault secret, without ever
being written where rotation, drift or offboarding read before its request passed its checks.

1. **Stage** (the intake, :func:`stage`): the value goes into a secret of its own,
   ``palette-staged-<digest of the requestId>`` (and of the run, for a later run of a refused request:
   :func:`shared.credentials.staged_secret_name`),
   tagged as a staged secret of that request; the queued request names it and its version
   (``{"source": "staged", ...}``), and the request's row records it as made (:mod:`shared.made`).
   The queue never carries the value.
2. **Check** (the worker, under the account's lease): the staged secret must be this request's
   (``shared.onboarding.checks``), and the account's client-secret name usable.
3. **Promote** (the secret step, :func:`promote`): the value is written as a new version of the
   account's client secret, with the product's tags, and the staged secret is deleted.

A request that fails before step 3 (refused by its checks, dead-lettered, stuck) takes back what
it made, the staged secret with it: nothing of a refused request stays in Key Vault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared import credentials, made
from shared.credentials import SecretKind

if TYPE_CHECKING:
    from pydantic import SecretStr

    from shared.clients.keyvault import StoredSecret
    from shared.engine.record import RecordHandle
    from shared.models import OnboardingRequest, StagedSecret
    from shared.services import Services

#: The key the staged secret is recorded under in the request's ``made`` (shared.made).
STAGED = "staged"


def stage(request: OnboardingRequest, clients: Services, *, run: int = 1) -> tuple[OnboardingRequest, made.Made]:
    """Keep ``request``'s inline secret under the staging name of its ``run`` (a refused request
    run again stages under a name of its own: the first run's staged secret was soft-deleted, and
    Key Vault refuses a deleted name); returns the request as it is queued (naming the staged
    version) and the entry that records it."""
    secret = request.azure.secret
    value = getattr(secret, "value", None)
    assert value is not None
    name = credentials.staged_secret_name(request.request_id, run=run)
    tags = {**credentials.secret_tags(request.account_name, SecretKind.CLIENT_SECRET, request_id=request.request_id,
                                      tenant_id=request.azure.tenant_id, client_id=request.azure.client_id),
            credentials.KIND_TAG: credentials.STAGED_PURPOSE}
    stored = clients.secrets.set_secret(name, value, content_type=credentials.CONTENT_TYPES[SecretKind.CLIENT_SECRET],
                                        tags=tags)
    return request.with_staged_secret(name, stored.version), made.staged_secret(name).made(version=stored.version)


def is_staged_for(stored: StoredSecret, request: OnboardingRequest) -> bool:
    """Whether ``stored`` is the staged secret of ``request`` itself (and of no other request)."""
    tags = stored.tags
    return (credentials.is_product_secret(tags) and tags.get(credentials.KIND_TAG) == credentials.STAGED_PURPOSE
            and tags.get(credentials.REQUEST_ID_TAG) == request.request_id
            and tags.get(credentials.ACCOUNT_TAG) == request.account_name)


def promote(handle: RecordHandle, clients: Services, request: OnboardingRequest,
            staged: StagedSecret) -> tuple[SecretStr, StoredSecret]:
    """Write the staged value as the account's client secret (once: a resumed step finds the
    version it wrote), then delete the staged secret; returns the value and the version. The
    caller has passed the checks and holds the account's lease; the version written is recorded
    as made by this request."""
    from shared.onboarding.keys import CLIENT_SECRET_VERSION

    store = clients.secrets
    name = request.derived_names.client_secret
    kept = store.find_version(name, tag=credentials.REQUEST_ID_TAG, value=request.request_id)
    handle.fence(**{CLIENT_SECRET_VERSION: made.key_vault_version(name)})
    if kept is not None and kept.enabled:
        value, stored = store.get_secret(name, kept.version)
    else:
        value, _ = store.get_secret(staged.secret_name, staged.version)
        tags = credentials.secret_tags(request.account_name, SecretKind.CLIENT_SECRET, request_id=request.request_id,
                                       tenant_id=request.azure.tenant_id, client_id=request.azure.client_id)
        stored = store.set_secret(name, value, content_type=credentials.CONTENT_TYPES[SecretKind.CLIENT_SECRET],
                                  tags=tags)
    store.delete_secret(staged.secret_name)
    return value, stored
