"""The services every operation talks to, built once per worker process by the trigger layer.

One bundle serves onboarding, rotation, offboarding, the sweeper and the drift pass alike; each
member is a small client over one service (``shared/clients``), a table store (``shared/state``),
or the worker's source of RSA key pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.clients.authorization import AuthorizationReader
    from shared.clients.entra import ClientSecretProbe
    from shared.clients.events import EventSink
    from shared.clients.graph import GraphClient
    from shared.clients.keyvault import SecretStore
    from shared.clients.palette import PaletteClient
    from shared.keypairs import KeyPairs
    from shared.state import StateStore
    from shared.state.inventory import InventoryStore


def _key_pairs() -> KeyPairs:
    from shared.keypairs import KeyPairs

    return KeyPairs()


@dataclass
class Services:
    """Palette, Graph, Key Vault, the events topic, the state and inventory tables."""

    palette: PaletteClient
    graph: GraphClient | None
    secrets: SecretStore
    events: EventSink
    state: StateStore
    inventory: InventoryStore
    #: Proves a client secret works (a client-credentials token); rotation waits on it.
    entra: ClientSecretProbe | None = None
    #: RSA pairs for generated SSH keys, made ahead (one source per worker process).
    key_pairs: KeyPairs = field(default_factory=_key_pairs)
    #: Reads an onboarded principal's Azure role assignments (``azure.permissions``).
    authorization: AuthorizationReader | None = None
