"""What the stack seeds so that the requests in ``examples/`` work by hand exactly as in the demo.

For each example: its app registration in the identity stand-in (in the example's tenant, named
after the account) and, for an example that names a Key Vault secret, that secret, holding a value
Entra ID never issued for the app, so Palette's validation refuses it (``examples/03-*`` is meant
to fail). Seeds survive ``reset``. More app registrations can be added at run time with
``POST /_devstack/applications`` on the identity stand-in.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.identity.models import IdentityBackend
    from devstack.keyvault.models import KeyVaultBackend

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def seed_examples(identity: IdentityBackend, vault: KeyVaultBackend, examples: Path = EXAMPLES_DIR) -> list[str]:
    """Seed what every ``examples/*.json`` needs; returns one line per seed, to tell the user."""
    seeded = []
    for path in sorted(examples.glob("*.json")):
        example = json.loads(path.read_text())
        azure = example["azure"]
        identity.seed_application(app_id=azure["clientId"], tenant_id=azure["tenantId"],
                                  display_name=f"{example['accountName']} app")
        seeded.append(f"app registration {azure['clientId']} ({path.name})")
        secret = azure.get("secret") or {}
        if secret.get("source") == "keyVault":
            vault.seed_secret(secret["secretName"], f"not-this-apps-secret-{secrets.token_hex(8)}",
                              content_type="text/plain")
            seeded.append(f"Key Vault secret {secret['secretName']}, a value Entra ID never issued ({path.name})")
    return seeded
