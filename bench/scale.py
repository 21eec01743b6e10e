"""Scale: the rotation sweep, a drift slice and an onboarding beside them, over tens of thousands of
managed accounts, with the stand-ins at Palette's and Graph's real limits.

Every account is seeded in bulk as an onboarding would have left it: a cloud account in Palette's
tenant scope carrying the product's annotations (the request that made it, the Graph keyId of its
secret), its client secret in Key Vault with the product's tags (``CredentialId`` that keyId), an
app registration in Graph holding that one password, and an inventory row
(``InventoryStore.create_many`` when the store has it, else ``create``, in worker processes). The
stand-ins take theirs through admin routes (``/_devstack/cloudaccounts/bulk``,
``/_devstack/secrets/bulk``, ``/_devstack/applications/bulk``), thousands per call.

Two local stacks, one after the other:

1. **The sweep against accounts managed** (``--sizes``, ``--due``). At each size (more accounts
   seeded on the same stack), ``--due`` of the new accounts expire within the rotation threshold
   (in 5 days) and the others in 200 days. One sweep runs in a process of its own, as a host's
   timer runs it; a fresh host (``python -m devstack run``) carries out the rotations it starts.
   Printed per size: the sweep's own run time, the time from it to the last rotation finished,
   the calls per rotation each service received (the stand-ins' request logs), the Table
   operations of the sweep and per rotation (counted by a proxy in front of Azurite, one for the
   hosts and one for the sweep), the host's peak RSS; then how each grew from the smallest size to
   the largest (target 1.00: the cost grows with the accounts due, not with the accounts managed).
2. **Many due, drift, and an onboarding beside them** (``--heavy-size``, ``--heavy-due``), on a
   fresh stack: one sweep with ``--heavy-due`` accounts due, its time to the last rotation against
   the floor Palette's and Graph's limits set (bench/README.md: target 1.15), failures, 429s and
   the host's peak RSS (target 150 MB). Then the drift pass (``shared.rotation.drift.drift_pass``)
   in a process of its own, twice: the cycle's first run (it starts the cycle and runs the safety
   net, once a period), and the run ``--drift-interval`` (an hour, its schedule) later, whose
   slice is measured: the accounts it looked at (its report's ``accounts``), its time and calls per
   account against the minimum (Palette, Key Vault and Graph one read each). Last, onboardings
   with every option (as ``bench latency``), 10 s apart: ``--runs`` (5) on the idle system, as
   many beside one core kept busy by plain computation (a control: what the machine's cores alone
   cost), and ``--beside`` (5) during another sweep of ``--heavy-due``, the first ``--submit-after``
   (30) s into it, each a second after a drift slice (the cycle's next run) started (target: the
   median at most 1.2 times the idle one). With each, how busy the machine's cores were, and
   right after it the round trip of a Table write to Azurite and of a Palette read (what its
   critical path is made of: are they slower beside the load?).
   ``--parts beside`` leaves out the first sweep of many due (the onboardings' figures alone).

Every stand-in answers ``--latency-ms`` (20) late. Palette runs at 10 requests/s per resource
prefix with its burst of 5 s, Graph at its write limits (3,000 writes per 150 s per app in a
tenant) when the identity stand-in has them; where Palette limits a tenant's cloud accounts, the
limit is raised as far as the stand-in allows and the onboardings' stack is seeded within it. A
plot of the sweep's calls and seconds against accounts managed and due goes to bench/out/
(matplotlib, installed into the venv from bench/requirements.txt on first use; skipped when that
fails). ``--quick`` runs 200 and 1,000 accounts with 100 due, in a few minutes. Asserts nothing.

    .venv/bin/python -m bench scale [--sizes 2000,10000,50000] [--due 50] [--heavy-size 10000]
        [--heavy-due 5000] [--latency-ms 20] [--runs 5] [--beside 5] [--parts sizes,heavy] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import multiprocessing
import os
import secrets
import select
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import ROOT, BenchStack, Bodies, Subscriber, describe, figure, median, rate_prefix, say
from bench.memory import app_process, status_mb
from bench.rotation_sweep import MINIMUM as ROTATION_MINIMUM
from devstack.tableproxy import TableProxy

if TYPE_CHECKING:
    from devstack.hostproc import HostProcess
    from devstack.httpbase import Request, Response, RunningServer

#: ``--quick``: the whole benchmark in a few minutes.
QUICK = {"sizes": "200,1000", "due": 20, "heavy_size": 1000, "heavy_due": 100, "runs": 2, "beside": 2,
         "drift_timeout": 90.0, "onboarding_timeout": 120.0, "submit_after": 5.0}
#: Calls per account a drift slice needs at least: Palette reads the account, Key Vault its current
#: version, Graph the app (its passwords); Palette validates only a secret in doubt (none here).
DRIFT_MINIMUM = {"palette": 1, "keyvault": 1, "graph": 1}
#: A rotation's Palette calls per rate-limited prefix (bench/README.md), and its Graph writes.
ROTATION_PREFIXES = {"/v1/cloudaccounts": 2, "/v1/clouds": 1, "/v1/users": 1}
GRAPH_WRITES_PER_ROTATION = 1
DUE_IN = dt.timedelta(days=5)
#: Seconds between the onboardings timed (idle, and beside the load): a drift slice takes about 6 s.
BESIDE_GAP = 10.0
NOT_DUE_IN = dt.timedelta(days=200)
#: How old the seeded secrets are: past the rotation's minimum age.
SECRET_AGE = dt.timedelta(days=30)
#: Accounts per admin call to each stand-in (each body stays well under the stand-ins' 4 MB), and
#: inventory rows per ``create_many``.
SEED_CHUNK = 2000
INVENTORY_CHUNK = 250
#: Processes writing the inventory rows (two cores, and Azurite needs one of them part of the time).
ROW_WRITERS = 3
ROTATED, FAILED = "secret.rotated", "rotation.failed"
#: The product's own sign-in with a new secret names itself (shared.clients.entra).
PROBE_USER_AGENT = "palette-onboarding"
#: The hosts' rotation and drift timers are set to a moment a run never meets: the benchmark starts those.
NEVER = "0 0 0 1 1 *"
HOST_RSS_TARGET = "< 150"
OUT = ROOT / "bench" / "out"
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
#: The environment before a stack added its settings (its CA bundle and proxy are gone once it stops): pip's.
PLAIN_ENVIRONMENT = dict(os.environ)


# ------------------------------------------------------------------------------------------- seeding

@dataclass(frozen=True, slots=True)
class Seeded:
    """One managed account as an earlier onboarding left it (its secret is not kept)."""

    name: str
    request_id: str
    client_id: str
    key_id: str
    version: str
    uid: str
    expires: dt.datetime


class Seeder:
    """Managed accounts in bulk: Graph, Key Vault and Palette through their admin routes, the
    inventory through ``InventoryStore`` in :data:`ROW_WRITERS` processes of their own (a row costs
    the store's client about 6 ms of interpreter time, so threads of this process, which also runs
    the stand-ins, would write one at a time). Straight to Azurite: the seeding is not counted."""

    def __init__(self, bench: BenchStack) -> None:
        from shared.settings import Settings

        self.bench = bench
        self.run = uuid.uuid4().hex[:6]
        self.count = 0
        self.idle: list[str] = []  # seeded not due, never made due since
        self.storage = (bench.settings["AzureWebJobsStorage"], Settings.from_mapping(bench.settings).inventory_table)

    def seed(self, count: int, *, due: int) -> tuple[list[str], float]:
        """``count`` more managed accounts, the first ``due`` of them due: their names and the seconds taken."""
        now = dt.datetime.now(dt.UTC)
        began = time.monotonic()
        due_names: list[str] = []
        with self._writers() as pool:
            writes = []
            for first in range(0, count, SEED_CHUNK):
                chunk = []
                for number in range(first, min(count, first + SEED_CHUNK)):
                    chunk.append(self._account(now, due=number < due))
                    (due_names if number < due else self.idle).append(chunk[-1].name)
                self._stand_ins(chunk, now)
                records = _records(chunk, now)
                writes += [pool.submit(_workers().write_rows, records[i:i + INVENTORY_CHUNK])
                           for i in range(0, len(records), INVENTORY_CHUNK)]
                say(f"seeding: {self.count} accounts in the stand-ins; inventory rows "
                    f"{sum(INVENTORY_CHUNK for w in writes if w.done())} or more ...")
            written = sum(w.result() for w in writes)
        if written != count:
            raise RuntimeError(f"the inventory took {written} of {count} rows")
        return due_names, time.monotonic() - began

    def _writers(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(ROW_WRITERS, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_workers().open_store, initargs=self.storage)

    def _account(self, now: dt.datetime, *, due: bool) -> Seeded:
        number = self.count
        self.count += 1
        return Seeded(name=f"scale-{self.run}-{number:06d}", request_id=f"SCALE-{self.run}-{number:06d}",
                      client_id=str(uuid.uuid4()), key_id=str(uuid.uuid4()), version=uuid.uuid4().hex,
                      uid=uuid.uuid4().hex[:24], expires=now + (DUE_IN if due else NOT_DUE_IN))

    def _stand_ins(self, chunk: list[Seeded], now: dt.datetime) -> None:
        """Graph (the app and its one password), Key Vault (the secret, tagged), Palette (the account,
        annotated): one admin call each for the chunk. The secret values live only in this call."""
        from devstack.stack import DEVSTACK_TENANT_ID
        from shared import credentials
        from shared.credentials import SecretKind

        values = [secrets.token_urlsafe(30) for _ in chunk]
        pairs = list(zip(chunk, values, strict=True))
        born = (now - SECRET_AGE).isoformat()
        self.bench.admin("identity", "POST", "applications/bulk", {"tenantId": DEVSTACK_TENANT_ID, "applications": [
            {"appId": a.client_id, "displayName": f"scale {a.name}", "passwords": [{
                "secretText": value, "keyId": a.key_id, "startDateTime": born, "endDateTime": a.expires.isoformat(),
                "displayName": credentials.password_display_name(a.name, a.request_id)}]} for a, value in pairs]})
        kind = SecretKind.CLIENT_SECRET
        self.bench.admin("keyvault", "POST", "secrets/bulk", {"secrets": [
            {"name": credentials.secret_name(a.name, kind), "value": value, "version": a.version,
             "contentType": credentials.CONTENT_TYPES[kind], "expires": int(a.expires.timestamp()),
             "tags": credentials.secret_tags(a.name, kind, request_id=a.request_id, tenant_id=DEVSTACK_TENANT_ID,
                                             client_id=a.client_id, **{credentials.CREDENTIAL_ID_TAG: a.key_id,
                                                                       credentials.VALIDITY_PERIOD_DAYS_TAG: "180"})}
            for a, value in pairs]})
        self.bench.admin("palette", "POST", "cloudaccounts/bulk", {"accounts": [
            {"name": a.name, "uid": a.uid, "tenantId": DEVSTACK_TENANT_ID, "clientId": a.client_id,
             "clientSecret": value, "annotations": credentials.ownership_annotations(
                 a.request_id, secret_ref=credentials.secret_ref(a.key_id, None))} for a, value in pairs]})

    def make_due(self, count: int) -> list[str]:
        """Make ``count`` accounts seeded not due (and never made due) due now, through their rows."""
        from shared.state.records import iso

        names, self.idle = self.idle[:count], self.idle[count:]
        now = dt.datetime.now(dt.UTC)
        parts = [names[i:i + INVENTORY_CHUNK] for i in range(0, len(names), INVENTORY_CHUNK)]
        with self._writers() as pool:
            list(pool.map(_workers().age_rows, parts, [iso(now + DUE_IN)] * len(parts),
                          [iso(now - SECRET_AGE)] * len(parts)))
        return names


def _records(chunk: list[Seeded], now: dt.datetime) -> list[Any]:
    """The inventory rows an onboarding of each account would have written."""
    from devstack.stack import DEVSTACK_TENANT_ID
    from shared.credentials import SecretKind, secret_name
    from shared.state.inventory import SOURCE_GENERATED, AccountRecord
    from shared.state.records import iso

    return [AccountRecord(account_name=a.name, palette_uid=a.uid, tenant_id=DEVSTACK_TENANT_ID, client_id=a.client_id,
                          secret_source=SOURCE_GENERATED, secret_name=secret_name(a.name, SecretKind.CLIENT_SECRET),
                          secret_version=a.version, current_key_id=a.key_id, expires_on=iso(a.expires),
                          secret_created_on=iso(now - SECRET_AGE), validity_days=180, onboarded_by=a.request_id)
            for a in chunk]


def _workers() -> Any:
    """This module as the row writers import it: ``bench.scale`` (run as ``python -m bench.scale``
    it is ``__main__`` here, which a spawned process cannot name)."""
    return importlib.import_module("bench.scale")


_store: Any = None  # a row writer's InventoryStore


def open_store(connection: str, table: str) -> None:
    """A row writer's start: its own store."""
    global _store
    from shared.state.inventory import InventoryStore

    _store = InventoryStore.from_connection_string(connection, table)


def write_rows(records: list[Any]) -> int:
    """New rows: ``create_many`` where the store has it, else ``create`` each."""
    create_many = getattr(_store, "create_many", None)
    if create_many is not None:
        written = create_many(records)
        return len(records) if written is None else int(written)
    for record in records:
        _store.create(record)
    return len(records)


def age_rows(names: list[str], expires_on: str, created_on: str) -> int:
    """Make these accounts due: their rows say the secret expires soon and was made long ago."""
    def age(row: Any) -> None:
        row.expires_on, row.secret_created_on = expires_on, created_on
    return sum(_store.update(name, age) is not None for name in names)


# -------------------------------------------------------------------------------------- Table counts

def table_operation(method: str, path: str) -> str:
    """``<table> <kind>`` of a Table request: ``query`` (a filter, or one page of it), ``read`` (one
    entity), ``insert``, ``update`` (replace or merge, upserts too), ``delete``; ``batch`` for an
    entity-group transaction, ``tables`` for the table list (creating one)."""
    resource = path.lstrip("/").partition("/")[2]  # after the account name
    if resource.startswith("$batch"):
        return "batch"
    table, _, keys = resource.partition("(")
    if table.lower() == "tables":
        return "tables"
    if method == "GET":
        return f"{table} {'read' if 'PartitionKey' in keys else 'query'}"
    return f"{table} {({'POST': 'insert', 'DELETE': 'delete'}).get(method, 'update')}"


class CountingTableProxy(TableProxy):
    """The Table proxy (devstack/tableproxy.py), counting each operation by table and kind; it
    keeps no request bodies (the counts are what is read)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def before_request(self, request: Request) -> Response | None:
        with self._lock:
            self._counts[table_operation(request.method, request.path)] += 1
        return super().before_request(request)

    def redact(self, body: Any) -> Any:
        return None

    def take(self) -> Counter[str]:
        """The counts since the last take."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts


class Tables:
    """Two counting proxies in front of Azurite: ``hosts`` for the app's hosts, ``jobs`` for the
    sweep and drift processes; ``settings`` are the stack's with each one's storage."""

    def __init__(self, bench: BenchStack) -> None:
        from devstack.httpbase import RunningServer

        storage = bench.settings["AzureWebJobsStorage"]
        endpoint = next(part.split("=", 1)[1] for part in storage.split(";") if part.startswith("TableEndpoint="))
        split = urlsplit(endpoint)
        self.proxies = {name: CountingTableProxy(f"{split.scheme}://{split.netloc}") for name in ("hosts", "jobs")}
        self.servers: dict[str, RunningServer] = {name: RunningServer(app) for name, app in self.proxies.items()}
        self.settings = {name: {**bench.settings, "ROTATION_SCHEDULE": NEVER, "DRIFT_SCHEDULE": NEVER,
                                "AzureWebJobsStorage": _with_table_endpoint(storage, f"{server.url}{split.path}")}
                         for name, server in self.servers.items()}
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._forget_records, name="bench-tables", daemon=True)
        self._janitor.start()

    def _forget_records(self) -> None:
        """The proxies' request logs are not read: drop them now and then, so they cost no memory."""
        while not self._stop.wait(5):
            for server in self.servers.values():
                server.reset()

    def take(self, name: str) -> Counter[str]:
        return self.proxies[name].take()

    def stop(self) -> None:
        self._stop.set()
        for server in self.servers.values():
            server.stop()


def _with_table_endpoint(connection: str, endpoint: str) -> str:
    parts = [f"TableEndpoint={endpoint}" if part.startswith("TableEndpoint=") else part
             for part in connection.split(";") if part]
    return ";".join(parts) + ";"


# ---------------------------------------------------------------------------------- sweep and drift jobs

class Job:
    """``sweep`` or ``drift`` in a process of its own (``--job``), as a host's timer runs it: it
    builds the app's clients, makes its first connections, says ``ready`` and waits, so its start-up
    is neither timed nor counted. Each ``go`` (with the moment the run takes as now, for the drift
    cycle) runs it once and prints its report, its time and its peak RSS as one JSON line."""

    def __init__(self, kind: str, settings: dict[str, str], workdir: Path) -> None:
        self.kind = kind
        path = workdir / f"job-{kind}-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(settings))
        path.chmod(0o600)
        self.log_path = path.with_suffix(".log")
        with self.log_path.open("wb") as log:
            command = [sys.executable, "-m", "bench.scale", "--job", kind, "--settings", str(path)]
            self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, text=True)
        if self._line(120) != "ready":
            self.kill()
            raise RuntimeError(f"the {kind} process did not start; see {self.log_path}")

    def _line(self, timeout: float) -> str | None:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], max(0.0, timeout))
        line = stdout.readline() if ready else ""
        return line.strip() or None

    def go(self, now: dt.datetime | None = None) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"go {now.isoformat()}\n" if now is not None else "go\n")
        self.process.stdin.flush()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def result(self, timeout: float) -> dict[str, Any] | None:
        """Its JSON line, or None when it did not finish in time (it is then killed)."""
        line = self._line(timeout)
        if line is None:
            say(f"{self.kind}: no result within {timeout:.0f} s; stopped (see {self.log_path})")
            self.kill()
            return None
        result: dict[str, Any] = json.loads(line)
        return result

    def poll(self) -> dict[str, Any] | None:
        """Its JSON line if it has finished a run, without waiting."""
        line = self._line(0)
        return json.loads(line) if line is not None else None

    def kill(self) -> None:
        if self.running:
            self.process.kill()
        self.process.wait(timeout=30)


def _job(kind: str, settings_path: str) -> int:
    """The child side of :class:`Job`."""
    settings: dict[str, str] = json.loads(Path(settings_path).read_text())
    os.environ.update(settings)
    from functions.dependencies import WARM_UP_PROBE, build
    from shared.rotation.drift import drift_pass
    from shared.rotation.sweep import sweep
    from shared.settings import Settings
    from shared.state.records import utcnow

    deps = build(Settings.from_mapping(settings))
    try:
        deps.queue.open_link()
        deps.background_queue.open_link()
        deps.clients.state.check_reachable()
        deps.clients.inventory.get("warm-up-probe")
        if deps.clients.graph is not None:
            deps.clients.graph.warm_up()
        with contextlib.suppress(Exception):  # a warm-up read: only its token and the vault's challenge matter
            deps.clients.secrets.get_deleted_secret(WARM_UP_PROBE)
        print("ready", flush=True)
        config = deps.settings.pipeline.rotation
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] != "go":
                break
            now = dt.datetime.fromisoformat(words[1]) if len(words) > 1 else None
            began = time.time()
            if kind == "sweep":
                # As the timer does: the rotations it starts wait on the background queue.
                report = sweep(deps.clients, deps.background_queue, config, now=now).as_dict()
            else:
                report = drift_pass(deps.clients, deps.queue, config, now=now or utcnow()).as_dict()
            seconds = time.time() - began
            print(json.dumps({"report": report, "began": began, "seconds": seconds,
                              "peakRssMb": status_mb(os.getpid(), "VmHWM")}), flush=True)
    finally:
        deps.close()
    return 0


# ------------------------------------------------------------------------------------------- phases

@dataclass
class Phase:
    """What one sweep (with the rotations it started) or one drift slice cost."""

    label: str
    managed: int
    due: int
    report: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    seconds: float = math.nan  # the sweep's (or slice's) own run
    wall: float = math.nan  # from its start to the last rotation finished
    rotated: int = 0
    failed: int = 0
    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    job_tables: Counter[str] = field(default_factory=Counter)
    host_tables: Counter[str] = field(default_factory=Counter)
    host_peak_mb: float = math.nan
    job_peak_mb: float = math.nan

    def total(self, services: tuple[str, ...] = ("palette", "graph", "keyvault", "entra")) -> int:
        return sum(len(self.calls.get(service, [])) for service in services)


class Env:
    """One stack with what the phases share: the Table proxies, the seeder, the events subscriber."""

    def __init__(self, bench: BenchStack, subscriber: Subscriber, latency_ms: int) -> None:
        self.bench = bench
        self.subscriber = subscriber
        self.tables = Tables(bench)
        self.seeder = Seeder(bench)
        self.hosts = 0
        self.drift_at: dt.datetime | None = None  # the now of the last drift run
        #: Per onboarding timed: the share of the machine's cores busy while it ran, and right after
        #: it the round trip of a Table write to Azurite and of a Palette read (median of five each).
        self.samples: dict[str, list[float]] = {"cpu": [], "table": [], "palette": []}
        self._probe: Any = None
        identity = bench.admin("identity", "GET", "config")
        if "graphWriteLimits" in identity:
            identity = bench.admin("identity", "POST", "config", {"graphWriteLimits": True})
        self.identity_config: dict[str, Any] = identity
        self.palette_config: dict[str, Any] = bench.admin("palette", "GET", "config")
        bench.set_latency(latency_ms)
        say("the sweep's first run, on the empty inventory (what a deployed app's first run does once is not "
            "measured) ...")
        first = self.job("sweep")
        try:
            first.go()
            first.result(120)
        finally:
            first.kill()

    def take_samples(self) -> dict[str, list[float]]:
        samples, self.samples = self.samples, {name: [] for name in self.samples}
        return samples

    def probe(self) -> None:
        """Time five Table writes and five Palette reads, one after another (what the onboarding's
        critical path is made of), into :attr:`samples`."""
        import requests
        from azure.data.tables import TableClient

        settings = self.bench.settings
        if self._probe is None:
            self._probe = TableClient.from_connection_string(settings["AzureWebJobsStorage"], table_name="benchprobe")
            with contextlib.suppress(Exception):
                self._probe.create_table()
        for name, one in (("table", lambda n: self._probe.upsert_entity({"PartitionKey": "p", "RowKey": str(n)})),
                          ("palette", lambda n: requests.get(
                              f"{settings['PALETTE_ENDPOINT']}/v1/users/info", timeout=30,
                              headers={"ApiKey": settings["PALETTE_API_KEY"]},
                              verify=settings["REQUESTS_CA_BUNDLE"]).raise_for_status())):
            times = []
            for number in range(5):
                began = time.perf_counter()
                one(number)
                times.append(time.perf_counter() - began)
            self.samples[name].append(median(times) * 1000)

    def host(self) -> HostProcess:
        """A fresh host of the real app, serving (warmed by its warmup trigger), its Table calls counted."""
        self.hosts += 1
        host = self.bench.host(f"host-{self.hosts}", settings=self.tables.settings["hosts"])
        host.start()
        host.wait_serving(timeout=60)
        return host

    def job(self, kind: str) -> Job:
        return Job(kind, self.tables.settings["jobs"], self.bench.workdir)

    def start_counting(self) -> float:
        """Forget the calls and Table operations so far; the moment it did."""
        self.bench.clear_requests()
        self.tables.take("hosts")
        self.tables.take("jobs")
        return time.time()

    def calls(self) -> dict[str, list[dict[str, Any]]]:
        """The app's calls by service since :meth:`start_counting` (the stand-ins' request logs): Graph is
        ``/v1.0``, Entra ID the product's sign-ins with a new secret (not Palette's own, when it
        validates), ``msi`` the managed identity's tokens."""
        identity = self.bench.requests("identity")
        return {"palette": self.bench.requests("palette"), "keyvault": self.bench.requests("keyvault"),
                "graph": [c for c in identity if c["path"].startswith("/v1.0/")],
                "entra": [c for c in identity if "/oauth2/" in c["path"]
                          and PROBE_USER_AGENT in str(c.get("headers", {}).get("user-agent", ""))],
                "msi": self.bench.requests("msi")}

    def close(self) -> None:
        self.tables.stop()
        if self._probe is not None:
            self._probe.close()


def host_peak(host: HostProcess) -> float:
    return status_mb(app_process(host.pid), "VmHWM") if host.pid is not None else math.nan


def wait_rotations(subscriber: Subscriber, since: float, expected: int, timeout: float) -> tuple[int, int, float]:
    """(succeeded, failed, when the last finished) for the rotations whose outcome event arrived
    after ``since``, once ``expected`` did or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        outcomes: dict[str, tuple[str, float]] = {}
        for event in subscriber.snapshot():
            if event.received >= since and event.type in (ROTATED, FAILED) and event.request_id not in outcomes:
                outcomes[event.request_id] = (event.type, event.received)
        if len(outcomes) >= expected or time.monotonic() > deadline:
            kinds = Counter(kind for kind, _ in outcomes.values())
            return kinds[ROTATED], kinds[FAILED], max((at for _, at in outcomes.values()), default=math.nan)
        time.sleep(0.5)


def sweep_phase(env: Env, label: str, managed: int, due: int, timeout: float) -> Phase:
    """One sweep in its own process, a fresh host carrying out the rotations it starts."""
    phase = Phase(label, managed, due)
    host = env.host()
    job = env.job("sweep")
    try:
        since = env.start_counting()
        say(f"{label}: the sweep ...")
        job.go()
        result = job.result(timeout)
        if result is not None:
            phase.report, phase.seconds, phase.job_peak_mb = result["report"], result["seconds"], result["peakRssMb"]
            say(f"{label}: the sweep took {phase.seconds:.2f} s and started {phase.report.get('enqueued', 0)} "
                "rotations; waiting for them ...")
            phase.rotated, phase.failed, last = wait_rotations(env.subscriber, since,
                                                               int(phase.report.get("enqueued", 0)), timeout)
            phase.wall = last - float(result["began"])
            phase.finished = phase.rotated + phase.failed >= int(phase.report.get("enqueued", 0))
        phase.host_peak_mb = host_peak(host)
        phase.calls = env.calls()
        phase.job_tables, phase.host_tables = env.tables.take("jobs"), env.tables.take("hosts")
    finally:
        job.kill()
        host.stop()
    return phase


def drift_phases(env: Env, managed: int, timeout: float, interval: dt.timedelta) -> tuple[Phase, Phase]:
    """Two runs of the drift pass in one process of its own: the first of the cycle (it starts the
    cycle, and runs the safety net, which reads every account, once a period), then the one a
    schedule's interval later, which looks at the slice that fell due meanwhile."""
    first = Phase(f"drift at {managed} managed, the cycle's first run", managed, 0)
    piece = Phase(f"drift slice at {managed} managed", managed, 0)
    job = env.job("drift")
    moment = dt.datetime.now(dt.UTC)
    try:
        for phase, at in ((first, moment), (piece, moment + interval)):
            if not job.running:
                break
            env.start_counting()
            say(f"{phase.label} (now {at.isoformat(timespec='seconds')}) ...")
            job.go(at)
            result = job.result(timeout)
            if result is not None:
                phase.report, phase.seconds, phase.job_peak_mb = (result["report"], result["seconds"],
                                                                  result["peakRssMb"])
                phase.finished = True
            else:
                phase.seconds = timeout
            phase.calls = env.calls()
            phase.job_tables = env.tables.take("jobs")
    finally:
        job.kill()
    env.drift_at = moment + interval
    return first, piece


def rotation_floor(due: int, palette: dict[str, Any], identity: dict[str, Any]) -> tuple[float, str]:
    """The least time ``due`` rotations can take at Palette's limits (and Graph's write limit when
    the stand-in has it): the seconds and how they are made (bench/README.md)."""
    rate = float(palette.get("ratePerSecond") or 0)
    capacity = float(palette.get("capacity") or 0)
    floor, why = 0.0, "no limit"
    if rate > 0:
        for prefix, per in ROTATION_PREFIXES.items():
            seconds = max(0.0, (per * due - capacity) / rate)
            if seconds > floor:
                floor, why = seconds, f"{per} calls at {prefix} x {due}, less the burst of {capacity:g}, at {rate:g}/s"
    if identity.get("graphWriteLimits"):
        limit, window = int(identity["graphAppWriteLimit"]), float(identity["graphAppWriteWindowSeconds"])
        seconds = (math.ceil(GRAPH_WRITES_PER_ROTATION * due / limit) - 1) * window
        if seconds > floor:
            floor, why = seconds, f"{GRAPH_WRITES_PER_ROTATION} Graph write x {due}, {limit} per {window:g} s"
    return floor, why


# ---------------------------------------------------------------------------------------- figures

def per(count: float, of: int) -> float:
    return count / of if of else math.nan


def show_sweep(phase: Phase) -> None:
    label, rotations = phase.label, phase.rotated + phase.failed
    figure(f"{label}: accounts due found", phase.report.get("due", "none"), "", str(phase.due))
    figure(f"{label}: rotations started", phase.report.get("enqueued", "none"), "", str(phase.due))
    figure(f"{label}: sweep run time", phase.seconds, "s", "none")
    figure(f"{label}: sweep to the last rotation finished", phase.wall, "s", "none", digits=1)
    figure(f"{label}: rotations succeeded", phase.rotated, "", str(phase.due))
    figure(f"{label}: rotations failed or unfinished", phase.due - phase.rotated, "", "0")
    for service, minimum in ROTATION_MINIMUM.items():
        figure(f"{label}: {service} calls per rotation", per(len(phase.calls.get(service, [])), rotations), "",
               f"minimum {minimum}")
    figure(f"{label}: app calls per rotation", per(phase.total(), rotations), "",
           f"minimum {sum(ROTATION_MINIMUM.values())}")
    figure(f"{label}: Table operations of the sweep", sum(phase.job_tables.values()), "", "none")
    for kind, count in sorted(phase.job_tables.items()):
        figure(f"{label}: Table operations of the sweep, {kind}", count, "", "none")
    figure(f"{label}: Table operations per rotation", per(sum(phase.host_tables.values()), rotations), "", "none")
    figure(f"{label}: host peak RSS", phase.host_peak_mb, "MB", HOST_RSS_TARGET, digits=1)
    figure(f"{label}: sweep process peak RSS", phase.job_peak_mb, "MB", "none", digits=1)


def show_trend(phases: list[Phase]) -> None:
    """How the sweep's cost grew from the smallest size to the largest, the same number due."""
    first, last = phases[0], phases[-1]
    if first is last:
        return
    label = f"sweep growth from {first.managed} to {last.managed} managed, {last.due} due"
    target = "1.00: grows with the accounts due, not with the accounts managed"

    def grow(name: str, of: Any) -> None:
        before, after = of(first), of(last)
        figure(f"{label}: {name}", after / before if before else math.nan, "x", target)

    grow("app calls per rotation", lambda p: per(p.total(), p.rotated + p.failed))
    grow("Table operations of the sweep", lambda p: sum(p.job_tables.values()))
    grow("Table operations per rotation", lambda p: per(sum(p.host_tables.values()), p.rotated + p.failed))
    grow("sweep run time", lambda p: p.seconds)
    grow("sweep to the last rotation finished", lambda p: p.wall)
    grow("host peak RSS", lambda p: p.host_peak_mb)


def show_heavy(phase: Phase, env: Env) -> None:
    label, due = phase.label, phase.due
    floor, why = rotation_floor(due, env.palette_config, env.identity_config)
    figure(f"{label}: ratio over the floor", phase.wall / floor if floor else math.nan, "", "<= 1.15")
    figure(f"{label}: sweep to the last rotation finished", phase.wall, "s", f"<= {floor * 1.15:.0f}", digits=1)
    figure(f"{label}: floor", floor, "s", why, digits=0)
    figure(f"{label}: rotations succeeded", phase.rotated, "", str(due))
    figure(f"{label}: rotations failed or unfinished", due - phase.rotated, "", "0")
    for service in ("palette", "graph"):
        calls = phase.calls.get(service, [])
        throttled = sum(1 for call in calls if call["status"] == 429)
        figure(f"{label}: {service.capitalize()} answers 429", 100 * per(throttled, len(calls)), "%", "< 1")
    figure(f"{label}: host peak RSS during the sweep", phase.host_peak_mb, "MB", HOST_RSS_TARGET, digits=1)
    figure(f"{label}: sweep process peak RSS", phase.job_peak_mb, "MB", "none", digits=1)
    figure(f"{label}: sweep run time", phase.seconds, "s", "none")
    figure(f"{label}: rotations per second", phase.rotated / phase.wall if phase.wall else math.nan, "/s", "none")
    rotations = phase.rotated + phase.failed
    for service, minimum in ROTATION_MINIMUM.items():
        figure(f"{label}: {service} calls per rotation", per(len(phase.calls.get(service, [])), rotations), "",
               f"minimum {minimum}")
    prefixes = Counter(rate_prefix(call["path"]) for call in phase.calls.get("palette", []))
    for prefix, count in sorted(prefixes.items()):
        figure(f"{label}: Palette calls per rotation at {prefix}", per(count, rotations), "",
               f"minimum {ROTATION_PREFIXES.get(prefix, 0)}")
    figure(f"{label}: Table operations of the sweep", sum(phase.job_tables.values()), "", "none")
    for kind, count in sorted(phase.job_tables.items()):
        figure(f"{label}: Table operations of the sweep per account due, {kind}", per(count, due), "", "none")
    figure(f"{label}: Table operations per rotation", per(sum(phase.host_tables.values()), rotations), "", "none")
    for kind, count in sorted(phase.host_tables.items()):
        figure(f"{label}: Table operations per rotation, {kind}", per(count, rotations), "", "none")


def show_drift_start(phase: Phase) -> None:
    """The cycle's first run: the safety net, once a period."""
    label = phase.label
    figure(f"{label}: finished", "yes" if phase.finished else "no", "", "yes")
    figure(f"{label}: time", phase.seconds, "s", "none", digits=1)
    figure(f"{label}: accounts looked at", phase.report.get("accounts", "none"), "", "none (the cycle starts)")
    for service in ("palette", "keyvault", "graph"):
        figure(f"{label}: {service} calls", len(phase.calls.get(service, [])), "", "none")
    figure(f"{label}: Table operations", sum(phase.job_tables.values()), "", "none")


def show_drift(phase: Phase, timeout: float) -> None:
    label = phase.label
    palette = phase.calls.get("palette", [])
    if phase.finished:
        accounts = int(phase.report.get("accounts", 0))
    else:  # killed: the accounts it read from Palette stand for the ones it looked at
        accounts = sum(1 for call in palette if describe(call) == "GET /v1/cloudaccounts/azure/{uid}")
    figure(f"{label}: slice finished", "yes" if phase.finished else f"no, stopped at {timeout:.0f} s", "", "yes")
    figure(f"{label}: accounts looked at", accounts, "", "one slice" if phase.finished else "none (counted from "
           "the Palette reads)")
    figure(f"{label}: time", phase.seconds, "s", "none", digits=1)
    figure(f"{label}: time per account", 1000 * per(phase.seconds, accounts), "ms", "none", digits=1)
    for service, minimum in DRIFT_MINIMUM.items():
        figure(f"{label}: {service} calls per account", per(len(phase.calls.get(service, [])), accounts), "",
               f"minimum {minimum}")
    validations = sum(1 for call in palette if call["path"] == "/v1/clouds/azure/account/validate")
    figure(f"{label}: Palette validations per account", per(validations, accounts), "",
           "0 (only a secret in doubt; none is here)")
    figure(f"{label}: entra calls per account", per(len(phase.calls.get("entra", [])), accounts), "", "minimum 0")
    figure(f"{label}: app calls per account", per(phase.total(), accounts), "",
           f"minimum {sum(DRIFT_MINIMUM.values())}")
    figure(f"{label}: Table operations per account", per(sum(phase.job_tables.values()), accounts), "", "none")
    if phase.finished:
        figure(f"{label}: drift found", phase.report.get("detected", 0), "", "0 (the seeded accounts agree)")
        figure(f"{label}: accounts that could not be checked", phase.report.get("errors", 0), "", "0")
    by_call = Counter(f"{service} {describe(call)}" for service, calls in phase.calls.items() if service != "msi"
                      for call in calls)
    for call, count in sorted(by_call.items(), key=lambda item: (-item[1], item[0]))[:12]:
        figure(f"{label}: calls to {call}", count, "", "none")


# ----------------------------------------------------------------------------------------- palette

def cloud_account_limit(bench: BenchStack) -> tuple[int, int] | None:
    """The tenant's cloud-account limit and the most it may be raised to, None where Palette (the
    stand-in) keeps no resource limits."""
    import requests

    headers = {"ApiKey": bench.settings["PALETTE_API_KEY"]}
    url = bench.url("palette")
    tenant = requests.get(f"{url}/v1/users/info", headers=headers, timeout=30).json()["tenantUid"]
    answer = requests.get(f"{url}/v1/tenants/{tenant}/resourceLimits", headers=headers, timeout=30)
    if answer.status_code in (404, 405):
        return None
    answer.raise_for_status()
    for item in answer.json().get("resources", []):
        if item.get("kind") == "cloudaccount":
            return int(item["limit"]), int(item.get("maxLimit") or item["limit"])
    return None


def raise_cloud_account_limit(bench: BenchStack, limit: int) -> None:
    import requests

    headers = {"ApiKey": bench.settings["PALETTE_API_KEY"]}
    url = bench.url("palette")
    tenant = requests.get(f"{url}/v1/users/info", headers=headers, timeout=30).json()["tenantUid"]
    requests.patch(f"{url}/v1/tenants/{tenant}/resourceLimits", headers=headers, timeout=30,
                   json={"resources": [{"kind": "cloudaccount", "limit": limit}]}).raise_for_status()


# --------------------------------------------------------------------------------------------- parts

@dataclass
class Results:
    sizes: list[Phase] = field(default_factory=list)
    heavy: Phase | None = None


def scale_sizes(args: argparse.Namespace, results: Results) -> None:
    """The sweep at each size, the same number due."""
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    with BenchStack() as bench, Subscriber(bench.settings) as subscriber:
        env = Env(bench, subscriber, args.latency_ms)
        try:
            limit = cloud_account_limit(bench)
            if limit is not None:
                figure("Palette cloud accounts one tenant may hold, at most (the stand-in's maxLimit)", limit[1], "",
                       "none (the seeds are not refused; more accounts than this need more Palette tenants)")
            for size in sizes:
                if size - env.seeder.count < args.due:
                    say(f"size {size}: fewer new accounts than --due; skipped")
                    continue
                before = env.seeder.count
                _, seconds = env.seeder.seed(size - before, due=args.due)
                figure(f"seeding to {size} managed accounts", seconds, "s", "a few minutes at most at 50000", digits=1)
                figure(f"seeding rate at {size}", (size - before) / seconds, "accounts/s", "none", digits=0)
                figure(f"benchmark process RSS at {size} managed (the stand-ins hold them)",
                       status_mb(os.getpid(), "VmRSS"), "MB", "none", digits=0)
                if bench.stack.azurite is not None:
                    figure(f"Azurite RSS at {size} managed", status_mb(bench.stack.azurite.process.pid, "VmRSS"),
                           "MB", "none", digits=0)
                phase = sweep_phase(env, f"sweep at {size} managed, {args.due} due", size, args.due,
                                    args.rotation_timeout)
                show_sweep(phase)
                results.sizes.append(phase)
            if results.sizes:
                show_trend(results.sizes)
        finally:
            env.close()


def heavy(args: argparse.Namespace, results: Results, *, rotations: bool = True) -> None:
    """Many due, a drift slice, and onboardings idle and beside them, on a fresh stack (without
    ``rotations``: the first sweep of many due is left out, for the onboardings' figures alone)."""
    size, due = args.heavy_size, args.heavy_due
    onboardings = 2 * args.runs + args.beside + 1  # the warm-up, idle, beside plain computation, under load
    with BenchStack() as bench, Subscriber(bench.settings) as subscriber:
        env = Env(bench, subscriber, args.latency_ms)
        try:
            seeded = size
            limit = cloud_account_limit(bench)
            if limit is not None:
                if size + onboardings > limit[1]:
                    seeded = limit[1] - onboardings
                    say(f"Palette holds at most {limit[1]} cloud accounts in a tenant: {seeded} are seeded, so "
                        f"that the {onboardings} onboardings fit")
                raise_cloud_account_limit(bench, min(limit[1], max(limit[0], seeded + onboardings)))
            _, seconds = env.seeder.seed(seeded, due=due if rotations else 0)
            figure(f"seeding {seeded} managed accounts, {due if rotations else 0} due", seconds, "s", "none",
                   digits=1)
            if rotations:
                floor, _ = rotation_floor(due, env.palette_config, env.identity_config)
                label = f"rotations at {seeded} managed, {due} due"
                phase = sweep_phase(env, label, seeded, due, max(args.rotation_timeout, 3 * floor + 300))
                show_heavy(phase, env)
                results.heavy = phase
            first, piece = drift_phases(env, seeded, args.drift_timeout, dt.timedelta(seconds=args.drift_interval))
            show_drift_start(first)
            show_drift(piece, args.drift_timeout)
            onboarding_beside(env, args, size=seeded)
        finally:
            env.close()


def onboarding_beside(env: Env, args: argparse.Namespace, *, size: int) -> None:
    """Onboardings with every option on the idle system, then ``--beside`` more while a sweep of
    many due runs, each submitted a second after a drift slice started (the cycle's next run)."""
    bench, subscriber = env.bench, env.subscriber
    bodies = Bodies()
    apps = bench.register_apps(2 * args.runs + args.beside + 1)
    host = env.host()
    say("onboarding: warming the host with one onboarding ...")
    warm = bodies.one(apps[0], 0)
    bench.enqueue([warm])
    subscriber.wait_for({warm["requestId"]}, timeout=args.onboarding_timeout)
    idle: list[float] = []
    for run in range(1, args.runs + 1):
        time.sleep(BESIDE_GAP)  # the pace's slots refill, as between the ones under load
        seconds = _onboard(env, bodies, apps[run], run, args.onboarding_timeout)
        if seconds is not None:
            idle.append(seconds)
        say(f"onboarding on the idle system, run {run}: "
            f"{'timed out' if seconds is None else f'{seconds * 1000:.0f} ms'}")
    idle_samples = env.take_samples()
    burned: list[float] = []  # a control: beside one core kept busy by plain computation, nothing else
    burner = multiprocessing.get_context("spawn").Process(target=_burn, daemon=True)
    burner.start()
    try:
        for run in range(1, args.runs + 1):
            time.sleep(BESIDE_GAP)
            number = args.runs + args.beside + run
            seconds = _onboard(env, bodies, apps[number], number, args.onboarding_timeout)
            if seconds is not None:
                burned.append(seconds)
            say(f"onboarding beside one core of plain computation, run {run}: "
                f"{'timed out' if seconds is None else f'{seconds * 1000:.0f} ms'}")
    finally:
        burner.kill()
        burner.join()
    burned_samples = env.take_samples()
    names = env.seeder.make_due(args.heavy_due)
    say(f"onboarding: {len(names)} more accounts made due; a sweep starts, and a drift slice before each "
        f"of {args.beside} onboardings ...")
    sweep_job, drift_job = env.job("sweep"), env.job("drift")
    loaded: list[float | None] = []
    beside: list[tuple[float, bool, bool, int]] = []  # submitted after, sweeping, drifting, rotations done
    try:
        since, sweeping = time.time(), True
        sweep_job.go()
        next_run = env.drift_at or dt.datetime.now(dt.UTC)
        for number in range(args.runs + 1, args.runs + 1 + args.beside):
            submit_at = since + args.submit_after + (number - args.runs - 1) * BESIDE_GAP
            time.sleep(max(0.0, submit_at - 1 - time.time()))
            next_run += dt.timedelta(seconds=args.drift_interval)
            drift_job.go(next_run)  # the cycle's next run
            time.sleep(max(0.0, submit_at - time.time()))
            sweeping = sweeping and sweep_job.poll() is None and sweep_job.running  # its line is read once
            drifting = drift_job.poll() is None and drift_job.running  # else its line was read here
            done, failed, _ = wait_rotations(subscriber, since, 0, 0)
            beside.append((time.time() - since, sweeping, drifting, done + failed))
            seconds = _onboard(env, bodies, apps[number], number, args.onboarding_timeout)
            loaded.append(seconds)
            say(f"onboarding beside the load, run {number - args.runs}: submitted {beside[-1][0]:.1f} s into the "
                f"sweep (sweep {'starting rotations' if sweeping else 'done'}, drift slice "
                f"{'running' if drifting else 'done'}, {done + failed} rotations finished): "
                f"{'timed out' if seconds is None else f'{seconds * 1000:.0f} ms'}")
            if drifting:
                drift_job.result(args.drift_timeout)  # its slice ends before the next starts
    finally:
        sweep_job.kill()
        drift_job.kill()
        host.stop()
    base = median(idle)
    label = f"onboarding at {size} managed"
    timed = [seconds for seconds in loaded if seconds is not None]
    if len(timed) < len(loaded):
        figure(f"{label}: latency ratio under load", f"> {args.onboarding_timeout / base:.0f}", "", "<= 1.2")
        figure(f"{label}: beside the load, timed out", len(loaded) - len(timed), "", "0")
    if timed:
        if len(timed) == len(loaded):
            figure(f"{label}: latency ratio under load (medians)", median(timed) / base, "", "<= 1.2")
        figure(f"{label}: beside a sweep of {len(names)} due and a drift slice, enqueue to validated, median",
               median(timed) * 1000, "ms", "none", digits=0)
        figure(f"{label}: beside the load, each", " ".join(f"{seconds * 1000:.0f}" for seconds in timed), "ms",
               "none")
    figure(f"{label}: on the idle system, enqueue to validated, median", base * 1000, "ms", "none", digits=0)
    figure(f"{label}: on the idle system, each", " ".join(f"{seconds * 1000:.0f}" for seconds in idle), "ms",
           "none")
    figure(f"{label}: submitted after the sweep started", " ".join(f"{item[0]:.1f}" for item in beside), "s",
           "none")
    figure(f"{label}: rotations finished before each was submitted", " ".join(str(item[3]) for item in beside), "",
           "none")
    figure(f"{label}: the sweep still starting rotations at each", " ".join("yes" if item[1] else "no"
                                                                           for item in beside), "", "none")
    figure(f"{label}: a drift slice running at each", " ".join("yes" if item[2] else "no" for item in beside), "",
           "yes")
    figure(f"{label}: beside one core of plain computation (a control), median", median(burned) * 1000, "ms",
           "none", digits=0)
    figure(f"{label}: beside one core of plain computation, each", " ".join(f"{seconds * 1000:.0f}"
                                                                           for seconds in burned), "ms", "none")
    loaded_samples = env.take_samples()
    for condition, samples in (("on the idle system", idle_samples), ("beside plain computation", burned_samples),
                               ("beside the load", loaded_samples)):
        figure(f"{label}: {condition}: the machine's cores busy during each, median", median(samples["cpu"]) * 100,
               "%", "none", digits=0)
        figure(f"{label}: {condition}: a Table write to Azurite right after each, median",
               median(samples["table"]), "ms", "none", digits=1)
        figure(f"{label}: {condition}: a Palette read right after each ({args.latency_ms} ms added), median",
               median(samples["palette"]), "ms", "none", digits=1)
    figure(f"{label}: idle runs timed", len(idle), "", str(args.runs))


def _onboard(env: Env, bodies: Bodies, app_id: str, number: int, timeout: float) -> float | None:
    """Enqueue to the ``validated`` event of one onboarding with every option; None if it did not
    validate. How busy the machine's cores were meanwhile, and the round trips right after, go to
    ``env.samples``."""
    body = bodies.one(app_id, number)
    before = _cpu_ticks()
    began = env.bench.enqueue([body])
    event = env.subscriber.wait_for({body["requestId"]}, timeout=timeout).get(body["requestId"])
    after = _cpu_ticks()
    env.samples["cpu"].append((after[0] - before[0]) / max(after[1] - before[1], 1))
    env.probe()
    if event is None or event.type != "validated":
        return None
    return event.received - began


def _burn() -> None:
    """Keep one core busy with plain computation (the control beside which onboardings are timed)."""
    while True:
        sum(range(10_000))


def _cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, all) CPU ticks so far, from ``/proc/stat``."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return sum(fields) - idle, sum(fields)


# -------------------------------------------------------------------------------------------- plot

def _pyplot() -> Any:
    """matplotlib's pyplot (Agg); installed into this venv from bench/requirements.txt when missing."""
    try:
        import matplotlib
    except ImportError:
        say(f"installing matplotlib into {sys.prefix} for the plot (pip install -r bench/requirements.txt) ...")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                               str(REQUIREMENTS)], capture_output=True, text=True, timeout=900, check=False,
                              env=PLAIN_ENVIRONMENT)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise RuntimeError(f"matplotlib could not be installed: {reason}") from None
        importlib.invalidate_caches()
        import matplotlib
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(results: Results, path: Path) -> str:
    """The sweep's cost against accounts managed (lines, a fixed number due) and due (the larger
    marker): calls and seconds. The path written, or why not."""
    phases = results.sizes + ([results.heavy] if results.heavy is not None else [])
    if not phases:
        return "skipped (nothing measured)"
    try:
        plt = _pyplot()
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        return f"skipped ({exc})"
    figure_, (calls_axis, time_axis) = plt.subplots(1, 2, figsize=(12, 6.2))
    series = [
        (calls_axis, "app calls (Palette, Graph, Key Vault, Entra ID)", lambda p: p.total()),
        (calls_axis, "Table operations of the rotations", lambda p: sum(p.host_tables.values())),
        (calls_axis, "Table operations of the sweep", lambda p: sum(p.job_tables.values())),
        (time_axis, "sweep to the last rotation finished", lambda p: p.wall),
        (time_axis, "sweep run time", lambda p: p.seconds),
    ]
    fixed_due = results.sizes[0].due if results.sizes else 0
    for axis, name, value in series:
        line = axis.plot([p.managed for p in results.sizes], [value(p) for p in results.sizes], marker="o",
                         label=f"{name}, {fixed_due} due")[0]
        if results.heavy is not None:
            axis.plot([results.heavy.managed], [value(results.heavy)], marker="*", markersize=14, linestyle="none",
                      color=line.get_color(), label=f"{name}, {results.heavy.due} due")
    managed = sorted({p.managed for p in results.sizes or phases})
    for axis, unit in ((calls_axis, "calls and Table operations"), (time_axis, "seconds")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(managed, [f"{m:,}" for m in managed])
        axis.minorticks_off()
        axis.set_xlabel("accounts managed")
        axis.set_ylabel(unit)
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    calls_axis.set_title("One sweep and its rotations: calls")
    time_axis.set_title("One sweep and its rotations: time")
    figure_.suptitle(f"Rotation sweep against accounts managed (lines: {fixed_due} due)"
                     + (f" and due (stars: {results.heavy.due} due)" if results.heavy is not None else ""), fontsize=11)
    figure_.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_.savefig(path, dpi=110)
    plt.close(figure_)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000,50000", help="accounts managed, comma-separated")
    parser.add_argument("--due", type=int, default=50, help="accounts due at each size")
    parser.add_argument("--heavy-size", type=int, default=10000, help="accounts managed for the many-due part")
    parser.add_argument("--heavy-due", type=int, default=5000, help="accounts due in the many-due part")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5, help="onboardings timed on the idle system")
    parser.add_argument("--beside", type=int, default=5, help="onboardings timed beside the sweep and drift slices")
    parser.add_argument("--parts", default="sizes,heavy",
                        help="sizes, heavy, or both; or beside: heavy without its first sweep of many due")
    parser.add_argument("--rotation-timeout", type=float, default=600.0, help="seconds a sweep's rotations may take")
    parser.add_argument("--drift-timeout", type=float, default=600.0, help="seconds before a drift slice is stopped")
    parser.add_argument("--drift-interval", type=float, default=3600.0,
                        help="seconds between drift runs (DRIFT_SCHEDULE: hourly)")
    parser.add_argument("--onboarding-timeout", type=float, default=300.0)
    parser.add_argument("--submit-after", type=float, default=30.0,
                        help="seconds into the sweep the onboarding under load is submitted (a drift slice 1 s before)")
    parser.add_argument("--plot", type=Path, default=None, help="the PNG (default bench/out/scale.png)")
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 accounts, 100 due: a few minutes")
    parser.add_argument("--job", choices=("sweep", "drift"), help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        return _job(args.job, args.settings)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    parts = {part.strip() for part in args.parts.split(",")}
    began = time.monotonic()
    say(f"scale: sizes {args.sizes} with {args.due} due; {args.heavy_due} due at {args.heavy_size}; "
        f"{args.latency_ms} ms per stand-in call")
    results = Results()
    if "sizes" in parts:
        scale_sizes(args, results)
    if "heavy" in parts or "beside" in parts:
        heavy(args, results, rotations="heavy" in parts)
    path = args.plot or OUT / ("scale-quick.png" if args.quick else "scale.png")
    figure("plot", plot(results, path), "", "bench/out/")
    figure("benchmark run time", (time.monotonic() - began) / 60, "min", "none", digits=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
