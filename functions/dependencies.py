"""Settings and clients, built once per worker process on first use and then reused.

Clients hold connection pools (one ``requests.Session`` per service, one Service Bus sender), so
building them per invocation would cost a TLS handshake and an AMQP link every time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.clients.events import EventPublisher
    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.settings import Settings
    from shared.state.pace import SharedPace

_lock = threading.Lock()
#: The Key Vault secret name the warm-up reads (deleted secrets): no product secret has it.
WARM_UP_PROBE = "warm-up-probe"
_current: Dependencies | None = None


@dataclass
class Dependencies:
    settings: Settings
    credential: TokenCredential
    clients: Services
    queue: RequestQueue
    #: Timed rotations and API key renewals (``BACKGROUND_QUEUE``): never ahead of interactive work.
    background_queue: RequestQueue
    pace: SharedPace | None = None
    graph_pace: SharedPace | None = None

    def warm_up(self, timeout: float = 20) -> list[str]:
        """Make the first calls a new worker would otherwise make on its first onboarding, all at
        once: open the events link, learn the vault's challenge and token (a read of a name that
        cannot exist), fetch the Graph token, reach the state table, make RSA keys ahead. Returns
        what could not be warmed (each is made on first use instead); never raises."""
        from concurrent.futures import wait

        from shared.concurrency import in_thread

        work = {
            "events": self.clients.events.open_link,
            "keyVault": lambda: self.clients.secrets.get_deleted_secret(WARM_UP_PROBE),
            "stateTable": self.clients.state.check_reachable,
            "keyPairs": self.clients.key_pairs.fill,
        }
        if self.clients.graph is not None:
            work["graph"] = self.clients.graph.warm_up
        started = {name: in_thread(call, name="warm-up") for name, call in work.items()}
        wait(started.values(), timeout=timeout)
        return [name for name, future in started.items() if not future.done() or future.exception() is not None]

    def close(self) -> None:
        self.clients.palette.close()
        for pace in (self.pace, self.graph_pace):
            if pace is not None:
                pace.close()
        if self.clients.graph is not None:
            self.clients.graph.close()
        self.clients.secrets.close()
        self.clients.events.close()
        self.clients.state.close()
        self.clients.inventory.close()
        if self.clients.entra is not None:
            self.clients.entra.close()
        if self.clients.authorization is not None:
            self.clients.authorization.close()
        self.clients.key_pairs.close()
        self.queue.close()
        self.background_queue.close()


def build(settings: Settings) -> Dependencies:
    """Build every client from settings (managed identity in Azure; the local stack's equivalents)."""
    from azure.identity import DefaultAzureCredential

    from shared.clients.authorization import AuthorizationReader
    from shared.clients.entra import ClientSecretProbe
    from shared.clients.events import EventPublisher
    from shared.clients.graph import GraphClient
    from shared.clients.keyvault import SecretStore
    from shared.clients.palette import PaletteClient
    from shared.clients.queue import RequestQueue
    from shared.services import Services
    from shared.state import TableStateStore
    from shared.state.inventory import InventoryStore
    from shared.state.pace import GRAPH_BURST, GRAPH_WRITES, SharedPace, graph_usage_heard

    credential_kwargs = {}
    if settings.authority_host:
        credential_kwargs["authority"] = settings.authority_host
    credential = DefaultAzureCredential(**credential_kwargs)
    trust = settings.ca_bundle
    if settings.service_bus_connection:
        connection = settings.service_bus_connection
        events = EventPublisher.from_connection_string(connection, settings.events_topic, ca_bundle=trust)
        queue = RequestQueue.from_connection_string(connection, settings.onboarding_queue, ca_bundle=trust)
        background = RequestQueue.from_connection_string(connection, settings.background_queue, ca_bundle=trust)
    else:
        assert settings.service_bus_namespace is not None
        namespace = settings.service_bus_namespace
        events = EventPublisher.from_namespace(namespace, credential, settings.events_topic, ca_bundle=trust)
        queue = RequestQueue.from_namespace(namespace, credential, settings.onboarding_queue, ca_bundle=trust)
        background = RequestQueue.from_namespace(namespace, credential, settings.background_queue, ca_bundle=trust)
    if settings.storage_connection:
        state = TableStateStore.from_connection_string(settings.storage_connection, settings.state_table)
        inventory = InventoryStore.from_connection_string(settings.storage_connection, settings.inventory_table)
        pace = SharedPace.from_connection_string(settings.storage_connection, settings.pace_table,
                                                 settings.palette_rate_per_second, settings.palette_burst,
                                                 background_share=settings.palette_background_share)
        graph_pace = SharedPace.from_connection_string(settings.storage_connection, settings.pace_table,
                                                       settings.graph_writes_per_second, GRAPH_BURST,
                                                       background_share=settings.palette_background_share)
    else:
        assert settings.table_endpoint is not None
        state = TableStateStore.from_endpoint(settings.table_endpoint, credential, settings.state_table)
        inventory = InventoryStore.from_endpoint(settings.table_endpoint, credential, settings.inventory_table)
        pace = SharedPace.from_endpoint(settings.table_endpoint, credential, settings.pace_table,
                                        settings.palette_rate_per_second, settings.palette_burst,
                                        background_share=settings.palette_background_share)
        graph_pace = SharedPace.from_endpoint(settings.table_endpoint, credential, settings.pace_table,
                                              settings.graph_writes_per_second, GRAPH_BURST,
                                              background_share=settings.palette_background_share)
    clients = Services(
        palette=PaletteClient(settings.palette_endpoint, settings.palette_api_key, rate_limiter=pace),
        graph=GraphClient(settings.graph_endpoint, credential, scope=settings.graph_scope,
                          before_write=lambda: graph_pace.acquire(GRAPH_WRITES),
                          on_usage=lambda _kind, share: graph_usage_heard(graph_pace, share)),
        secrets=SecretStore(settings.key_vault_url, credential),
        events=events,
        state=state,
        inventory=inventory,
        entra=ClientSecretProbe(authority_host=settings.authority_host, scope=settings.graph_scope),
        authorization=AuthorizationReader(settings.resource_manager_endpoint, credential,
                                          scope=settings.resource_manager_scope),
    )
    _open_links_in_background(events)
    return Dependencies(settings=settings, credential=credential, clients=clients, queue=queue,
                        background_queue=background, pace=pace,
                        graph_pace=graph_pace)


def _open_links_in_background(events: EventPublisher) -> None:
    """The events sender's link opens while the first invocation does its other first calls (the
    state row, the leases), instead of when its first event is sent."""
    import logging

    from shared.concurrency import in_thread

    def open_quietly() -> None:
        try:
            events.open_link()
        except Exception:  # the first send opens it (or reports why it cannot)
            logging.getLogger(__name__).info("The events sender's link did not open ahead", exc_info=True)

    in_thread(open_quietly, name="events-link")


def get() -> Dependencies:
    """The worker's dependencies, built from the environment on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                from shared.settings import Settings

                _current = build(Settings.from_mapping(os.environ))
    return _current


def reset() -> None:
    """Drop the cached dependencies (the local runner calls this when settings change)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = None
