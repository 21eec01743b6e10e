"""What the onboarding writes, and when: the writes it keeps off its critical path must not cost
any of the crash safety the state row gives.

* the claim writes the marker of every create the request may make, before anything is made;
* a result left for later (``RecordHandle.save_behind``) is never written without its events;
* a ticket's first delivery inserts its row; a message the product sent says the row is there;
* the name leases go in at once, and a name held elsewhere leaves none of this request's behind;
* the inventory records an account the onboarding made even when a read-back fails.
"""

from __future__ import annotations

import json
import time

import pytest

from shared.engine import OutcomeKind
from shared.engine.enqueue import RECORDED
from shared.engine.leases import names_of
from shared.engine.record import RecordHandle
from shared.onboarding.intake import submit
from shared.onboarding.steps import ACCOUNT_CREATING, API_KEY_CREATING, PASSWORD_ADDING, SSH_KEY_CREATING
from shared.state import NameLease, OnboardingRecord
from shared.state.records import iso, utcnow

from .conftest import World
from .test_resilience import HostKilled, full_request, kill_at, short_leases


def test_the_claim_writes_the_marker_of_every_create_before_anything_is_made(world: World) -> None:
    body = full_request(world)
    with pytest.raises(HostKilled):
        world.run(body, config=short_leases(world), checkpoint=kill_at("claimed.saved"))
    results = json.loads(world.state_row(body["requestId"])["Results"])
    assert {key: results.get(key) for key in (ACCOUNT_CREATING, PASSWORD_ADDING, SSH_KEY_CREATING,
                                              API_KEY_CREATING)} == dict.fromkeys(
        (ACCOUNT_CREATING, PASSWORD_ADDING, SSH_KEY_CREATING, API_KEY_CREATING), "1")
    assert world.palette_accounts(body["accountName"]) == []  # nothing was made yet
    # The redelivery (once the killed delivery's leases lapsed) finds markers an earlier delivery
    # wrote, looks for what they announce (there is nothing), and finishes with one of everything.
    time.sleep(1.2)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    assert len(world.palette_accounts(body["accountName"])) == 1
    assert len(world.graph_passwords(body["azure"]["clientId"])) == 1


def test_a_result_left_behind_is_never_written_without_its_events(world: World) -> None:
    store = world.deps.clients.state
    record = store.create(OnboardingRecord(request_id=f"BEHIND-{world.request()['requestId']}",
                                           account_name="behind", fingerprint="f", lease_owner="me",
                                           lease_expires_at=iso(utcnow())))
    handle = RecordHandle(store, record, owner="me", lease_seconds=30)
    event = {"id": "event-1", "type": "t", "source": "s", "specversion": "1.0"}
    handle.save_behind(lambda r: r.results.update(made="yes"), events=[event])
    assert handle.result("made") == "yes"  # seen at once by the delivery

    handle.mark(other="1")  # a write in between (another branch's marker)
    row = store.get(record.request_id)
    assert row is not None
    assert row.results.get("other") == "1"
    assert "made" not in row.results and row.outbox == []  # not the result without its event

    handle.settle()
    row = store.get(record.request_id)
    assert row is not None
    assert row.results.get("made") == "yes" and [e["id"] for e in row.outbox] == ["event-1"]


def test_a_marker_the_row_holds_already_is_not_written_again(world: World) -> None:
    store = world.deps.clients.state
    record = store.create(OnboardingRecord(request_id=f"MARKED-{world.request()['requestId']}",
                                           account_name="marked", fingerprint="f", results={"_made": "1"}))
    handle = RecordHandle(store, record, owner="me", lease_seconds=30)
    handle.mark(_made="1")
    row = store.get(record.request_id)
    assert row is not None and row.etag == record.etag  # nothing written
    handle.mark(_made="2")
    row = store.get(record.request_id)
    assert row is not None and row.results["_made"] == "2"


def test_a_product_sent_message_says_its_row_exists_and_a_ticket_with_a_row_still_resumes(world: World) -> None:
    body = world.request()
    submit(json.dumps(body).encode(), world.deps.clients, world.deps.queue, allow_inline_secret=False,
           config=world.deps.settings.pipeline)
    [(raw, _message_id, properties)] = world.queued()
    assert properties.get(RECORDED) == "true"
    # Delivered as a ticket's message would be (no property): the insert finds the row, and the
    # delivery resumes it.
    assert world.run(raw, row_expected=False).kind is OutcomeKind.SUCCEEDED
    assert world.run(raw, row_expected=True).kind is OutcomeKind.DUPLICATE


def test_a_name_held_elsewhere_leaves_none_of_the_requests_leases_behind(world: World) -> None:
    from shared.models import parse_request

    body = full_request(world)
    keys = names_of(parse_request(json.dumps(body)))
    store = world.deps.clients.state
    other = store.create(OnboardingRecord(request_id=f"OTHER-{body['requestId']}", account_name="other",
                                          fingerprint="f"))
    store.create_lease(NameLease(key=keys[-1], owner=other.request_id, expires_at=iso(utcnow().replace(year=2100))))
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.BUSY and outcome.reason == "apikey_busy"
    assert [store.get_lease(key) for key in keys[:-1]] == [None, None]  # given back
    held = store.get_lease(keys[-1])
    assert held is not None and held.owner == other.request_id
    assert world.palette_accounts(body["accountName"]) == []


def test_the_inventory_records_an_account_whose_read_back_failed(world: World) -> None:
    body = full_request(world)
    world.palette_fault(method="GET", path="^/v1/apiKeys/[^/]+$", status=404)
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "verification_failed"
    [account] = world.palette_accounts(body["accountName"])
    row = world.deps.clients.inventory.get(body["accountName"])
    assert row is not None and row.palette_uid == account["uid"]  # its secret will be rotated
