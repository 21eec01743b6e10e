"""What the benchmarks share: a local stack of their own, request bodies, the stand-ins' knobs and
records, an independent event subscriber, host processes, and the one output format.

Every figure is one line on stdout, ``name: value unit (target: ...)``; progress goes to stderr.
Nothing here asserts: a missed target is a figure like any other.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from devstack.hostproc import HostProcess
    from devstack.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The stand-ins the network knobs apply to: Palette, Key Vault, Entra ID/Graph (HTTPS) and the
#: managed-identity endpoint (plain HTTP, the same identity stand-in).
SERVICES = ("palette", "keyvault", "identity", "msi", "arm")
#: The Palette stand-in's own sign-in to Entra when it validates credentials (as Palette asks Azure).
STAND_IN_USER_AGENT = "^devstack-"
EVENT_PREFIX = "palette.onboarding."
#: The events of a successful onboarding with every option, one of each.
FULL_EVENTS = ("requested", "secret.stored", "account.registered", "sshkey.uploaded", "apikey.created", "validated")


#: The tenant resource limits a benchmark's Palette gets: its onboardings and seeded accounts are
#: many more than Palette's defaults allow (200 cloud accounts, 300 SSH keys, 20 API keys per user,
#: and the requests' keys all belong to admin@example.com). 10,000 is the most Palette lets an admin set.
BENCH_LIMITS = {"cloudaccount": 10_000, "sshkey": 10_000, "apiKey": 10_000}


def raise_palette_limits(settings: dict[str, str], limits: dict[str, int] | None = None) -> None:
    """Raise the tenant's resource limits as a Palette admin does: ``PATCH
    /v1/tenants/{tenantUid}/resourceLimits`` with the stack's admin key."""
    import requests

    endpoint, headers = settings["PALETTE_ENDPOINT"], {"ApiKey": settings["PALETTE_API_KEY"]}
    tenant = requests.get(f"{endpoint}/v1/users/info", headers=headers, timeout=30).json()["tenantUid"]
    resources = [{"kind": kind, "limit": limit} for kind, limit in (limits or BENCH_LIMITS).items()]
    requests.patch(f"{endpoint}/v1/tenants/{tenant}/resourceLimits", headers=headers, json={"resources": resources},
                   timeout=30).raise_for_status()


def figure(name: str, value: float | int | str, unit: str = "", target: str = "none", *,
           digits: int = 2) -> None:
    """Print one figure: ``name: value unit (target: ...)``."""
    shown = str(value)
    if isinstance(value, float):
        shown = "nan" if math.isnan(value) else f"{value:.{digits}f}"
    print(f"{name}: {shown}{' ' + unit if unit else ''} (target: {target})", flush=True)


def say(message: str) -> None:
    """Progress, on stderr (stdout carries the figures only)."""
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else float("nan")


def rate_prefix(path: str) -> str:
    """Palette's rate-limit bucket of a path: its first two segments."""
    return "/" + "/".join([s for s in path.split("?")[0].split("/") if s][:2])


@dataclass
class Bodies:
    """Request bodies with every option: tenant name, properties off, a validity, the Private Cloud
    Gateway, an SSH key (generated, or a given public key), an API key and both cluster types."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def one(self, client_id: str, number: int, *, generate_ssh_key: bool = True,
            public_key: str | None = None) -> dict[str, Any]:
        from devstack.stack import DEVSTACK_TENANT_ID

        name = f"bench-{self.tag}-{number:04d}"
        ssh: dict[str, Any] = {"name": name}
        if generate_ssh_key:
            ssh["generate"] = True
        else:
            ssh["publicKey"] = public_key or ed25519_public_key()
        return {
            "requestId": f"BENCH-{self.tag}-{number:04d}",
            "accountName": name,
            "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": client_id, "tenantName": "bench.example.com",
                      "disableProperties": True, "secret": {"source": "generate", "validityDays": 90}},
            "palette": {"privateCloudGateway": "pcg-east"},
            "sshKey": ssh,
            "apiKey": {"name": name, "description": "benchmark", "user": "admin@example.com", "expiresInDays": 30},
            "clusterTypes": ["iaas"] if not generate_ssh_key else ["iaas", "aks"],
        }


def ed25519_public_key() -> str:
    """A fresh OpenSSH public key line, made in microseconds (for requests that upload a key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class BenchStack:
    """A local stack in a temporary folder, with the admin calls the benchmarks make."""

    def __init__(self, *, palette_rate_per_second: float = 10, palette_burst: int = 5) -> None:
        from devstack.stack import Stack, StackOptions

        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.stack: Stack = Stack(StackOptions(workdir=self.workdir / "stack", tools_dir=ROOT / ".devstack" / "tools",
                                               palette_rate_per_second=palette_rate_per_second,
                                               palette_burst=palette_burst))
        self.settings: dict[str, str] = {}
        self.hosts: list[HostProcess] = []

    def __enter__(self) -> BenchStack:
        self.settings = self.stack.start()
        os.environ.update(self.settings)  # the SDKs find the CA bundle and the managed identity here
        raise_palette_limits(self.settings)
        return self

    def __exit__(self, *_exc: object) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop(timeout=10)
        self.stack.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def verify(self) -> str:
        return self.settings["REQUESTS_CA_BUNDLE"]

    def url(self, service: str) -> str:
        stack = self.stack
        server = {"palette": stack.palette, "keyvault": stack.keyvault, "identity": stack.identity_https,
                  "msi": stack.identity, "arm": stack.arm}[service]
        assert server is not None
        return server.url

    def admin(self, service: str, method: str, path: str, body: Any = None) -> Any:
        import requests

        response = requests.request(method, f"{self.url(service)}/_devstack/{path}", json=body, verify=self.verify,
                                    timeout=120)
        response.raise_for_status()
        return response.json() if response.content else None

    # -- knobs ------------------------------------------------------------------------------------

    def set_latency(self, ms: int, services: Iterable[str] = SERVICES) -> None:
        """Every request to these stand-ins waits ``ms`` first (a network between app and service)."""
        for service in services:
            self.admin(service, "POST", "latency", {"ms": ms})

    def add_faults(self, share: float, *, seed: int = 7, services: Iterable[str] = SERVICES) -> None:
        """``share`` of the app's calls to each stand-in fail, evenly: 429 with ``Retry-After``, 503
        after the work was done, a connection dropped before the request is read, and one dropped
        after it was carried out. The stand-ins' own calls to each other are spared."""
        kinds: list[dict[str, Any]] = [
            {"status": 429, "headers": {"Retry-After": "1"}},
            {"status": 503, "afterHandling": True},
            {"drop": True},
            {"dropAfterHandling": True},
        ]
        each = share / len(kinds)
        for service in services:
            taken = 0.0
            for number, kind in enumerate(kinds):
                # Faults are tried in turn; each applies to its share of what the ones before spared.
                probability = each / (1 - taken)
                taken += each
                self.admin(service, "POST", "faults", {"path": ".", "probability": probability,
                                                       "exceptUserAgent": STAND_IN_USER_AGENT,
                                                       "seed": seed * 100 + number, **kind})

    def clear_faults(self) -> None:
        for service in SERVICES:
            self.admin(service, "DELETE", "faults")

    def palette_config(self, **config: Any) -> None:
        self.admin("palette", "POST", "config", config)

    def seed_accounts(self, count: int) -> None:
        """``count`` Azure cloud accounts of another team's in the tenant (lookups must not list them)."""
        self.admin("palette", "POST", "cloudaccounts", {"namePrefix": "seeded", "count": count})

    def register_apps(self, count: int) -> list[str]:
        """``count`` app registrations in the stand-in's tenant; their client ids."""
        from devstack.stack import DEVSTACK_TENANT_ID

        ids = [str(uuid.uuid4()) for _ in range(count)]
        for client_id in ids:
            self.admin("identity", "POST", "applications", {"appId": client_id, "tenantId": DEVSTACK_TENANT_ID})
        return ids

    # -- records ------------------------------------------------------------------------------------

    def requests(self, service: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.admin(service, "GET", "requests")["items"]
        return items

    def clear_requests(self) -> None:
        for service in SERVICES:
            self.admin(service, "DELETE", "requests")

    def calls(self) -> dict[str, list[dict[str, Any]]]:
        """Every call the app made, by service: ``palette``, ``graph`` (Graph's ``/v1.0``), ``entra``
        (tokens: client credentials and managed identity), ``keyvault``, ``arm`` (Resource Manager);
        the Palette stand-in's own sign-ins are left out (they are Palette's calls, not the app's)."""
        identity = [r for r in self.requests("identity") + self.requests("msi") if not _stand_in(r)]
        return {
            "palette": self.requests("palette"),
            "graph": [r for r in identity if r["path"].startswith("/v1.0/")],
            "entra": [r for r in identity if not r["path"].startswith("/v1.0/")],
            "keyvault": self.requests("keyvault"),
            "arm": self.requests("arm"),
        }

    def stand_in_calls(self) -> list[dict[str, Any]]:
        """The Palette stand-in's own sign-ins to Entra (validations)."""
        return [r for r in self.requests("identity") if _stand_in(r)]

    # -- the app ------------------------------------------------------------------------------------

    def host(self, name: str, *, settings: dict[str, str] | None = None,
             extra_args: list[str] | None = None) -> HostProcess:
        """A host process (``python -m devstack run``) of the real app against this stack."""
        from devstack.hostproc import HostProcess

        host = HostProcess(self.workdir / name, {**self.settings, **(settings or {})}, extra_args=extra_args)
        self.hosts.append(host)
        return host

    def warm_host(self, subscriber: Subscriber, body: dict[str, Any], *, timeout: float = 120) -> HostProcess:
        """A host of the real app, serving, that has carried out one onboarding (``body``)."""
        host = self.host("host")
        host.start()
        host.wait_serving()
        say("warming the host with one onboarding ...")
        self.enqueue([body])
        subscriber.wait_for({body["requestId"]}, timeout=timeout)
        return host

    def enqueue(self, bodies: list[dict[str, Any]]) -> float:
        """Put the requests on the onboarding queue at once (one batch); the time just before."""
        from azure.servicebus import ServiceBusClient, ServiceBusMessage

        with ServiceBusClient.from_connection_string(self.settings["ServiceBusConnection"]) as client, \
                client.get_queue_sender(self.settings["ONBOARDING_QUEUE"]) as sender:
            sender.create_message_batch()  # the link is open before the clock starts
            batches = [sender.create_message_batch()]
            for body in bodies:
                message = ServiceBusMessage(json.dumps(body), message_id=body["requestId"],
                                            content_type="application/json")
                try:
                    batches[-1].add_message(message)
                except ValueError:  # the batch is full
                    batches.append(sender.create_message_batch())
                    batches[-1].add_message(message)
            began = time.time()
            for batch in batches:
                sender.send_messages(batch)
        return began

    def state_store(self) -> Any:
        from shared.settings import Settings
        from shared.state import TableStateStore

        return TableStateStore.from_connection_string(self.settings["AzureWebJobsStorage"],
                                                      Settings.from_mapping(self.settings).state_table)


def _stand_in(record: dict[str, Any]) -> bool:
    return str(record.get("headers", {}).get("user-agent", "")).startswith("devstack-")


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    request_id: str
    received: float


class Subscriber:
    """An independent reader of the events subscription, on a thread of its own: it counts every
    event it receives and when (as a ticketing system would see them)."""

    def __init__(self, settings: dict[str, str]) -> None:
        self._settings = settings
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-subscriber", daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from devstack.events import decode, subscription_receiver

        # It takes each event off the subscription (as a ticketing system does), so each is counted once.
        with subscription_receiver(self._settings, prefetch_count=100) as receiver:
            self._ready.set()
            while not self._stop.is_set():
                # One at a time: asked for several, the SDK waits 0.2 s for more after the first.
                batch = receiver.receive_messages(max_message_count=1, max_wait_time=0.5)
                now = time.time()
                for message in batch:
                    document = decode(message)
                    event = Event(str(document["id"]), str(document["type"]).removeprefix(EVENT_PREFIX),
                                  str((document.get("data") or {}).get("requestId", "")), now)
                    with self._lock:
                        self.events.append(event)
                    receiver.complete_message(message)

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def wait_for(self, request_ids: set[str], event_type: str = "validated", timeout: float = 600,
                 *, also_failed: bool = True) -> dict[str, Event]:
        """The first ``event_type`` (or ``failed``) event of each request, once all arrived or at
        the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, Event] = {}
            for event in self.snapshot():
                if event.request_id in request_ids and event.request_id not in found and (
                        event.type == event_type or (also_failed and event.type == "failed")):
                    found[event.request_id] = event
            if len(found) == len(request_ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def tally(self, request_ids: Iterable[str], expected: Iterable[str] = FULL_EVENTS) -> tuple[int, int, int]:
        """(finished, duplicates, lost): requests with a ``validated`` event, event ids received more
        than once, and expected events of the requests that never arrived."""
        wanted = set(request_ids)
        events = [e for e in self.snapshot() if e.request_id in wanted]
        ids = Counter(e.id for e in events)
        duplicates = sum(count - 1 for count in ids.values())
        seen: dict[str, set[str]] = {r: set() for r in wanted}
        for event in events:
            seen[event.request_id].add(event.type)
        lost = sum(len(set(expected) - types) for types in seen.values())
        finished = sum(1 for types in seen.values() if "validated" in types)
        return finished, duplicates, lost


def critical_chain(calls: Iterable[dict[str, Any]], latency_s: float) -> list[dict[str, Any]]:
    """The longest run of recorded calls that happened one after another: each began after the
    latency of the one before had passed (a call nested in another, as Palette's sign-in inside a
    validation, counts after it). With the stand-ins adding ``latency_s`` to each call on arrival,
    that is the number of round trips the chain waited for."""
    ordered = sorted(calls, key=lambda r: r["started"])
    best: list[list[dict[str, Any]]] = []
    for i, call in enumerate(ordered):
        chain = [call]
        for j in range(i):
            if ordered[j]["started"] + latency_s <= call["started"] + 1e-3 and len(best[j]) + 1 > len(chain):
                chain = [*best[j], call]
        best.append(chain)
    return max(best, key=len) if best else []


def describe(call: dict[str, Any]) -> str:
    """``METHOD /path`` with ids replaced by placeholders (Palette uids, app ids, tenants, names)."""
    path = call["path"]
    if path.startswith(("/v1.0/applications", "/v1.0/servicePrincipals")):
        head, _, tail = path.partition("(")
        path = head + "(...)" + (tail.rsplit(")", 1)[-1] if ")" in tail else "")
    elif "/providers/Microsoft.Authorization/" in path:
        path = "{scope}/providers/Microsoft.Authorization/" + path.split("/providers/Microsoft.Authorization/", 1)[1]
        path = re.sub(r"/roleDefinitions/[^/]+", "/roleDefinitions/{id}", path)
    elif "/oauth2/" in path:
        path = "/{tenant}/oauth2/v2.0/token"
    elif path.startswith(("/secrets/", "/deletedsecrets/")):
        parts = path.split("/")
        path = "/".join([*parts[:2], "{name}", *parts[3:]])
    else:
        path = "/".join("{uid}" if re.fullmatch(r"[0-9a-f]{24}", part) else part for part in path.split("/"))
    return f"{call['method']} {path}"


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` leaves the seconds taken in ``t[0]``."""
    holder = [0.0]
    began = time.monotonic()
    try:
        yield holder
    finally:
        holder[0] = time.monotonic() - began
