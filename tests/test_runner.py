"""The local runner honours the Azure Functions semantics the app relies on.

A small test-only Function App (below) is hosted by ``devstack.runner.LocalHost`` against the
session's local stack: its queue trigger reads the ``onboarding`` queue through a ``%NAME%`` binding
expression, its timer fires every second, its HTTP route echoes what it was given. The broker is
emptied before and after each test. The last tests host the real app and put requests on the queue
the way a ticketing system does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import azure.functions as func
import pytest
import requests

import function_app
from devstack.runner import HOST_JSON, LocalHost
from devstack.stack import Stack
from tests.onboarding.conftest import World, deps, wait_for, world

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding

MAX_DELIVERY_COUNT = 10  # the onboarding queue's, in devstack/entities.json


# -- the test-only app --------------------------------------------------------------------------------

class Probe:
    """What the test app's functions saw; the queue function fails as each message tells it to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries: dict[str, list[int]] = defaultdict(list)
        self.ticks: list[bool] = []
        self.release = threading.Event()  # messages that say "hold" wait for it
        self.running = 0
        self.most_running = 0

    def clear(self) -> None:
        with self.lock:
            self.deliveries.clear()
            self.ticks.clear()
            self.release = threading.Event()
            self.running = self.most_running = 0

    def seen(self, message_id: str) -> list[int]:
        with self.lock:
            return list(self.deliveries.get(message_id, []))


probe = Probe()
probe_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@probe_app.function_name("probe_queue")
@probe_app.service_bus_queue_trigger(arg_name="msg", queue_name="%PROBE_QUEUE%", connection="ServiceBusConnection")
def probe_queue(msg: func.ServiceBusMessage) -> None:
    instructions = json.loads(msg.get_body())
    with probe.lock:
        seen = probe.deliveries[str(msg.message_id)]
        seen.append(int(msg.delivery_count))
        failing = len(seen) <= int(instructions.get("failTimes", 0))
        probe.running += 1
        probe.most_running = max(probe.most_running, probe.running)
        release = probe.release
    try:
        if instructions.get("hold"):
            release.wait(timeout=30)
        if failing:
            raise RuntimeError("the probe was told to fail this delivery")
    finally:
        with probe.lock:
            probe.running -= 1


@probe_app.function_name("probe_timer")
@probe_app.timer_trigger(arg_name="timer", schedule="%PROBE_SCHEDULE%")
def probe_timer(timer: func.TimerRequest) -> None:
    with probe.lock:
        probe.ticks.append(timer.past_due)


@probe_app.function_name("probe_http")
@probe_app.route(route="things/{thingId}/parts/{partId}", methods=["GET", "POST"])
def probe_http(req: func.HttpRequest) -> func.HttpResponse:
    echo = {"method": req.method, "route": dict(req.route_params), "params": dict(req.params),
            "body": req.get_body().decode()}
    return func.HttpResponse(json.dumps(echo), status_code=200, mimetype="application/json")


# -- hosting ------------------------------------------------------------------------------------------

@contextmanager
def hosted(app: func.FunctionApp, settings: Mapping[str, str], *, unset: tuple[str, ...] = (),
           **options: Any) -> Iterator[LocalHost]:
    """Host ``app`` (``options`` go to :class:`LocalHost`) until the block ends, without the
    settings named in ``unset``; the environment is put back as it was."""
    saved = {name: os.environ.get(name) for name in (*settings, *unset)}
    for name in unset:
        os.environ.pop(name, None)
    local = LocalHost(app, settings, **options)
    try:
        local.start()
        try:
            yield local
        finally:
            local.stop()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def probe_host(stack: Stack) -> Iterator[LocalHost]:
    stack.reset()
    probe.clear()
    settings = {**stack.settings, "PROBE_QUEUE": stack.settings["ONBOARDING_QUEUE"],
                "PROBE_SCHEDULE": "*/1 * * * * *"}
    with hosted(probe_app, settings) as local:
        yield local
    stack.reset()


def _send(stack: Stack, body: Mapping[str, Any], *message_ids: str) -> None:
    """Put ``body`` on the onboarding queue once per message id, in one send."""
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
            client.get_queue_sender(stack.settings["ONBOARDING_QUEUE"]) as sender:
        sender.send_messages([ServiceBusMessage(json.dumps(body), message_id=message_id,
                                                content_type="application/json") for message_id in message_ids])


def _peek(stack: Stack, *, dead_letter: bool = False) -> list[Any]:
    """Every message on the queue (or its dead-letter queue), locked ones included, unreceived."""
    from azure.servicebus import ServiceBusClient, ServiceBusSubQueue

    sub_queue = ServiceBusSubQueue.DEAD_LETTER if dead_letter else None
    with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(stack.settings["ONBOARDING_QUEUE"], sub_queue=sub_queue) as receiver:
        return list(receiver.peek_messages(max_message_count=100))


# -- Service Bus trigger ------------------------------------------------------------------------------

def test_message_whose_function_returns_is_completed(probe_host: LocalHost, stack: Stack) -> None:
    _send(stack, {"failTimes": 0}, "returns-1")

    wait_for(lambda: probe.seen("returns-1"), "the function to see the message")
    wait_for(lambda: _peek(stack) == [], "the message to leave the queue")

    assert probe.seen("returns-1") == [1]
    assert _peek(stack, dead_letter=True) == []


def test_message_whose_function_raises_is_abandoned_and_redelivered(probe_host: LocalHost, stack: Stack) -> None:
    _send(stack, {"failTimes": 2}, "raises-twice")

    wait_for(lambda: len(probe.seen("raises-twice")) == 3, "the third delivery")
    wait_for(lambda: _peek(stack) == [], "the message to leave the queue")

    # Functions numbers deliveries from 1; each abandon adds one.
    assert probe.seen("raises-twice") == [1, 2, 3]
    assert _peek(stack, dead_letter=True) == []


def test_message_that_always_fails_is_dead_lettered_after_max_delivery_count(
        probe_host: LocalHost, stack: Stack) -> None:
    from azure.servicebus import ServiceBusClient, ServiceBusSubQueue

    _send(stack, {"failTimes": 1000}, "always-fails")

    dead: list[Any] = []
    with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(stack.settings["ONBOARDING_QUEUE"], sub_queue=ServiceBusSubQueue.DEAD_LETTER,
                                      max_wait_time=1) as receiver:
        def received() -> list[Any]:
            for message in receiver.receive_messages(max_message_count=10, max_wait_time=1):
                dead.append(message)
                receiver.complete_message(message)
            return dead
        wait_for(received, "the message in the dead-letter queue")

    assert [m.message_id for m in dead] == ["always-fails"]
    assert dead[0].dead_letter_reason == "MaxDeliveryCountExceeded"
    assert json.loads(b"".join(dead[0].body)) == {"failTimes": 1000}
    assert probe.seen("always-fails") == list(range(1, MAX_DELIVERY_COUNT + 1))
    assert _peek(stack) == []


def test_calls_in_flight_are_bounded_by_max_concurrent_calls_and_every_slot_is_used(
        probe_host: LocalHost, stack: Stack) -> None:
    limit = json.loads(HOST_JSON.read_text())["extensions"]["serviceBus"]["maxConcurrentCalls"]
    ids = [f"held-{i}" for i in range(limit + 2)]
    try:
        _send(stack, {"hold": True}, *ids)
        wait_for(lambda: probe.running == limit, f"{limit} calls in flight")
    finally:
        probe.release.set()
    wait_for(lambda: _peek(stack) == [], "every message to be completed")

    assert probe.most_running == limit
    assert all(probe.seen(message_id) == [1] for message_id in ids)


def test_a_slow_call_does_not_hold_back_the_next_message_while_slots_are_free(
        probe_host: LocalHost, stack: Stack) -> None:
    """The host refills a free slot at once; it does not wait for a whole batch to finish."""
    try:
        _send(stack, {"hold": True}, "slow")
        wait_for(lambda: probe.seen("slow"), "the slow call to start")
        _send(stack, {}, "quick")
        wait_for(lambda: probe.seen("quick"), "the quick message to run while the slow call runs", timeout=20)
        wait_for(lambda: [m.message_id for m in _peek(stack)] == ["slow"], "the quick message to be completed",
                 timeout=20)
        assert probe.running == 1  # the slow call is still running
    finally:
        probe.release.set()
    wait_for(lambda: _peek(stack) == [], "the slow message to be completed")
    assert probe.seen("slow") == [1]


def test_binding_expression_names_an_app_setting(stack: Stack) -> None:
    """A ``%NAME%`` that names no app setting fails at start-up, as the host refuses the function."""
    settings = {**stack.settings, "PROBE_SCHEDULE": "*/1 * * * * *"}
    with pytest.raises(KeyError, match="PROBE_QUEUE"), hosted(probe_app, settings):
        pass


# -- timer and HTTP triggers --------------------------------------------------------------------------

def test_timer_fires_on_its_schedule(probe_host: LocalHost) -> None:
    wait_for(lambda: len(probe.ticks) >= 2, "two timer ticks", timeout=15)

    assert not any(probe.ticks)  # not past due


def test_http_route_parameters_query_and_body_reach_the_function(probe_host: LocalHost) -> None:
    got = requests.get(f"{probe_host.http_url}/things/t-42/parts/p7", params={"colour": "blue"}, timeout=10)
    posted = requests.post(f"{probe_host.http_url}/things/t-1/parts/p-2", data=b"payload", timeout=10)

    assert got.status_code == 200
    assert got.json() == {"method": "GET", "route": {"thingId": "t-42", "partId": "p7"},
                          "params": {"colour": "blue"}, "body": ""}
    assert posted.status_code == 200
    assert posted.json()["route"] == {"thingId": "t-1", "partId": "p-2"}
    assert posted.json()["body"] == "payload"


def test_unknown_route_is_a_404(probe_host: LocalHost) -> None:
    base = probe_host.http_url
    root = base.rsplit("/api", 1)[0]

    assert requests.get(f"{base}/no-such-route", timeout=10).status_code == 404
    assert requests.get(f"{base}/things/t-1", timeout=10).status_code == 404
    assert requests.get(f"{root}/things/t-1/parts/p-2", timeout=10).status_code == 404  # outside /api
    assert requests.delete(f"{base}/things/t-1/parts/p-2", timeout=10).status_code == 404  # method not bound


# -- the real app, fed through the queue ----------------------------------------------------------------

@pytest.fixture
def app_host(stack: Stack, world: World) -> Iterator[LocalHost]:
    settings = {**stack.settings, "VALIDATION_BUDGET_SECONDS": "5", "RETRY_DELAYS_SECONDS": "1,1,1"}
    with hosted(function_app.app, settings) as local:
        yield local


def _state(world: World, request_id: str) -> dict[str, Any] | None:
    record = world.deps.clients.state.get(request_id)
    return record.to_public() if record is not None else None


def test_request_put_on_the_queue_is_onboarded_with_its_events(app_host: LocalHost, world: World) -> None:
    body = world.request()
    request_id = body["requestId"]

    _send(world.stack, body, request_id)

    state = wait_for(lambda: (s := _state(world, request_id)) and s["status"] in {"succeeded", "failed"} and s,
                     "the request to finish")
    assert state["status"] == "succeeded", state
    events = [e for e in world.events() if e["data"].get("requestId") == request_id]
    types = [e["type"].removeprefix("palette.onboarding.") for e in events]
    assert types[0] == "requested"
    assert types[-1] == "validated"
    assert {"secret.stored", "account.registered"} <= set(types)
    assert events[-1]["data"]["outcome"] == "passed"
    assert all(e["subject"] == body["accountName"] for e in events)
    assert len(world.palette_accounts(body["accountName"])) == 1


def test_duplicate_message_inside_the_window_creates_nothing_more(app_host: LocalHost, world: World) -> None:
    body = world.request()
    request_id = body["requestId"]
    _send(world.stack, body, request_id)
    _send(world.stack, body, request_id)  # a ticketing system retrying its send
    wait_for(lambda: (s := _state(world, request_id)) and s["status"] == "succeeded", "the request to succeed")
    wait_for(lambda: _peek(world.stack) == [], "the queue to drain")
    first_events = world.events()
    palette_before = world.palette_state()
    creates_before = [r for r in world.palette_requests() if r["method"] in {"POST", "PUT", "DELETE"}]

    _send(world.stack, body, request_id)  # and once more after it finished, still inside the window
    wait_for(lambda: _peek(world.stack) == [], "the queue to drain")

    assert [e["type"] for e in first_events].count("palette.onboarding.requested") == 1
    assert [e["type"] for e in first_events].count("palette.onboarding.validated") == 1
    assert world.events() == []
    assert world.palette_state()["cloudAccounts"] == palette_before["cloudAccounts"]
    assert [r for r in world.palette_requests() if r["method"] in {"POST", "PUT", "DELETE"}] == creates_before
    assert len([r for r in creates_before if r["path"] == "/v1/cloudaccounts/azure"]) == 1
    assert len(world.graph_passwords(body["azure"]["clientId"])) == 1
    assert _peek(world.stack, dead_letter=True) == []


def test_a_dead_lettered_onboarding_message_fails_its_request(stack: Stack, world: World) -> None:
    """Service Bus gives up on a message (here: dead-lettered by hand, as the broker does after
    maxDeliveryCount): the dead-letter trigger fails its request with the reason and announces it,
    instead of letting the row wait forever."""
    from azure.servicebus import ServiceBusClient

    from shared.state import RequestRecord, RequestStatus

    body = world.request()
    world.deps.clients.state.create(RequestRecord(request_id=body["requestId"], account_name=body["accountName"],
                                   fingerprint=_fingerprint(body), status=RequestStatus.RUNNING))
    _send(stack, body, body["requestId"])
    with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
            client.get_queue_receiver(stack.settings["ONBOARDING_QUEUE"], max_wait_time=5) as receiver:
        [message] = receiver.receive_messages(max_message_count=1, max_wait_time=5)
        receiver.dead_letter_message(message, reason="MaxDeliveryCountExceeded", error_description="10 deliveries")
    settings = {**stack.settings, "VALIDATION_BUDGET_SECONDS": "5", "RETRY_DELAYS_SECONDS": "1,1,1"}
    with hosted(function_app.app, settings):
        state = wait_for(lambda: (s := _state(world, body["requestId"])) and s["status"] == "failed" and s,
                         "the request to be failed")
    assert state["error"]["reason"] == "dead_lettered"
    # What Azure sends: the reason and description in the message's application properties.
    assert "MaxDeliveryCountExceeded: 10 deliveries" in state["error"]["message"]
    failed = [e for e in world.events() if e["type"] == "palette.onboarding.failed"]
    assert [e["data"]["reason"] for e in failed] == ["dead_lettered"]
    assert _peek(stack, dead_letter=True) == []


def test_a_message_that_is_not_a_request_object_is_announced_by_its_message_id(
        stack: Stack, world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A body with no requestId to go by (not JSON; JSON but not an object) fails with an event and
    a log line that name the Service Bus message and when it was enqueued, so it can be found."""
    import datetime as dt

    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    caplog.set_level(logging.INFO)
    bodies = {"garbled-1": b"this is not json", "garbled-2": b"[1, 2]", "garbled-3": b""}
    settings = {**stack.settings, "VALIDATION_BUDGET_SECONDS": "5", "RETRY_DELAYS_SECONDS": "1,1,1"}
    seen: list[dict[str, Any]] = []
    with hosted(function_app.app, settings):
        with ServiceBusClient.from_connection_string(stack.settings["ServiceBusConnection"]) as client, \
                client.get_queue_sender(stack.settings["ONBOARDING_QUEUE"]) as sender:
            sender.send_messages([ServiceBusMessage(body, message_id=message_id)
                                  for message_id, body in bodies.items()])

        def failed() -> list[dict[str, Any]] | None:
            seen.extend(e for e in world.events() if e["type"] == "palette.onboarding.failed")
            return seen if len(seen) == len(bodies) else None
        wait_for(failed, "a failed event per message")
        wait_for(lambda: _peek(stack) == [], "the messages to be completed")

    by_message = {e["data"]["messageId"]: e for e in seen}
    assert set(by_message) == set(bodies)
    for message_id, event in by_message.items():
        data = event["data"]
        assert (event["subject"], data["requestId"], data["reason"]) == ("unknown", "unknown", "invalid_request")
        enqueued = dt.datetime.fromisoformat(data["enqueuedTime"].replace("Z", "+00:00"))
        assert data["enqueuedTime"].endswith("Z") and enqueued <= dt.datetime.fromisoformat(
            event["time"].replace("Z", "+00:00"))
        assert ": :" not in data["message"] and [e["path"] for e in data["errors"]] == [""]
        lines = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
        assert any("rejected" in line and data["enqueuedTime"] in line for line in lines), lines
    assert "the request body is empty" in by_message["garbled-3"]["data"]["message"]
    assert "must be a JSON object" in by_message["garbled-2"]["data"]["message"]
    assert world.state_rows() == []
    assert _peek(stack, dead_letter=True) == []


def test_the_app_runs_on_the_identity_based_connection_the_bicep_configures(stack: Stack, world: World) -> None:
    """No connection string: the host's trigger and the app's own senders reach the namespace
    over amqps with a token of the user-assigned identity (``__credential``, ``__clientId``), as
    ``infra/app/api.bicep`` sets them; a ticketing system signed in the same way puts the request."""
    from azure.identity import ManagedIdentityCredential
    from azure.servicebus import ServiceBusClient, ServiceBusMessage

    settings = {**stack.identity_settings(), "VALIDATION_BUDGET_SECONDS": "5", "RETRY_DELAYS_SECONDS": "1,1,1"}
    body = world.request()
    with hosted(function_app.app, settings, unset=("ServiceBusConnection",)):
        assert "ServiceBusConnection" not in os.environ  # nothing to fall back on
        credential = ManagedIdentityCredential(client_id=settings["ServiceBusConnection__clientId"])
        with ServiceBusClient(settings["ServiceBusConnection__fullyQualifiedNamespace"], credential,
                              connection_verify=settings["REQUESTS_CA_BUNDLE"]) as client, \
                client.get_queue_sender(settings["ONBOARDING_QUEUE"]) as sender:
            sender.send_messages(ServiceBusMessage(json.dumps(body), message_id=body["requestId"]))
        state = wait_for(lambda: (s := _state(world, body["requestId"])) and s["status"] in {"succeeded", "failed"}
                         and s, "the request to finish")
    assert state["status"] == "succeeded", state
    types = [e["type"] for e in world.events() if e["data"].get("requestId") == body["requestId"]]
    assert types[0] == "palette.onboarding.requested" and types[-1] == "palette.onboarding.validated"
    assert len(world.palette_accounts(body["accountName"])) == 1
    assert _peek(stack) == [] and _peek(stack, dead_letter=True) == []


def _fingerprint(body: Mapping[str, Any]) -> str:
    from shared.models import parse_request, request_fingerprint

    return request_fingerprint(parse_request(dict(body)))


# -- as the Functions host answers and feeds the worker ----------------------------------------------

def test_route_parameters_are_decoded_literals_match_in_any_case_and_repeated_keys_join(
        probe_host: LocalHost) -> None:
    base = probe_host.http_url.rsplit("/api", 1)[0]
    got = requests.get(f"{base}/API/Things/a%2Db/PARTS/x%20y?tag=a&tag=b", timeout=10)

    assert got.status_code == 200, got.text
    assert got.json()["route"] == {"thingId": "a-b", "partId": "x y"}
    assert got.json()["params"] == {"tag": "a,b"}


def test_a_chunked_body_reaches_the_function(probe_host: LocalHost) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first,"
        yield b"second"

    posted = requests.post(f"{probe_host.http_url}/things/t/parts/p", data=chunks(), timeout=10)

    assert posted.request.headers.get("Transfer-Encoding") == "chunked"
    assert posted.json()["body"] == "first,second"


def test_head_options_and_unbound_methods_are_an_empty_404(probe_host: LocalHost) -> None:
    url = f"{probe_host.http_url}/things/t/parts/p"
    for method in ("HEAD", "OPTIONS", "PUT", "TRACE"):
        answered = requests.request(method, url, timeout=10)
        assert (answered.status_code, answered.content) == (404, b""), method


def test_a_body_over_the_hosts_limit_is_a_413_unread(probe_host: LocalHost, monkeypatch: pytest.MonkeyPatch) -> None:
    import devstack.runner

    monkeypatch.setattr(devstack.runner, "MAX_REQUEST_BODY_BYTES", 1000)
    url = f"{probe_host.http_url}/things/t/parts/p"
    declared = requests.post(url, data=b"x" * 5000, timeout=10)
    chunked = requests.post(url, data=iter([b"x" * 600, b"x" * 600]), timeout=10)  # no length to go by

    assert (declared.status_code, declared.content) == (413, b"")
    assert (chunked.status_code, chunked.content) == (413, b"")


def test_a_timer_run_that_starts_late_is_past_due(stack: Stack) -> None:
    """The host keeps each schedule's last run; a run missed since (the host was down) is made at
    once, and the function is told it is past due."""
    import datetime as dt

    probe.clear()
    settings = {**stack.settings, "PROBE_QUEUE": stack.settings["ONBOARDING_QUEUE"], "PROBE_SCHEDULE": "0 0 * * * *"}
    missed = {"probe_timer": dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)}
    with hosted(probe_app, settings, timers_last_run=missed):
        wait_for(lambda: probe.ticks, "the missed run", timeout=15)
    assert probe.ticks[0] is True


def test_the_apps_sweep_takes_its_late_run_path(stack: Stack, world: World, caplog: pytest.LogCaptureFixture) -> None:
    import datetime as dt

    caplog.set_level(logging.INFO, logger="functions")
    settings = {**stack.settings, "SWEEP_SCHEDULE": "0 */2 * * * *"}
    missed = {"sweep_onboardings": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)}
    with hosted(function_app.app, settings, only={"sweep_onboardings"}, timers_last_run=missed):
        wait_for(lambda: any("sweep: running late" in r.getMessage() for r in caplog.records), "the late sweep",
                 timeout=20)


def test_a_call_past_the_function_timeout_is_abandoned_or_a_500(stack: Stack, tmp_path: Any) -> None:
    config = json.loads(HOST_JSON.read_text())
    config["functionTimeout"] = "00:00:01"
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps(config))
    probe.clear()
    stack.reset()
    settings = {**stack.settings, "PROBE_QUEUE": stack.settings["ONBOARDING_QUEUE"], "PROBE_SCHEDULE": "0 0 0 1 1 *"}
    try:
        with hosted(probe_app, settings, host_json=host_json):
            _send(stack, {"hold": True}, "too-slow")
            wait_for(lambda: len(probe.seen("too-slow")) >= 2, "a redelivery after the timeout", timeout=30)
            probe.release.set()
    finally:
        probe.release.set()
        stack.reset()
    assert probe.seen("too-slow")[:2] == [1, 2]  # abandoned when the timeout passed, then delivered again


def test_the_workers_thread_pool_bounds_the_calls_that_run(stack: Stack) -> None:
    """PYTHON_THREADPOOL_THREAD_COUNT: the worker runs sync functions on one pool of that size, so
    with 2 threads only 2 of the queue trigger's calls run at once, whatever maxConcurrentCalls."""
    probe.clear()
    stack.reset()
    settings = {**stack.settings, "PROBE_QUEUE": stack.settings["ONBOARDING_QUEUE"], "PROBE_SCHEDULE": "0 0 0 1 1 *",
                "PYTHON_THREADPOOL_THREAD_COUNT": "2"}
    ids = [f"pooled-{i}" for i in range(5)]
    try:
        with hosted(probe_app, settings):
            _send(stack, {"hold": True}, *ids)
            wait_for(lambda: probe.running == 2, "two calls running")
            time.sleep(1)
            assert probe.running == 2
            probe.release.set()
            wait_for(lambda: _peek(stack) == [], "every message to be completed")
    finally:
        probe.release.set()
        stack.reset()
    assert probe.most_running == 2
