"""Events and the request queue: contract shape, stable ids, and delivery through the Service Bus stand-in.

The broker tests go through the real azure-servicebus client on both sides (our publisher sends, a
topic subscription or the queue receives), so what is checked is what a ticketing system would get.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver
from hypothesis import given
from hypothesis import strategies as st

from devstack.servicebus import RunningBroker, load_entities, start_broker
from devstack.stack import ENTITIES_PATH
from shared.clients.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    EVENT_TYPE_PREFIX,
    EVENT_TYPES,
    EventPublisher,
    RecordingPublisher,
    build_event,
    cloud_event_from_json,
    cloud_event_to_json,
    event_id,
    of_run,
    to_service_bus_message,
)
from shared.clients.queue import RequestQueue

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.core.messaging import CloudEvent

TOPIC = "onboarding-events"
SUBSCRIPTIONS = ("ticketing", "audit")
QUEUE = "onboarding-requests"
WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _event(event_type: str = "account.registered", request_id: str = "REQ-1001", **kwargs: Any) -> CloudEvent[Any]:
    data = kwargs.pop("data", {"step": "register", "outcome": "created", "cloudAccountUid": "uid-42"})
    return build_event(event_type=event_type, account_name="contoso-prod", request_id=request_id,
                       data=data, time=kwargs.pop("time", WHEN), **kwargs)


# --- Pure: ids, building, JSON ------------------------------------------------------------------


def test_event_ids_are_stable_and_distinct_per_type_and_discriminator() -> None:
    first = event_id("REQ-1", "failed", "register")
    assert first == event_id("REQ-1", "failed", "register")
    assert first == event_id("REQ-1", EVENT_TYPE_PREFIX + "failed", "register")
    assert uuid.UUID(first).version == 5
    others = {event_id("REQ-1", "failed", "validate"), event_id("REQ-1", "failed"),
              event_id("REQ-2", "failed", "register"), event_id("REQ-1", "validated", "register")}
    assert first not in others and len(others) == 4


def test_a_later_runs_events_have_ids_of_their_own_stable_within_the_run() -> None:
    from shared.clients.events import cloud_event_to_dict

    first = cloud_event_to_dict(_event("failed", data={"step": "check", "outcome": "failed"}))
    second, third = of_run(first, 2), of_run(first, 3)

    assert of_run(first, 1) == first
    assert second["id"] == of_run(first, 2)["id"] == of_run(second, 2)["id"]  # stable; applied once
    assert len({first["id"], second["id"], third["id"]}) == 3 and uuid.UUID(second["id"]).version == 5
    assert (second["data"]["run"], "run" in first["data"]) == (2, False)
    assert {k: v for k, v in second.items() if k not in ("id", "data")} == {
        k: v for k, v in first.items() if k not in ("id", "data")}


@given(a=st.text(max_size=20), b=st.text(max_size=20), c=st.text(max_size=20), d=st.text(max_size=20))
def test_event_ids_do_not_collide_when_values_shift_between_fields(a: str, b: str, c: str, d: str) -> None:
    if (a, c) != (b, d):
        assert event_id(a, "requested", c) != event_id(b, "requested", d)


def test_build_event_follows_the_contract() -> None:
    event = _event()
    assert event.type == "palette.onboarding.account.registered"
    assert event.subject == "contoso-prod"
    assert event.source == "/palette-onboarding"
    assert event.specversion == "1.0"
    assert event.datacontenttype == "application/json"
    assert event.id == event_id("REQ-1001", "account.registered")
    assert event.time == WHEN
    assert event.data == {"step": "register", "outcome": "created", "cloudAccountUid": "uid-42",
                          "requestId": "REQ-1001"}
    assert _event().id == event.id  # built again: same id


def test_every_contract_type_builds_and_unknown_types_are_refused() -> None:
    assert [_event(t).type for t in EVENT_TYPES] == [EVENT_TYPE_PREFIX + t for t in EVENT_TYPES]
    for bad in ("registered", "palette.onboarding.nope", "", "Validated"):
        with pytest.raises(ValueError, match="Unknown event type"):
            _event(bad)


def test_build_event_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="requestId"):
        _event(data={"requestId": "OTHER"})
    with pytest.raises(ValueError, match="timezone-aware"):
        _event(time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="request_id"):
        _event(request_id="")
    default_time = build_event(event_type="requested", account_name="a1b", request_id="R", data={}).time
    assert default_time is not None and default_time.tzinfo is not None


def test_structured_json_has_the_cloudevents_attributes_and_round_trips() -> None:
    event = _event("validated", data={"checks": [{"name": "credentials", "ok": True},
                                                 {"name": "account-listed", "ok": True}]})
    document = json.loads(cloud_event_to_json(event))
    assert document == {
        "specversion": "1.0",
        "id": event.id,
        "source": "/palette-onboarding",
        "type": "palette.onboarding.validated",
        "subject": "contoso-prod",
        "time": "2026-03-04T05:06:07.890123Z",
        "datacontenttype": "application/json",
        "data": {"checks": [{"name": "credentials", "ok": True}, {"name": "account-listed", "ok": True}],
                 "requestId": "REQ-1001"},
    }
    parsed = cloud_event_from_json(cloud_event_to_json(event))
    for attribute in ("id", "source", "type", "subject", "time", "datacontenttype", "data", "specversion"):
        assert getattr(parsed, attribute) == getattr(event, attribute), attribute


def test_times_in_other_zones_are_written_in_utc() -> None:
    plus_two = datetime(2026, 3, 4, 9, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    document = json.loads(cloud_event_to_json(_event(time=plus_two)))
    assert document["time"] == "2026-03-04T07:06:07.000000Z"


def test_service_bus_message_mapping() -> None:
    event = _event()
    message = to_service_bus_message(event)
    assert message.message_id == event.id
    assert message.subject == "palette.onboarding.account.registered"
    assert message.content_type == CLOUDEVENTS_CONTENT_TYPE
    assert message.application_properties == {
        "cloudEvents:type": "palette.onboarding.account.registered",
        "cloudEvents:subject": "contoso-prod",
        "requestId": "REQ-1001",
    }
    assert json.loads(str(message)) == json.loads(cloud_event_to_json(event))


def test_recording_publisher_keeps_events_and_refuses_non_json_data() -> None:
    recorder = RecordingPublisher()
    recorder.publish(_event("requested"), _event("secret.stored"))
    assert recorder.types() == ["requested", "secret.stored"]
    with pytest.raises(TypeError):
        recorder.publish(_event("failed", data={"when": object()}))
    assert len(recorder.events) == 2


def test_queue_refuses_a_request_carrying_an_inline_secret() -> None:
    body = {"requestId": "R-1", "azure": {"secret": {"source": "inline", "value": "hunter2"}}}
    with pytest.raises(ValueError, match="inline client secret") as info:
        RequestQueue._message(body, "R-1", None)
    assert "hunter2" not in str(info.value)


# --- Through the Service Bus stand-in ---------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    """The onboarding queue and events topic with the settings of devstack/entities.json (which
    tests/test_infra.py keeps equal to the Bicep), under this module's names."""
    (queue, _background), (topic,) = load_entities(ENTITIES_PATH)
    subscriptions = tuple(replace(topic.subscriptions[0], name=name) for name in SUBSCRIPTIONS)
    running = start_broker(queues=[replace(queue, name=QUEUE)],
                           topics=[replace(topic, name=TOPIC, subscriptions=subscriptions)])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def broker_conn(broker: RunningBroker) -> str:
    return broker.connection_string


@pytest.fixture(scope="module")
def publisher(broker_conn: str) -> Iterator[EventPublisher]:
    with EventPublisher.from_connection_string(broker_conn, TOPIC) as pub:
        yield pub


class Receivers:
    """One open receiver per entity for the whole module (opening one costs about half a second)."""

    def __init__(self, conn: str) -> None:
        self.stack = ExitStack()
        self.client = self.stack.enter_context(ServiceBusClient.from_connection_string(conn))
        self.receivers: dict[str | None, ServiceBusReceiver] = {}

    def get(self, subscription: str | None) -> ServiceBusReceiver:
        if subscription not in self.receivers:
            receiver = (self.client.get_subscription_receiver(TOPIC, subscription)
                        if subscription else self.client.get_queue_receiver(QUEUE))
            # Entering opens the link with the SDK's own timeout; a first receive_messages would
            # have to open it within max_wait_time.
            self.receivers[subscription] = self.stack.enter_context(receiver)
        return self.receivers[subscription]

    def close(self) -> None:
        self.stack.close()


@pytest.fixture(scope="module")
def _open_receivers(broker_conn: str) -> Iterator[Receivers]:
    opened = Receivers(broker_conn)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def receivers(broker: RunningBroker, _open_receivers: Receivers) -> Receivers:
    """The module's receivers, over a broker emptied of messages and duplicate-detection records."""
    broker.reset()
    return _open_receivers


def _receive_all(receivers: Receivers, *, subscription: str | None = None, expect: int, wait: float = 5.0,
                 idle: float = 0.3) -> list[ServiceBusReceivedMessage]:
    """Receive and complete until ``expect`` messages came and then nothing more for ``idle`` seconds."""
    receiver = receivers.get(subscription)
    got: list[ServiceBusReceivedMessage] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        batch = receiver.receive_messages(max_message_count=100, max_wait_time=idle)
        for message in batch:
            receiver.complete_message(message)
        got.extend(batch)
        if not batch and len(got) >= expect:
            break
    return got


def _properties(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    def text(value: Any) -> Any:
        return value.decode() if isinstance(value, bytes) else value
    return {text(k): text(v) for k, v in (message.application_properties or {}).items()}


def test_published_events_reach_every_subscription_in_the_contract_shape(
    receivers: Receivers, publisher: EventPublisher
) -> None:
    events = [
        _event("requested", request_id="REQ-2001", data={"step": "intake", "outcome": "accepted"}),
        _event("secret.stored", request_id="REQ-2001",
               data={"step": "secret", "outcome": "stored", "secretName": "palette-contoso-prod-client-secret",
                     "secretVersion": "0a1b"}),
        _event("account.registered", request_id="REQ-2001"),
        _event("validated", request_id="REQ-2001",
               data={"outcome": "passed", "checks": [{"name": "credentials", "ok": True}]}),
    ]
    publisher.publish(*events)
    for subscription in SUBSCRIPTIONS:
        received = _receive_all(receivers, subscription=subscription, expect=len(events))
        assert [m.message_id for m in received] == [e.id for e in events]
        for message, sent in zip(received, events, strict=True):
            assert message.content_type == CLOUDEVENTS_CONTENT_TYPE
            assert message.subject == sent.type
            assert _properties(message) == {"cloudEvents:type": sent.type, "cloudEvents:subject": "contoso-prod",
                                            "requestId": "REQ-2001"}
            document = json.loads(str(message))
            assert set(document) == {"specversion", "id", "source", "type", "subject", "time",
                                     "datacontenttype", "data"}
            assert document["specversion"] == "1.0" and document["datacontenttype"] == "application/json"
            assert document["time"] == "2026-03-04T05:06:07.890123Z"
            parsed = cloud_event_from_json(str(message))
            assert (parsed.id, parsed.source, parsed.type, parsed.subject) == (
                sent.id, "/palette-onboarding", sent.type, "contoso-prod")
            assert parsed.time == WHEN
            assert parsed.data == sent.data
            assert parsed.data is not None and parsed.data["requestId"] == "REQ-2001"


def test_republishing_an_event_is_dropped_by_duplicate_detection(
    receivers: Receivers, publisher: EventPublisher
) -> None:
    first = _event("account.updated", request_id="REQ-3001")
    publisher.publish(first)
    # Rebuilt after a "crash", later and with other data: same id, so the topic drops it.
    again = _event("account.updated", request_id="REQ-3001", time=WHEN + timedelta(minutes=5),
                   data={"step": "register", "outcome": "updated", "attempt": 2})
    assert again.id == first.id
    publisher.publish(again)
    # In a batch with new events, only the duplicate is dropped.
    failed_register = _event("failed", request_id="REQ-3001", discriminator="register")
    failed_ssh = _event("failed", request_id="REQ-3001", discriminator="sshkey")
    publisher.publish(first, failed_register, failed_ssh)
    publisher.publish(failed_ssh)

    received = _receive_all(receivers, subscription="ticketing", expect=3)
    assert [m.message_id for m in received] == [first.id, failed_register.id, failed_ssh.id]
    assert cloud_event_from_json(str(received[0])).data == first.data


def test_one_publisher_is_safe_to_share_between_threads(receivers: Receivers, publisher: EventPublisher) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for step in range(5):
                publisher.publish(_event("sshkey.uploaded", request_id=f"REQ-T{worker}",
                                         discriminator=str(step)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    received = _receive_all(receivers, subscription="ticketing", expect=40, wait=15)
    assert len({m.message_id for m in received}) == len(received) == 40


def test_publisher_around_a_caller_owned_sender(broker_conn: str, receivers: Receivers) -> None:
    with ServiceBusClient.from_connection_string(broker_conn) as client:
        sender = client.get_topic_sender(TOPIC)
        publisher = EventPublisher(sender)
        publisher.publish()  # nothing to send is not an error
        publisher.publish(_event("apikey.created", request_id="REQ-4001",
                                 data={"outcome": "created", "apiKeyUid": "k-1"}))
        publisher.close()
        publisher.close()
        with pytest.raises(RuntimeError, match="closed"):
            publisher.publish(_event("requested", request_id="REQ-4001"))
    received = _receive_all(receivers, subscription="ticketing", expect=1)
    assert [cloud_event_from_json(str(m)).type for m in received] == ["palette.onboarding.apikey.created"]


def test_publish_logs_ids_only(
    receivers: Receivers, publisher: EventPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    event = _event("secret.rotated", request_id="ROT-2026-03-04",
                   data={"outcome": "rotated", "credentialId": "kid-9", "note": "do-not-log-data"})
    publisher.publish(event)
    assert event.id in caplog.text and "do-not-log-data" not in caplog.text


# --- RequestQueue ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def request_queue(broker_conn: str) -> Iterator[RequestQueue]:
    with RequestQueue.from_connection_string(broker_conn, QUEUE) as queue:
        yield queue


REQUEST = {
    "requestId": "CHG-0042",
    "accountName": "contoso-prod",
    "azure": {"tenantId": str(uuid.UUID(int=1)), "clientId": str(uuid.UUID(int=2)),
              "secret": {"source": "keyVault", "secretName": "palette-contoso-prod-client-secret"}},
}


def test_send_puts_the_request_on_the_queue_once(receivers: Receivers, request_queue: RequestQueue) -> None:
    request_queue.send(REQUEST, message_id="CHG-0042", application_properties={"source": "http", "attempt": 1})
    request_queue.send(REQUEST, message_id="CHG-0042")  # resubmitted: duplicate detection drops it
    received = _receive_all(receivers, expect=1)
    assert len(received) == 1
    message = received[0]
    assert message.message_id == "CHG-0042"
    assert message.content_type == "application/json; charset=utf-8"
    assert json.loads(str(message)) == REQUEST
    assert _properties(message) == {"source": "http", "attempt": 1}


def test_schedule_delivers_the_request_at_the_given_time(receivers: Receivers, request_queue: RequestQueue) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    sequence_number = request_queue.schedule(REQUEST, message_id="CHG-0042-retry-1", at=at,
                                             application_properties={"attempt": 2})
    assert isinstance(sequence_number, int) and sequence_number > 0
    receiver = receivers.get(None)
    peeked = receiver.peek_messages(max_message_count=10)
    assert [m.sequence_number for m in peeked] == [sequence_number]
    assert receiver.receive_messages(max_message_count=1, max_wait_time=0.5) == []
    received = _receive_all(receivers, expect=1, wait=10)
    assert [m.message_id for m in received] == ["CHG-0042-retry-1"]
    message = received[0]
    assert message.scheduled_enqueue_time_utc == at
    assert message.enqueued_time_utc is not None and message.enqueued_time_utc >= at - timedelta(seconds=1)
    assert json.loads(str(message)) == REQUEST and _properties(message) == {"attempt": 2}
    with pytest.raises(ValueError, match="timezone-aware"):
        request_queue.schedule(REQUEST, message_id="x", at=datetime(2030, 1, 1))
