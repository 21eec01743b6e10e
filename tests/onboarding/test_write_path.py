"""What the onboarding writes, and when: one write per step result, a fence before every create,
nothing written that a crash could leave unaccounted for.

* every object the request makes is named in its row before the call that makes it, and recorded
  with its ids once made;
* a ticket's first delivery inserts its row; a message the product sent says the row is there;
* the name leases go in at once, and a name held elsewhere leaves none of this request's behind;
* a request whose read-back fails takes back everything it made, and leaves the inventory alone.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from shared.credentials import ssh_key_lease
from shared.engine import OutcomeKind
from shared.engine.enqueue import RECORDED
from shared.onboarding.intake import submit
from shared.onboarding.plan import lease_names
from shared.state import NameLease, RequestRecord
from shared.state.records import iso, utcnow

from .conftest import World, wait_for
from .test_resilience import full_request


def made_of(world: World, request_id: str) -> dict[str, Any]:
    made: dict[str, Any] = json.loads(world.state_row(request_id)["Made"])
    return made


def test_everything_the_request_made_is_recorded_with_its_ids(world: World) -> None:
    body = full_request(world)
    assert world.run(body).kind is OutcomeKind.SUCCEEDED
    made = made_of(world, body["requestId"])
    assert set(made) == {"password", "secret:client-secret", "account", "sshKey", "secret:ssh-key", "apiKey",
                         "secret:api-key"}
    assert {key: entry["state"] for key, entry in made.items()} == dict.fromkeys(made, "made")
    [account] = world.palette_accounts(body["accountName"])
    assert made["account"]["ids"] == {"uid": account["uid"]}
    [password] = world.graph_passwords(body["azure"]["clientId"])
    assert made["password"]["ids"] == {"keyId": password["keyId"]}


def test_a_create_is_named_in_the_row_before_palette_answers_it(world: World) -> None:
    """While Palette takes its time over the account's creation, the row already names the account
    as possibly made (``sending``): a crash now would leave the next delivery (or the failure that
    takes it back) something to look for by this request's annotations."""
    body = world.request()
    world.palette_fault(method="POST", path="^/v1/cloudaccounts/azure$", times=1, latencyMs=1500)
    outcome: list[Any] = []
    delivery = threading.Thread(target=lambda: outcome.append(world.run(body)))
    delivery.start()
    try:
        entry = wait_for(lambda: made_of_quietly(world, body["requestId"]).get("account"), "the account's fence")
        assert entry["state"] == "sending" and entry["find"]["name"] == body["accountName"]
        assert world.palette_accounts(body["accountName"]) == []  # not made yet (the stand-in is still waiting)
    finally:
        delivery.join(timeout=60)
    assert outcome[0].kind is OutcomeKind.SUCCEEDED
    assert made_of(world, body["requestId"])["account"]["state"] == "made"


def made_of_quietly(world: World, request_id: str) -> dict[str, Any]:
    try:
        return made_of(world, request_id)
    except Exception:  # noqa: BLE001 - the row is not there yet
        return {}


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
    from shared.credentials import lease_key
    from shared.models import parse_request

    body = full_request(world)
    keys = [lease_key(key) for key in lease_names(parse_request(json.dumps(body)))]
    assert keys[1] == lease_key(ssh_key_lease("Default", body["sshKey"]["name"]))
    store = world.deps.clients.state
    other = store.create(RequestRecord(request_id=f"OTHER-{body['requestId']}", account_name="other",
                                       fingerprint="f"))
    store.create_lease(NameLease(key=keys[-1], owner=other.request_id, expires_at=iso(utcnow().replace(year=2100))))
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.BUSY and outcome.reason == "apikey_busy"
    assert [store.get_lease(key) for key in keys[:-1]] == [None, None]  # given back
    held = store.get_lease(keys[-1])
    assert held is not None and held.owner == other.request_id
    assert world.palette_accounts(body["accountName"]) == []


def test_a_failed_read_back_takes_back_everything_the_request_made(world: World) -> None:
    body = full_request(world)
    world.palette_fault(method="GET", path="^/v1/apiKeys/[^/]+$", status=404)
    outcome = world.run(body)
    assert outcome.kind is OutcomeKind.FAILED and outcome.reason == "verification_failed"
    assert world.palette_accounts(body["accountName"]) == []
    assert world.graph_passwords(body["azure"]["clientId"]) == []
    palette = world.palette_state()
    assert [k for k in palette["sshKeys"] if k["name"] == body["sshKey"]["name"]] == []
    assert [k for k in palette["apiKeys"] if k["name"] == body["apiKey"]["name"]] == []
    # The versions it wrote are disabled: nothing reads them as the account's current secret.
    for name in (f"palette-{body['accountName']}-{kind}" for kind in ("client-secret", "ssh-key", "api-key")):
        assert [v.enabled for v in world.secret_versions(name)] == [False]
    assert world.deps.clients.inventory.get(body["accountName"]) is None
    failed = [e for e in world.events() if e["type"] == "palette.onboarding.failed"]
    assert len(failed) == 1 and len(failed[0]["data"]["removed"]) == 7
