"""What keeps background work proportional to the work at 10,000 accounts, asserted on outcomes: the
inventory's index (what the sweep reads) agrees with the rows, survives being lost, and takes in an
inventory of the layout before it; the drift pass looks at each account once a period, a slice per
run, oldest first, catching up a missed run over the next ones; a clean account costs the pass one
read each of Palette, Key Vault and Graph. The figures at scale are ``python -m bench scale``'s."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import requests

from shared.rotation.drift import drift_pass, phase_of
from shared.rotation.sweep import sweep
from shared.state.inventory import (
    ACCOUNT_PREFIX,
    INDEX_MARKER,
    LEGACY_ROW_KEY,
    META_PARTITION,
    _to_entity,
    drift_phase,
    shard_of,
)
from shared.state.records import iso
from tests.rotation.test_rotation import NOW, make_due, onboard

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from shared.settings import RotationConfig
    from tests.onboarding.conftest import World

DAY = dt.timedelta(days=1)


def _table(world: World) -> TableClient:
    from azure.data.tables import TableClient

    return TableClient.from_connection_string(world.stack.settings["AzureWebJobsStorage"],
                                              table_name=world.deps.settings.inventory_table)


def _index(world: World) -> set[str]:
    with _table(world) as table:
        return {str(e["RowKey"]) for e in table.list_entities()
                if e["PartitionKey"] != META_PARTITION and not str(e["RowKey"]).startswith(ACCOUNT_PREFIX)}


def _config(world: World, **changes: Any) -> RotationConfig:
    return dataclasses.replace(world.deps.settings.pipeline.rotation, drift_period_days=1.0, **changes)


def test_index_rows_move_with_the_row_and_the_sweep_reads_only_them(world: World) -> None:
    due, fresh = onboard(world)["accountName"], onboard(world)["accountName"]
    before = world.deps.clients.inventory.get(due)
    assert before is not None and f"expires|{before.expires_on}|{due}" in _index(world)
    make_due(world, due)
    after = world.deps.clients.inventory.get(due)
    assert after is not None
    index = _index(world)
    assert f"expires|{after.expires_on}|{due}" in index and f"expires|{before.expires_on}|{due}" not in index
    assert sorted(after.index_keys) == sorted(k for k in index if k.endswith(f"|{due}"))
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=NOW)
    assert (report.due, report.enqueued) == (1, 1)  # the fresh account's index row lies past the horizon
    assert any(key.startswith("expires|") and key.endswith(f"|{fresh}") for key in _index(world))


def test_a_lost_index_is_rebuilt_from_the_rows_and_the_sweep_still_finds_what_is_due(world: World) -> None:
    due = onboard(world)["accountName"]
    onboard(world)
    make_due(world, due)
    kept = _index(world)
    with _table(world) as table:
        for entity in list(table.list_entities()):
            if not str(entity["RowKey"]).startswith(ACCOUNT_PREFIX):
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])  # the index and its marker
    assert _index(world) == set()
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=NOW)
    assert (report.due, report.enqueued) == (1, 1)
    assert _index(world) == kept
    assert world.deps.clients.inventory.index_ready()


def test_rows_of_the_layout_before_the_index_are_moved_into_it(world: World) -> None:
    name = onboard(world)["accountName"]
    make_due(world, name)
    row = world.deps.clients.inventory.get(name)
    assert row is not None
    with _table(world) as table:
        table.delete_entity(shard_of(name), ACCOUNT_PREFIX + name)
        for key in row.index_keys:
            table.delete_entity(shard_of(name), key)
        table.delete_entity(META_PARTITION, INDEX_MARKER)
        legacy = {**_to_entity(dataclasses.replace(row, index_keys=[])), "PartitionKey": name,
                  "RowKey": LEGACY_ROW_KEY}
        table.create_entity(legacy)
    report = sweep(world.deps.clients, world.deps.queue, world.deps.settings.pipeline.rotation, now=NOW)
    assert report.due == 1
    moved = world.deps.clients.inventory.get(name)
    assert moved is not None and moved.expires_on == row.expires_on and moved.palette_uid == row.palette_uid
    with _table(world) as table:
        assert [e for e in table.list_entities() if e["PartitionKey"] == name] == []


def _start_cycle(world: World, at: dt.datetime, *, net_at: dt.datetime | None = None) -> None:
    """The drift cycle as if its last run was at ``at`` (the safety net ran at ``net_at``)."""
    world.deps.clients.inventory.write_meta("drift", {"Cursor": phase_of(at, DAY), "RunAt": iso(at),
                                                      "NetAt": iso(net_at or at)}, None)


def test_every_account_is_looked_at_once_a_period_by_the_run_its_phase_falls_in(world: World) -> None:
    names = [onboard(world)["accountName"] for _ in range(4)]
    config = _config(world)
    _start_cycle(world, NOW)
    runs = [NOW + k * dt.timedelta(hours=6) for k in range(1, 5)]
    counts = [drift_pass(world.deps.clients, world.deps.queue, config, now=at).accounts for at in runs]
    assert sum(counts) == len(names)
    for name in names:
        row = world.deps.clients.inventory.get(name)
        assert row is not None
        # Looked at by the first run at or after its phase's moment in the cycle.
        offset = (int(drift_phase(name)) - int(phase_of(NOW, DAY))) % 1_000_000 / 1_000_000 * DAY
        expected = next(at for at in runs if at - NOW >= offset)
        assert row.drift_looked_at == iso(expected), name
    # The cycle's cursor is at the last run's phase, not at the last account's: the phases between
    # that account and the run were looked at too (none of the accounts lies there), so the next lap
    # starts from them and no account is passed over.
    cursor, _ = world.deps.clients.inventory.read_meta("drift")
    assert cursor["Cursor"] == phase_of(runs[-1], DAY)
    # A second lap looks at each again, once.
    assert sum(drift_pass(world.deps.clients, world.deps.queue, config, now=at + DAY).accounts
               for at in runs) == len(names)


def test_a_missed_run_is_caught_up_over_the_next_runs_oldest_first(world: World) -> None:
    names = [onboard(world)["accountName"] for _ in range(3)]
    config = _config(world, drift_slice_max=1)
    _start_cycle(world, NOW - DAY)  # the last run was a whole period ago: every account is due
    later = [NOW + dt.timedelta(minutes=k) for k in range(4)]
    counts = [drift_pass(world.deps.clients, world.deps.queue, config, now=at).accounts for at in later]
    assert counts == [1, 1, 1, 0]
    looked = sorted(names, key=lambda name: world.deps.clients.inventory.get(name).drift_looked_at)  # type: ignore[union-attr]
    start = phase_of(NOW - DAY, DAY)
    assert looked == sorted(names, key=lambda name: (drift_phase(name) <= start, drift_phase(name)))


def _service_calls(world: World) -> dict[str, list[dict[str, Any]]]:
    stack = world.stack
    assert stack.palette is not None and stack.keyvault is not None and stack.identity_https is not None
    calls = {}
    for service, url in (("palette", stack.palette.url), ("keyvault", stack.keyvault.url),
                         ("identity", stack.identity_https.url)):
        calls[service] = requests.get(f"{url}/_devstack/requests", verify=world.verify, timeout=10).json()["items"]
    return calls


def _clear_calls(world: World) -> None:
    stack = world.stack
    assert stack.palette is not None and stack.keyvault is not None and stack.identity_https is not None
    for url in (stack.palette.url, stack.keyvault.url, stack.identity_https.url):
        requests.delete(f"{url}/_devstack/requests", verify=world.verify, timeout=10).raise_for_status()


def test_a_clean_account_costs_one_read_each_of_palette_key_vault_and_graph(world: World) -> None:
    onboard(world), onboard(world)
    config = _config(world)
    _clear_calls(world)
    report = drift_pass(world.deps.clients, world.deps.queue, config, now=NOW, whole=True)
    assert report.accounts == 2 and report.detected == 0
    calls = _service_calls(world)
    palette_reads = [c for c in calls["palette"] if c["method"] == "GET" and "/v1/cloudaccounts/azure/" in c["path"]]
    validations = [c for c in calls["palette"] if "validate" in c["path"]]
    graph_reads = [c for c in calls["identity"] if c["path"].startswith("/v1.0/applications")]
    key_vault_reads = [c for c in calls["keyvault"] if "/versions" in c["path"]]
    # Per account: the Palette account, Key Vault's versions, the app's passwords; no validation.
    assert (len(palette_reads), len(validations), len(graph_reads), len(key_vault_reads)) == (2, 0, 2, 2), \
        {service: [(c["method"], c["path"]) for c in items] for service, items in calls.items()}


def test_graph_warning_of_its_limit_slows_the_apps_graph_writes_in_every_instance(world: World) -> None:
    """Graph's ``x-ms-throttle-limit-percentage`` (the stand-in's write window, made small) slows the
    shared pace of Graph writes before any 429 comes."""
    from azure.data.tables import TableClient

    from shared.state.pace import GRAPH_WRITES, PARTITION, _row_key

    identity = world.stack.identity_https
    assert identity is not None

    def configure(**settings: object) -> None:
        requests.post(f"{identity.url}/_devstack/config", json=settings, verify=world.verify,
                      timeout=10).raise_for_status()
    body = onboard(world)
    graph = world.deps.clients.graph
    assert graph is not None
    configure(graphWriteLimits=True, graphAppWriteLimit=10, graphAppWriteWindowSeconds=120)
    try:
        added = [graph.add_password(body["azure"]["clientId"], display_name=f"load {n}",
                                    end=NOW + dt.timedelta(days=1)) for n in range(9)]
    finally:
        configure(graphWriteLimits=None, graphAppWriteLimit=None, graphAppWriteWindowSeconds=None)
    for password in added:
        graph.remove_password(body["azure"]["clientId"], password.key_id)
    with TableClient.from_connection_string(world.stack.settings["AzureWebJobsStorage"],
                                            table_name=world.deps.settings.pace_table) as table:
        row = table.get_entity(PARTITION, _row_key(GRAPH_WRITES))
        table.upsert_entity({"PartitionKey": PARTITION, "RowKey": row["RowKey"], "SlowUntil": 0.0})  # for later tests
    assert row["SlowUntil"] > NOW.timestamp() and row["SlowFactor"] < 0.5  # 9 of 10 used: 0.3 of the pace


def test_a_timed_rotation_is_sent_again_to_the_background_queue_and_one_asked_for_to_the_onboarding_queue(
        world: World) -> None:
    """The timer's rotations wait on the background queue (functions/rotations.py hands the sweep
    that queue), never ahead of an onboarding; when a send failed, the sweeper sends each request
    again to its own queue."""
    from shared.clients.queue import RequestQueue
    from shared.operations import sweep as sweep_stuck
    from shared.rotation.sweep import rotate_now
    from shared.settings import SweepConfig

    due, asked = onboard(world)["accountName"], onboard(world)["accountName"]
    make_due(world, due)
    config = world.deps.settings.pipeline.rotation
    # The sends fail (a queue that does not exist): the rows stay queued for the sweeper.
    nowhere = RequestQueue.from_connection_string(world.stack.settings["ServiceBusConnection"], "no-such-queue",
                                                  ca_bundle=world.verify)
    try:
        assert sweep(world.deps.clients, nowhere, config, now=NOW).errors == 1
        with contextlib.suppress(Exception):
            rotate_now(world.deps.clients, nowhere, asked)
    finally:
        nowhere.close()
    report = sweep_stuck(world.deps.clients, world.deps.queue, SweepConfig(queued_after_seconds=0),
                         pipeline=world.deps.settings.pipeline, background_queue=world.deps.background_queue,
                         now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert report.resent == 2
    assert [json.loads(body)["accountName"] for body, _, _ in world.queued(queue="BACKGROUND_QUEUE")] == [due]
    assert [json.loads(body)["accountName"] for body, _, _ in world.queued()] == [asked]


def test_rows_written_in_bulk_carry_their_index_and_leave_a_row_that_exists_as_it_is(world: World) -> None:
    from shared.state.inventory import AccountRecord

    inventory = world.deps.clients.inventory
    expires = iso(NOW + dt.timedelta(days=5))
    existing = inventory.create(AccountRecord(account_name="bulk-0", palette_uid="kept"))
    rows = [AccountRecord(account_name=f"bulk-{n}", palette_uid=f"uid-{n}", expires_on=expires) for n in range(120)]
    assert inventory.create_many(rows) == 119
    kept = inventory.get("bulk-0")
    assert kept is not None and kept.palette_uid == "kept" and kept.etag == existing.etag
    assert {entry.account_name for entry in inventory.due("expires", expires)} == {f"bulk-{n}" for n in range(1, 120)}
    assert len(list(inventory.due("drift"))) == 120
