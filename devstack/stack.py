"""Start every stand-in of the local stack on free loopback ports and describe it as app settings.

``python -m devstack up`` and the pytest fixtures both use :class:`Stack`, so what the tests run
against is what a developer runs. The settings it writes are the app settings of product.md, plus
what the real SDKs need to reach loopback servers (``REQUESTS_CA_BUNDLE``, ``IDENTITY_ENDPOINT``,
``IDENTITY_HEADER``; ``HTTPS_PROXY`` and ``NO_PROXY`` so MSAL's instance discovery is answered
locally, see :mod:`devstack.identity.discovery`) and ``EVENTS_SUBSCRIPTION`` for tools that read
the events.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.azurite import RunningAzurite, start_azurite
from devstack.httpbase import RunningServer
from devstack.seeds import EXAMPLES_DIR, seed_examples
from devstack.tls import make_loopback_certificate

if TYPE_CHECKING:
    from devstack.identity.discovery import DiscoveryProxy
    from devstack.servicebus import RunningBroker
    from devstack.tls import LoopbackCertificate

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The team's reference folder sits beside the repository; the spec is read from there, never copied.
DEFAULT_SPEC_PATH = REPO_ROOT.parent / "shared" / "palette-api" / "palette-apis-spec.json"
DEFAULT_WORKDIR = REPO_ROOT / ".devstack"
ENTITIES_PATH = Path(__file__).resolve().parent / "entities.json"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# The Resource Manager stand-in takes tokens for the public cloud's audience, as ARM does; its own
# address is not a resource Entra knows, so the scope is a setting of its own (like GRAPH_SCOPE).
RESOURCE_MANAGER_SCOPE = "https://management.azure.com/.default"
# The Entra tenant of the app's managed identity on the local stack. Graph only lets an identity
# manage app registrations of its own tenant, so the examples' apps live in this tenant too.
DEVSTACK_TENANT_ID = "11111111-1111-4111-8111-111111111111"


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """How to start the stack.

    workdir: where the certificate, logs, Azurite data and ``settings.json`` go.
    tools_dir: where the pinned Azurite is installed (kept across runs).
    propagation_delay_seconds: how long Entra rejects a newly added client secret (real: 4-18 s).
    palette_rate_per_second / palette_burst: Palette's documented rate limit (0 disables).
    with_azurite: start the storage emulator (the state table needs it).
    examples_path: seed what the requests in this folder need (their app registrations, the Key
        Vault secret one names), so they work by hand as in the demo; None seeds nothing.
    """

    workdir: Path = DEFAULT_WORKDIR
    tools_dir: Path | None = None
    spec_path: Path = DEFAULT_SPEC_PATH
    entities_path: Path = ENTITIES_PATH
    propagation_delay_seconds: float = 0.0
    password_cap: int | None = None
    palette_rate_per_second: float = 10
    palette_burst: int = 5
    with_azurite: bool = True
    examples_path: Path | None = EXAMPLES_DIR


@dataclass
class Stack:
    """The running stand-ins; :meth:`start` brings them up, :meth:`stop` takes them down."""

    options: StackOptions = field(default_factory=StackOptions)
    settings: dict[str, str] = field(default_factory=dict)
    palette: RunningServer | None = None
    keyvault: RunningServer | None = None
    identity: RunningServer | None = None
    identity_https: RunningServer | None = None
    arm: RunningServer | None = None
    discovery_proxy: DiscoveryProxy | None = None
    broker: RunningBroker | None = None
    azurite: RunningAzurite | None = None
    certificate: LoopbackCertificate | None = None
    seeded: list[str] = field(default_factory=list)
    startup_seconds: float = 0.0
    managed_identity_client_id: str = ""

    def start(self) -> dict[str, str]:
        from devstack.arm import create_app as create_arm_app
        from devstack.identity import create_app as create_identity_app
        from devstack.identity.discovery import DISCOVERY_HOST, DiscoveryProxy, proxy_settings
        from devstack.keyvault import create_app as create_keyvault_app
        from devstack.palette import create_app as create_palette_app
        from devstack.palette import entra_credential_validator
        from devstack.servicebus import load_entities, start_broker

        began = time.monotonic()
        opts = self.options
        if not opts.spec_path.exists():
            raise FileNotFoundError(
                f"Palette's API spec was not found at {opts.spec_path}; the team's shared folder "
                "must sit beside the repository."
            )
        workdir = opts.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            if opts.with_azurite:
                # Azurite is a separate process: start it first so it boots while the rest starts.
                self.azurite = start_azurite(opts.tools_dir or workdir / "tools", workdir)
            cert = self.certificate = make_loopback_certificate(workdir / "tls")
            tls = cert.server_context()

            identity_header = secrets.token_urlsafe(24)
            tenant_id = DEVSTACK_TENANT_ID
            self.managed_identity_client_id = str(uuid.uuid4())
            identity_app = create_identity_app(
                identity_header=identity_header,
                managed_identity_tenant_id=tenant_id,
                managed_identity_client_id=self.managed_identity_client_id,
                propagation_delay_seconds=opts.propagation_delay_seconds,
                password_cap=opts.password_cap,
            )
            self.identity = RunningServer(identity_app)
            self.identity_https = RunningServer(identity_app, tls=tls)
            authority = self.identity_https.url
            self.discovery_proxy = DiscoveryProxy(identity_app, cert.context_for(DISCOVERY_HOST),
                                                  authority=authority)

            self.arm = RunningServer(create_arm_app(authority=authority, tenant_id=tenant_id), tls=tls)
            keyvault_app = create_keyvault_app(authority=authority, tenant_id=tenant_id,
                                               webhook_verify=str(cert.ca_path))
            self.keyvault = RunningServer(keyvault_app, tls=tls)
            if opts.examples_path is not None:
                self.seeded = seed_examples(identity_app.backend, keyvault_app.backend, opts.examples_path)
            palette_api_key = secrets.token_urlsafe(32)
            self.palette = RunningServer(create_palette_app(
                spec_path=opts.spec_path,
                api_key=palette_api_key,
                credential_validator=entra_credential_validator(authority, verify=str(cert.ca_path)),
                rate_per_second=opts.palette_rate_per_second,
                burst=opts.palette_burst,
            ))
            queues, topics = load_entities(opts.entities_path)
            # entities.json lists the onboarding queue first, then the background queue.
            onboarding_queue, background_queue = queues
            self.broker = start_broker(queues=queues, topics=topics, tls=cert.context_for)
            if self.azurite is not None:
                self.azurite.wait_ready()
            storage = (self.azurite.connection_string if self.azurite is not None
                       else "UseDevelopmentStorage=true")
            self.settings = {
                "PALETTE_ENDPOINT": self.palette.url,
                "PALETTE_API_KEY": palette_api_key,
                "KEY_VAULT_URL": self.keyvault.url + "/",
                "ServiceBusConnection": self.broker.connection_string,
                "ONBOARDING_QUEUE": onboarding_queue.name,
                "BACKGROUND_QUEUE": background_queue.name,
                "EVENTS_TOPIC": topics[0].name,
                "EVENTS_SUBSCRIPTION": topics[0].subscriptions[0].name,
                "AzureWebJobsStorage": storage,
                "GRAPH_ENDPOINT": authority,
                "GRAPH_SCOPE": GRAPH_SCOPE,
                "RESOURCE_MANAGER_ENDPOINT": self.arm.url,
                "RESOURCE_MANAGER_SCOPE": RESOURCE_MANAGER_SCOPE,
                "AZURE_AUTHORITY_HOST": authority,
                "ROTATION_SCHEDULE": "0 0 3 * * *",
                "ROTATION_THRESHOLD_DAYS": "30",
                "SWEEP_SCHEDULE": "0 */2 * * * *",
                "DRIFT_SCHEDULE": "0 30 4 * * *",
                "PYTHON_THREADPOOL_THREAD_COUNT": "60",  # as infra/app/api.bicep sets it
                "REQUESTS_CA_BUNDLE": str(cert.ca_path),
                "IDENTITY_ENDPOINT": f"{self.identity.url}/msi/token",
                "IDENTITY_HEADER": identity_header,
                **proxy_settings(self.discovery_proxy),
            }
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self.settings

    def identity_settings(self) -> dict[str, str]:
        """The settings with Service Bus reached as ``infra/app/api.bicep`` has the app reach it:
        no connection string, the namespace and the user-assigned identity (``__credential``,
        ``__clientId``, ``AZURE_CLIENT_ID``); the broker's TLS address stands for the namespace."""
        if self.broker is None or not self.broker.fully_qualified_namespace:
            raise RuntimeError("the stack is not running")
        settings = {name: value for name, value in self.settings.items() if name != "ServiceBusConnection"}
        settings.update({
            "ServiceBusConnection__fullyQualifiedNamespace": self.broker.fully_qualified_namespace,
            "ServiceBusConnection__credential": "managedidentity",
            "ServiceBusConnection__clientId": self.managed_identity_client_id,
            "AZURE_CLIENT_ID": self.managed_identity_client_id,
        })
        return settings

    def write_settings(self, path: Path | None = None) -> Path:
        target = path or self.options.workdir / "settings.json"
        target.write_text(json.dumps(self.settings, indent=2) + "\n")
        target.chmod(0o600)
        return target

    def reset(self) -> None:
        """Empty every stand-in (keeping seeds and entities) so a test starts from scratch."""
        for server in (self.palette, self.keyvault, self.identity, self.identity_https, self.arm):
            if server is not None:
                server.reset()
        if self.broker is not None:
            self.broker.reset()

    def describe(self) -> dict[str, Any]:
        return {
            "palette": self.palette.url if self.palette else None,
            "keyVault": self.keyvault.url if self.keyvault else None,
            "identity": self.identity_https.url if self.identity_https else None,
            "managedIdentity": self.identity.url if self.identity else None,
            "resourceManager": self.arm.url if self.arm else None,
            "serviceBus": f"sb://{self.broker.host}:{self.broker.port}" if self.broker else None,
            # Its host is ServiceBusConnection__fullyQualifiedNamespace in the identity form.
            "serviceBusAmqps": (f"amqps://{self.broker.fully_qualified_namespace}:5671"
                                if self.broker else None),
            "azuriteTable": self.azurite.table_port if self.azurite else None,
            "startupSeconds": round(self.startup_seconds, 3),
        }

    def stop(self) -> None:
        for server in (self.palette, self.keyvault, self.arm, self.identity_https, self.identity):
            if server is not None:
                server.stop()
        if self.discovery_proxy is not None:
            self.discovery_proxy.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.azurite is not None:
            self.azurite.stop()
        self.palette = self.keyvault = self.identity = self.identity_https = self.arm = None
        self.discovery_proxy = None
        self.broker = None
        self.azurite = None
