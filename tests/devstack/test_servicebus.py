"""Conformance tests for the Service Bus stand-in, driven only through the real azure-servicebus SDK.

One broker serves the whole module (opening an SDK handler costs about half a second of the SDK's
own polling, so tests share the broker and reset its state instead of restarting it). Waits are
bounded by ``max_wait_time`` and pytest-timeout; no assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, quote_plus

import pytest
from azure.core.credentials import AzureSasCredential
from azure.servicebus import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusReceiver,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageNotFoundError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusConnectionError,
    ServiceBusError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proton import Data, Described, symbol, uint, ulong

from devstack.servicebus import (
    QueueConfig,
    RunningBroker,
    SubscriptionConfig,
    TopicConfig,
    load_entities,
    start_broker,
)
from devstack.servicebus.errors import MessageLockLostError as LockLost
from devstack.servicebus.frames import DeliveryIdTranslator
from devstack.servicebus.models import IncomingMessage, Namespace

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(45)

QUEUES = (
    QueueConfig("orders"),  # Service Bus's defaults: duplicate detection off
    QueueConfig("short-lock", lock_duration_seconds=1, max_delivery_count=2),
    QueueConfig("renewed", lock_duration_seconds=5),  # short enough to renew at once, long enough to renew in time
    QueueConfig("deduplicated", duplicate_detection_window_seconds=600),
)
TOPICS = (TopicConfig("events", (SubscriptionConfig("audit"), SubscriptionConfig("billing"))),)
WAIT = 5  # upper bound for a receive that is expected to return something


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    running = start_broker(queues=QUEUES, topics=TOPICS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def closer(broker: RunningBroker) -> Iterator[ThreadPoolExecutor]:
    """Closes SDK handlers off the test's path: ``close()`` joins a keep-alive thread that sleeps in
    1 s steps, which would otherwise cost every test about half a second per handler."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="sb-close") as pool:
        yield pool


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> None:
    """Every test starts from empty entities (the module's broker is reused)."""
    if "broker" in request.fixturenames:
        request.getfixturevalue("broker").reset()


class Bus:
    """The handlers one test opens on one client, kept open until the test ends."""

    def __init__(self, client: ServiceBusClient) -> None:
        self.client = client
        self.handlers: dict[tuple[str, ...], ServiceBusSender | ServiceBusReceiver] = {}

    def sender(self, queue: str) -> ServiceBusSender:
        return self._open(("sender", queue), lambda: self.client.get_queue_sender(queue))

    def topic_sender(self, topic: str) -> ServiceBusSender:
        return self._open(("topic", topic), lambda: self.client.get_topic_sender(topic))

    def receiver(self, queue: str, **options: Any) -> ServiceBusReceiver:
        return self._open(("receiver", queue, repr(sorted(options.items()))),
                          lambda: self.client.get_queue_receiver(queue, **options))

    def subscription_receiver(self, topic: str, subscription: str, **options: Any) -> ServiceBusReceiver:
        return self._open(("subscription", topic, subscription, repr(sorted(options.items()))),
                          lambda: self.client.get_subscription_receiver(topic, subscription, **options))

    def send(self, queue: str, *messages: ServiceBusMessage) -> None:
        self.sender(queue).send_messages(list(messages))

    def close(self) -> None:
        for handler in self.handlers.values():
            handler.close()
        self.client.close()

    def _open(self, key: tuple[str, ...], factory: Callable[[], _H]) -> _H:
        """One handler per entity and options for the whole test, opened on first use."""
        if key not in self.handlers:
            self.handlers[key] = factory()
        return self.handlers[key]  # type: ignore[return-value]


_H = TypeVar("_H", ServiceBusSender, ServiceBusReceiver)


@pytest.fixture
def bus(broker: RunningBroker, closer: ThreadPoolExecutor) -> Iterator[Bus]:
    opened = Bus(ServiceBusClient.from_connection_string(broker.connection_string, retry_total=0))
    yield opened
    closer.submit(opened.close)


def receive(receiver: ServiceBusReceiver, count: int) -> list[ServiceBusReceivedMessage]:
    """Exactly ``count`` messages (a receive call may return fewer than asked for)."""
    received: list[ServiceBusReceivedMessage] = []
    while len(received) < count:
        batch = receiver.receive_messages(max_message_count=count - len(received), max_wait_time=WAIT)
        assert batch, f"expected {count} messages, got {len(received)}"
        received += batch
    return received


def bodies(messages: list[ServiceBusReceivedMessage]) -> list[str]:
    return [str(message) for message in messages]


def seq(message: ServiceBusReceivedMessage) -> int:
    number = message.sequence_number
    assert number is not None
    return number


def _broker_key(broker: RunningBroker) -> str:
    return broker.connection_string.split("SharedAccessKey=")[1].split(";")[0]


# -- configuration and start-up ------------------------------------------------------------------
def test_load_entities_reads_the_json_config(tmp_path: Path) -> None:
    path = tmp_path / "entities.json"
    path.write_text(json.dumps({
        "queues": [{"name": "onboarding", "lockDurationSeconds": 30, "maxDeliveryCount": 5,
                    "requiresDuplicateDetection": True, "duplicateDetectionWindowSeconds": 120}],
        "topics": [{"name": "events", "requiresDuplicateDetection": True,
                    "subscriptions": [{"name": "devstack", "maxDeliveryCount": 3}]}],
    }))
    queues, topics = load_entities(path)
    assert queues == [QueueConfig("onboarding", 30, 5, 120)]
    assert topics == [TopicConfig("events", (SubscriptionConfig("devstack", 60, 3),), 600)]

    for queue, problem in (({"duplicateDetectionWindowSeconds": 600}, "applies only with"),
                           ({"requiresDuplicateDetection": "yes"}, "true or false"),
                           ({"requiresDuplicateDetection": True, "duplicateDetectionWindowSeconds": 5}, "20 seconds")):
        path.write_text(json.dumps({"queues": [{"name": "q", **queue}]}))
        with pytest.raises(ValueError, match=problem):
            load_entities(path)

    path.write_text(json.dumps({"queues": [{"name": "a"}, {"name": "A"}]}))
    with pytest.raises(ValueError, match="twice"):
        load_entities(path)
    path.write_text(json.dumps({"queues": [{"name": "a", "lockDuration": 5}]}))
    with pytest.raises(ValueError, match="Unknown"):
        load_entities(path)


def test_broker_listens_when_started_with_a_fresh_key() -> None:
    first = start_broker(queues=[QueueConfig("q")])
    second = start_broker()
    try:
        with socket.create_connection((first.host, first.port), timeout=2):
            pass
        assert first.connection_string.startswith(f"Endpoint=sb://127.0.0.1:{first.port};")
        assert "SharedAccessKeyName=devstack;" in first.connection_string
        assert first.connection_string.endswith(";UseDevelopmentEmulator=true")
        key = first.connection_string.split("SharedAccessKey=")[1].split(";")[0]
        assert key and key not in second.connection_string
    finally:
        first.stop()
        second.stop()
    first.stop()  # stopping twice is harmless


# -- sending -------------------------------------------------------------------------------------
def test_message_properties_and_broker_annotations_round_trip(bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage(
        b'{"requestId": "REQ-1"}', message_id="REQ-1", correlation_id="corr-1", subject="onboard",
        content_type="application/json", application_properties={"kind": "create", "attempt": 2},
        time_to_live=timedelta(minutes=5),
    ))
    receiver = bus.receiver("orders")
    (received,) = receive(receiver, 1)
    assert b"".join(received.body) == b'{"requestId": "REQ-1"}'
    assert received.message_id == "REQ-1"
    assert received.correlation_id == "corr-1"
    assert received.subject == "onboard"
    assert received.content_type == "application/json"
    assert received.application_properties == {b"kind": b"create", b"attempt": 2}
    assert received.time_to_live == timedelta(minutes=5)
    assert received.delivery_count == 0
    assert received.sequence_number is not None and received.sequence_number >= 1
    assert received.enqueued_time_utc is not None
    assert received.locked_until_utc is not None and received.locked_until_utc > received.enqueued_time_utc
    assert isinstance(received.lock_token, uuid.UUID)
    assert received.session_id is None
    receiver.complete_message(received)


def test_list_and_batch_sends_arrive_as_separate_messages(bus: Bus) -> None:
    sender = bus.sender("ORDERS")  # entity names are case-insensitive, as in Service Bus
    sender.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
    batch = sender.create_message_batch()
    for body in ("c", "d", "e"):
        batch.add_message(ServiceBusMessage(body, application_properties={"body": body}))
    sender.send_messages(batch)
    received = receive(bus.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 5)
    assert bodies(received) == ["a", "b", "c", "d", "e"]
    numbers = [seq(m) for m in received]
    assert numbers == list(range(numbers[0], numbers[0] + 5))
    assert received[3].application_properties == {b"body": b"d"}


def test_large_and_non_data_bodies_round_trip_and_oversized_messages_are_refused(bus: Bus) -> None:
    sender = bus.sender("orders")
    sender.send_messages(ServiceBusMessage(b"x" * 200_000))  # several AMQP frames each way
    sender.send_messages(AmqpAnnotatedMessage(value_body={"a": 1}, application_properties={"p": 1}))
    sender.send_messages(AmqpAnnotatedMessage(sequence_body=[[1, 2]]))
    with pytest.raises(MessageSizeExceededError):
        sender.send_messages(ServiceBusMessage(b"x" * 300_000))  # over the 256 KiB Standard-tier limit
    large, value, sequence = receive(bus.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 3)
    assert b"".join(large.body) == b"x" * 200_000
    assert (value.body_type, value.body, value.application_properties) == (
        AmqpMessageBodyType.VALUE, {b"a": 1}, {b"p": 1})
    assert (sequence.body_type, list(sequence.body)) == (AmqpMessageBodyType.SEQUENCE, [[1, 2]])


def test_topic_copies_each_message_to_every_subscription(bus: Bus) -> None:
    bus.topic_sender("events").send_messages([ServiceBusMessage("one"), ServiceBusMessage("two")])
    for name in ("audit", "billing"):
        receiver = bus.subscription_receiver("events", name)
        received = receive(receiver, 2)
        assert bodies(received) == ["one", "two"]
        for message in received:
            receiver.complete_message(message)


def test_unknown_entity_is_refused_not_hung(bus: Bus) -> None:
    with pytest.raises(MessagingEntityNotFoundError):
        bus.sender("missing").send_messages(ServiceBusMessage("x"))
    with pytest.raises(MessagingEntityNotFoundError):
        bus.receiver("missing").receive_messages(max_wait_time=1)
    with pytest.raises(ServiceBusError):  # a topic exists but cannot be received from (amqp:not-allowed)
        bus.receiver("events").receive_messages(max_wait_time=1)


def test_wrong_key_is_refused(broker: RunningBroker, closer: ThreadPoolExecutor) -> None:
    key = _broker_key(broker)
    wrong = Bus(ServiceBusClient.from_connection_string(
        broker.connection_string.replace(key, "d3Jvbmcta2V5"), retry_total=0))
    try:
        with pytest.raises(ServiceBusAuthenticationError):
            wrong.sender("orders").send_messages(ServiceBusMessage("x"))
    finally:
        closer.submit(wrong.close)


def _shared_access_signature(resource_uri: str, key_name: str, key: str, *, sr_form: str,
                             signed_form: str | None = None, expires_in: int = 600) -> str:
    """A SAS token built by hand: ``sr`` in ``sr_form`` ("plain", as Microsoft's sample writes it,
    or "encoded", as the SDK does), the signature over ``signed_form`` (the same unless told)."""
    forms = {"plain": resource_uri, "encoded": quote_plus(resource_uri)}
    expiry = str(int(time.time()) + expires_in)
    digest = hmac.new(key.encode(), f"{forms[signed_form or sr_form]}\n{expiry}".encode(), hashlib.sha256).digest()
    signature = quote(base64.b64encode(digest))
    return f"SharedAccessSignature sr={forms[sr_form]}&sig={signature}&se={expiry}&skn={key_name}"


@pytest.mark.parametrize("sr_form", ["plain", "encoded"])
def test_sas_token_is_checked_over_sr_as_the_client_sent_it(broker: RunningBroker, closer: ThreadPoolExecutor,
                                                            sr_form: str) -> None:
    """The token shapes Microsoft's own sample and the SDK make both sign in, through
    ``AzureSasCredential``; the signature of one form sent with the other form is refused."""
    namespace = f"{broker.host}:{broker.port}"
    resource_uri = f"sb://{namespace}/orders"
    good = _shared_access_signature(resource_uri, "devstack", _broker_key(broker), sr_form=sr_form)
    other_form = "encoded" if sr_form == "plain" else "plain"
    mismatched = _shared_access_signature(resource_uri, "devstack", _broker_key(broker), sr_form=sr_form,
                                          signed_form=other_form)
    signed_in = Bus(ServiceBusClient(namespace, AzureSasCredential(good), use_tls=False, retry_total=0))
    refused = Bus(ServiceBusClient(namespace, AzureSasCredential(mismatched), use_tls=False, retry_total=0))
    try:
        signed_in.send("orders", ServiceBusMessage(f"signed in with the {sr_form} form"))
        (message,) = receive(signed_in.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 1)
        assert str(message) == f"signed in with the {sr_form} form"
        with pytest.raises(ServiceBusAuthenticationError):
            refused.send("orders", ServiceBusMessage("x"))
    finally:
        closer.submit(signed_in.close)
        closer.submit(refused.close)


@pytest.mark.parametrize(("key_name", "key", "expires_in"), [
    ("devstack", "d3Jvbmcta2V5", 600),  # another key
    ("RootManageSharedAccessKey", None, 600),  # another policy name
    ("devstack", None, -60),  # expired
])
def test_sas_token_with_wrong_key_policy_or_expiry_is_refused(broker: RunningBroker, closer: ThreadPoolExecutor,
                                                              key_name: str, key: str | None,
                                                              expires_in: int) -> None:
    namespace = f"{broker.host}:{broker.port}"
    token = _shared_access_signature(f"sb://{namespace}/orders", key_name, key or _broker_key(broker),
                                     sr_form="plain", expires_in=expires_in)
    refused = Bus(ServiceBusClient(namespace, AzureSasCredential(token), use_tls=False, retry_total=0))
    try:
        with pytest.raises(ServiceBusAuthenticationError):
            refused.send("orders", ServiceBusMessage("x"))
    finally:
        closer.submit(refused.close)


def test_duplicate_message_id_is_accepted_and_dropped_within_the_window(bus: Bus) -> None:
    for queue in ("deduplicated", "orders"):
        bus.send(queue, ServiceBusMessage("first", message_id="same"))
        bus.send(queue, ServiceBusMessage("second", message_id="same"), ServiceBusMessage("other"))
    assert bodies(bus.receiver("deduplicated").peek_messages(max_message_count=10)) == ["first", "other"]
    # Without requiresDuplicateDetection (Service Bus's default) every copy is kept.
    assert bodies(bus.receiver("orders").peek_messages(max_message_count=10)) == ["first", "second", "other"]


def test_entity_defaults_are_service_bus_defaults(tmp_path: Path) -> None:
    """An entity configured with nothing but a name behaves as one created in Azure with nothing
    but a name: duplicate detection off, 1 minute locks, 10 deliveries before the dead-letter queue."""
    path = tmp_path / "entities.json"
    path.write_text(json.dumps({"queues": [{"name": "plain"}],
                                "topics": [{"name": "news", "subscriptions": [{"name": "all"}]}]}))
    (queue,), (topic,) = load_entities(path)
    assert queue == QueueConfig("plain") == QueueConfig("plain", lock_duration_seconds=60, max_delivery_count=10,
                                                        duplicate_detection_window_seconds=None)
    assert topic == TopicConfig("news", (SubscriptionConfig("all", 60, 10),), duplicate_detection_window_seconds=None)

    broker = start_broker(queues=[queue], topics=[topic])
    client = ServiceBusClient.from_connection_string(broker.connection_string, retry_total=0)
    try:
        with client.get_queue_sender("plain") as sender, client.get_queue_receiver("plain") as receiver:
            sender.send_messages([ServiceBusMessage("one", message_id="same"),
                                  ServiceBusMessage("two", message_id="same")])
            first, second = receive(receiver, 2)
            assert bodies([first, second]) == ["one", "two"]
            assert first.locked_until_utc is not None and first.enqueued_time_utc is not None
            assert timedelta(seconds=59) <= first.locked_until_utc - first.enqueued_time_utc <= timedelta(seconds=61)
            for _ in range(9):
                receiver.abandon_message(second)
                (second,) = receive(receiver, 1)
            assert second.delivery_count == 9
            receiver.abandon_message(second)  # the tenth delivery failed: dead-lettered
            receiver.complete_message(first)
        with client.get_queue_receiver("plain", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dead_letters:
            (dead,) = receive(dead_letters, 1)
            assert (str(dead), dead.dead_letter_reason) == ("two", "MaxDeliveryCountExceeded")
            dead_letters.complete_message(dead)
    finally:
        client.close()
        broker.stop()


# -- receiving and settling ----------------------------------------------------------------------
def test_receive_and_delete_removes_the_message(bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage("gone"))
    receiver = bus.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE)
    (message,) = receive(receiver, 1)
    assert str(message) == "gone"
    assert message.lock_token is None
    assert receiver.peek_messages(max_message_count=5, sequence_number=1) == []


def test_complete_abandon_and_redelivery_count(bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage("retry me"), ServiceBusMessage("done"))
    receiver = bus.receiver("orders")
    first, second = receive(receiver, 2)
    receiver.complete_message(second)
    receiver.abandon_message(first)
    (again,) = receive(receiver, 1)
    assert str(again) == "retry me"
    assert again.delivery_count == 1
    assert again.lock_token != first.lock_token
    receiver.complete_message(again)
    assert receiver.peek_messages(max_message_count=5, sequence_number=1) == []


def test_dead_letter_keeps_reason_and_description(bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage("poison", message_id="p-1"))
    receiver = bus.receiver("orders")
    (message,) = receive(receiver, 1)
    receiver.dead_letter_message(message, reason="ValidationFailed", error_description="accountName is invalid")
    dlq = bus.receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    (dead,) = receive(dlq, 1)
    assert (str(dead), dead.message_id) == ("poison", "p-1")
    assert dead.dead_letter_reason == "ValidationFailed"
    assert dead.dead_letter_error_description == "accountName is invalid"
    dlq.complete_message(dead)


def test_defer_then_receive_deferred_by_sequence_number(bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage("later"))
    receiver = bus.receiver("orders")
    (message,) = receive(receiver, 1)
    receiver.defer_message(message)
    (peeked,) = receiver.peek_messages(max_message_count=1, sequence_number=1)
    assert peeked.state == ServiceBusMessageState.DEFERRED
    (deferred,) = receiver.receive_deferred_messages([seq(message)])
    assert str(deferred) == "later"
    assert deferred.lock_token is not None
    receiver.complete_message(deferred)  # through $management update-disposition
    with pytest.raises(MessageNotFoundError):
        receiver.receive_deferred_messages([seq(message)])


def test_max_delivery_count_moves_the_message_to_the_dead_letter_queue(bus: Bus) -> None:
    bus.send("short-lock", ServiceBusMessage("keeps failing"))
    receiver = bus.receiver("short-lock")
    for expected_count in (0, 1):  # max delivery count is 2
        (message,) = receive(receiver, 1)
        assert message.delivery_count == expected_count
        receiver.abandon_message(message)
    assert receiver.peek_messages(max_message_count=5, sequence_number=1) == []
    dlq = bus.receiver("short-lock", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
    (dead,) = receive(dlq, 1)
    assert str(dead) == "keeps failing"
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    dlq.complete_message(dead)


def test_lock_expiry_redelivers_and_the_old_lock_is_lost(bus: Bus) -> None:
    bus.send("short-lock", ServiceBusMessage("slow consumer"))
    receiver = bus.receiver("short-lock")
    (first,) = receive(receiver, 1)
    # Not settled: once the 1 s lock runs out the broker hands the message out again.
    (second,) = receive(receiver, 1)
    assert str(second) == "slow consumer"
    assert second.delivery_count == 1
    with pytest.raises(MessageLockLostError):
        receiver.renew_message_lock(first)  # asks the broker, which no longer knows that lock
    with pytest.raises(MessageLockLostError):
        receiver.complete_message(first)
    receiver.complete_message(second)


def test_settling_a_lock_the_broker_dropped_fails_with_lock_lost(broker: RunningBroker, bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage("reset under me"))
    receiver = bus.receiver("orders")
    (message,) = receive(receiver, 1)
    broker.reset()  # the lock is still valid client-side; only the broker can refuse it
    with pytest.raises(MessageLockLostError):
        receiver.complete_message(message)


def test_renew_message_lock_and_auto_lock_renewer(bus: Bus) -> None:
    bus.send("short-lock", ServiceBusMessage("renew me"), ServiceBusMessage("auto"))
    receiver = bus.receiver("short-lock")
    manual, auto = receive(receiver, 2)
    before = manual.locked_until_utc
    assert before is not None
    assert receiver.renew_message_lock(manual) > before
    receiver.complete_message(manual)

    original = auto.locked_until_utc
    assert original is not None
    renewer = AutoLockRenewer(max_lock_renewal_duration=30)
    try:
        renewer.register(receiver, auto)
        renewed = threading.Event()
        for _ in range(200):
            if auto.locked_until_utc is not None and auto.locked_until_utc > original + timedelta(seconds=1):
                renewed.set()
                break
            renewed.wait(0.05)
        assert renewed.is_set(), "AutoLockRenewer never renewed the lock"
        receiver.complete_message(auto)  # past the first 1 s lock, still held thanks to renewal
    finally:
        renewer.close()
    assert receiver.peek_messages(max_message_count=5, sequence_number=1) == []


def test_auto_lock_renewer_over_ten_messages_then_concurrent_settlement_keep_the_connection(bus: Bus) -> None:
    """What a host with maxConcurrentCalls above one does: AutoLockRenewer renews ten peek-locked
    messages at once over one connection's $management link, then ten threads settle them. The
    SDK's threads race for delivery ids there; Service Bus keeps the connection, and so must we."""
    bus.send("renewed", *(ServiceBusMessage(f"held-{i}") for i in range(10)))
    receiver = bus.receiver("renewed")
    messages = receive(receiver, 10)
    first_locks = {seq(m): m.locked_until_utc for m in messages}

    def renewed_past_its_first_lock(message: ServiceBusReceivedMessage) -> bool:
        first, current = first_locks[seq(message)], message.locked_until_utc
        return first is not None and current is not None and current > first + timedelta(seconds=2)

    settling = threading.Event()
    failures: list[tuple[bool, BaseException | None]] = []
    renewer = AutoLockRenewer(max_lock_renewal_duration=30, on_lock_renew_failure=lambda _renewable, error:
                              failures.append((settling.is_set(), error)))
    try:
        for message in messages:
            renewer.register(receiver, message)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not failures and not all(map(renewed_past_its_first_lock, messages)):
            time.sleep(0.1)
        assert not failures, f"lock renewal failed: {[repr(getattr(e, 'inner_exception', e)) for _, e in failures]}"
        assert all(map(renewed_past_its_first_lock, messages))
        settling.set()
        with ThreadPoolExecutor(max_workers=10) as settlers:
            list(settlers.map(receiver.complete_message, messages))
    finally:
        renewer.close()
    # A renewal in flight while its message is completed is answered lock-lost, as Service Bus does.
    assert all(during_settlement and isinstance(getattr(error, "inner_exception", None), MessageLockLostError)
               for during_settlement, error in failures), failures
    assert receiver.peek_messages(max_message_count=20, sequence_number=1) == []


def test_concurrent_management_requests_on_one_connection_all_get_answers(bus: Bus) -> None:
    """Ten threads at once on one receiver's $management link: lock renewals, peeks and the
    settlement of deferred messages (update-disposition) each get their own answer."""
    bus.send("orders", *(ServiceBusMessage(f"m{i}") for i in range(10)))
    receiver = bus.receiver("orders")
    messages = receive(receiver, 10)
    with ThreadPoolExecutor(max_workers=10) as pool:
        for _ in range(3):
            renewed = list(pool.map(receiver.renew_message_lock, messages))
            assert all(until > datetime.now(UTC) for until in renewed)
        for message in messages:
            receiver.defer_message(message)
        numbers = [seq(m) for m in messages]
        peeked = list(pool.map(lambda number: receiver.peek_messages(max_message_count=1, sequence_number=number),
                               numbers))
        assert [seq(found) for (found,) in peeked] == numbers
        deferred = receiver.receive_deferred_messages(numbers)
        assert sorted(seq(m) for m in deferred) == numbers
        list(pool.map(receiver.complete_message, deferred))
    assert receiver.peek_messages(max_message_count=20, sequence_number=1) == []


def test_peek_neither_locks_nor_counts(bus: Bus) -> None:
    bus.send("orders", *(ServiceBusMessage(f"m{i}") for i in range(4)))
    receiver = bus.receiver("orders")
    start = seq(receiver.peek_messages(max_message_count=1, sequence_number=1)[0])
    peeked = receiver.peek_messages(max_message_count=2, sequence_number=start + 1)
    assert [(str(m), m.sequence_number, m.delivery_count) for m in peeked] == [
        ("m1", start + 1, 0), ("m2", start + 2, 0)]
    received = receive(receiver, 4)
    assert bodies(received) == ["m0", "m1", "m2", "m3"]
    assert all(m.delivery_count == 0 for m in received)
    for message in received:
        receiver.complete_message(message)


def test_schedule_cancel_and_scheduled_enqueue_time(bus: Bus) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    far = datetime.now(UTC) + timedelta(hours=1)
    sender = bus.sender("orders")
    kept, cancelled = sender.schedule_messages([ServiceBusMessage("kept"), ServiceBusMessage("cancelled")], soon)
    sender.cancel_scheduled_messages(cancelled)
    sender.send_messages(ServiceBusMessage("plain-later", scheduled_enqueue_time_utc=far))
    receiver = bus.receiver("orders")
    (message,) = receive(receiver, 1)
    assert (str(message), message.sequence_number) == ("kept", kept)
    assert message.scheduled_enqueue_time_utc is not None
    receiver.complete_message(message)
    (waiting,) = receiver.peek_messages(max_message_count=5, sequence_number=1)
    assert str(waiting) == "plain-later"
    assert waiting.state == ServiceBusMessageState.SCHEDULED
    assert waiting.scheduled_enqueue_time_utc is not None
    assert abs(waiting.scheduled_enqueue_time_utc - far) < timedelta(seconds=1)


def test_link_credit_limits_each_receive_and_iteration_gets_the_rest(bus: Bus) -> None:
    bus.send("orders", *(ServiceBusMessage(f"m{i}") for i in range(5)))
    receiver = bus.receiver("orders", max_wait_time=WAIT)
    first = receiver.receive_messages(max_message_count=2, max_wait_time=WAIT)
    assert 1 <= len(first) <= 2  # never more than the credit the call granted
    rest = []
    for message in receiver:
        rest.append(message)
        receiver.complete_message(message)
        if len(first) + len(rest) == 5:
            break
    for message in first:
        receiver.complete_message(message)
    assert sorted(bodies(first + rest)) == [f"m{i}" for i in range(5)]


def test_closing_a_prefetching_receiver_releases_what_it_buffered(bus: Bus) -> None:
    bus.send("orders", *(ServiceBusMessage(f"m{i}") for i in range(3)))
    prefetching = bus.receiver("orders", prefetch_count=10)
    (taken,) = receive(prefetching, 1)
    prefetching.complete_message(taken)
    prefetching.close()  # releases the buffered messages instead of leaving them locked
    left = bus.receiver("orders").peek_messages(max_message_count=5, sequence_number=1)
    assert [(str(m), m.delivery_count) for m in left] == [("m1", 0), ("m2", 0)]
    assert bodies(receive(bus.receiver("orders"), 2)) == ["m1", "m2"]


def test_concurrent_connections_are_served(broker: RunningBroker, closer: ThreadPoolExecutor, bus: Bus) -> None:
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        producer = Bus(ServiceBusClient.from_connection_string(broker.connection_string, retry_total=0))
        try:
            producer.send("orders", *(ServiceBusMessage(f"w{worker}-{i}") for i in range(5)))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
        finally:
            closer.submit(producer.close)

    threads = [threading.Thread(target=produce, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    received = receive(bus.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 20)
    assert sorted(bodies(received)) == sorted(f"w{w}-{i}" for w in range(4) for i in range(5))


def test_reset_drops_messages_and_keeps_entities(broker: RunningBroker, bus: Bus) -> None:
    bus.send("orders", ServiceBusMessage("old"))
    broker.reset()
    bus.send("orders", ServiceBusMessage("new"))
    assert bodies(bus.receiver("orders").peek_messages(max_message_count=5, sequence_number=1)) == ["new"]


# -- aio -----------------------------------------------------------------------------------------
async def _close_together(*handlers: Any) -> None:
    """Close aio handlers concurrently (each close waits up to 1 s for its keep-alive task)."""
    await asyncio.gather(*(handler.close() for handler in handlers), return_exceptions=True)


def test_aio_send_receive_settle_and_manage(broker: RunningBroker) -> None:
    async def scenario() -> None:
        sb_client = AsyncServiceBusClient.from_connection_string(broker.connection_string, retry_total=0)
        sender = sb_client.get_queue_sender("orders")
        receiver = sb_client.get_queue_receiver("orders")
        dlq = sb_client.get_queue_receiver("orders", sub_queue=ServiceBusSubQueue.DEAD_LETTER)
        try:
            await sender.send_messages([ServiceBusMessage("a1"), ServiceBusMessage("a2")])
            batch = await sender.create_message_batch()
            batch.add_message(ServiceBusMessage("a3"))
            await sender.send_messages(batch)
            await sender.schedule_messages(ServiceBusMessage("a4"), datetime.now(UTC) + timedelta(hours=1))
            received = await receiver.receive_messages(max_message_count=3, max_wait_time=WAIT)
            while len(received) < 3:
                more = await receiver.receive_messages(max_message_count=3 - len(received), max_wait_time=WAIT)
                assert more, "messages missing"
                received += more
            assert bodies(received) == ["a1", "a2", "a3"]
            await receiver.renew_message_lock(received[0])
            await receiver.complete_message(received[0])
            await receiver.abandon_message(received[1])
            await receiver.dead_letter_message(received[2], reason="r", error_description="d")
            (again,) = await receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert (str(again), again.delivery_count) == ("a2", 1)
            await receiver.defer_message(again)
            (deferred,) = await receiver.receive_deferred_messages([seq(again)])
            await receiver.complete_message(deferred)
            peeked = await receiver.peek_messages(max_message_count=5, sequence_number=1)
            assert [(str(m), m.state) for m in peeked] == [("a4", ServiceBusMessageState.SCHEDULED)]
            (dead,) = await dlq.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert (str(dead), dead.dead_letter_reason, dead.dead_letter_error_description) == ("a3", "r", "d")
            await dlq.complete_message(dead)
        finally:
            await _close_together(sender, receiver, dlq)
            await sb_client.close()

    asyncio.run(scenario())


def test_aio_topic_and_unknown_entity(broker: RunningBroker) -> None:
    async def scenario() -> None:
        sb_client = AsyncServiceBusClient.from_connection_string(broker.connection_string, retry_total=0)
        sender = sb_client.get_topic_sender("events")
        receiver = sb_client.get_subscription_receiver(
            "events", "billing", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE)
        missing = sb_client.get_queue_sender("missing")
        try:
            await sender.send_messages(ServiceBusMessage("fan-out"))
            (message,) = await receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
            assert str(message) == "fan-out"
            with pytest.raises(MessagingEntityNotFoundError):
                await missing.send_messages(ServiceBusMessage("x"))
        finally:
            await _close_together(sender, receiver, missing)
            await sb_client.close()

    asyncio.run(scenario())


# -- robustness ----------------------------------------------------------------------------------
def test_stopping_the_broker_under_a_connected_receiver_raises_a_connection_error() -> None:
    """The broker's close carries a complete AMQP error (condition, description, info), which the
    SDK turns into ServiceBusConnectionError rather than failing to parse it."""
    running = start_broker(queues=[QueueConfig("q")])
    client = ServiceBusClient.from_connection_string(running.connection_string, retry_total=0)
    receiver = client.get_queue_receiver("q")
    try:
        assert receiver.receive_messages(max_wait_time=1) == []  # connected, link attached
        stopper = threading.Timer(0.5, running.stop)
        stopper.start()
        with pytest.raises(ServiceBusConnectionError) as caught:
            receiver.receive_messages(max_wait_time=10)
        stopper.join()
        assert "amqp:connection:forced" in str(caught.value)
    finally:
        running.stop()
        receiver.close()
        client.close()


AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"


def _raw_connection(broker: RunningBroker, payload: bytes) -> None:
    """Send ``payload`` on a fresh TCP connection and read until the broker hangs up (or 2 s)."""
    with socket.create_connection((broker.host, broker.port), timeout=2) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        except OSError:
            pass  # a reset is one of the ways the broker may hang up


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=512),
       prefix=st.sampled_from([b"", AMQP_HEADER, AMQP_HEADER[:5], SASL_HEADER, SASL_HEADER + AMQP_HEADER[:3]]))
def test_fuzzed_bytes_close_only_their_connection(broker: RunningBroker, bus: Bus, prefix: bytes,
                                                  junk: bytes) -> None:
    _raw_connection(broker, prefix + junk)
    bus.send("orders", ServiceBusMessage("still here"))  # handlers are opened once, shared by examples
    (message,) = receive(bus.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 1)
    assert str(message) == "still here"


def test_malformed_frames_do_not_disturb_open_connections(broker: RunningBroker, bus: Bus) -> None:
    sender = bus.sender("orders")
    sender.send_messages(ServiceBusMessage("before"))
    # A frame header announcing 64 KiB with nothing behind it, then a frame of garbage type.
    _raw_connection(broker, AMQP_HEADER + b"\x00\x01\x00\x00\x02\x00\x00\x00")
    _raw_connection(broker, AMQP_HEADER + b"\x00\x00\x00\x10\x02\x07\x00\x00" + b"\xff" * 8)
    _raw_connection(broker, SASL_HEADER + b"\x00\x00\x00\x0c\x02\x01\x00\x00\x00\x53\x41\x45")
    sender.send_messages(ServiceBusMessage("after"))  # the open connection was not disturbed
    received = receive(bus.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 2)
    assert bodies(received) == ["before", "after"]


# -- the model on its own (no sockets) -----------------------------------------------------------
def test_model_lock_expiry_and_dead_lettering_follow_the_clock() -> None:
    namespace = Namespace([QueueConfig("q", lock_duration_seconds=10, max_delivery_count=2)])
    namespace.sender("q").send([IncomingMessage(b"payload", message_id="m")], now=100.0)
    entity = namespace.receiver("q")
    first = entity.receive(100.0, lock=True)
    assert first is not None and first.locked_until == 110.0
    assert entity.receive(105.0, lock=True) is None
    namespace.advance(110.0)  # lock expired: delivery count 1, available again
    second = entity.receive(110.0, lock=True)
    assert second is not None and second.delivery_count == 1
    namespace.advance(120.0)  # second expiry reaches max delivery count 2
    dead = namespace.receiver("q/$DeadLetterQueue").receive(120.0, lock=False)
    assert dead is not None and dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert second.lock_token is None
    with pytest.raises(LockLost):
        entity.complete(uuid.uuid4(), 121.0)


def test_model_duplicate_window_expires() -> None:
    namespace = Namespace([QueueConfig("q", duplicate_detection_window_seconds=60)])
    sender = namespace.sender("q")
    sender.send([IncomingMessage(b"1", message_id="same")], now=0.0)
    sender.send([IncomingMessage(b"2", message_id="same")], now=59.0)
    namespace.advance(61.0)
    sender.send([IncomingMessage(b"3", message_id="same")], now=61.0)
    assert [m.payload for m in namespace.receiver("q").peek(1, 10, 61.0)] == [b"1", b"3"]


def test_model_time_to_live_and_scheduled_messages_follow_the_clock() -> None:
    namespace = Namespace([QueueConfig("q")], [TopicConfig("t", (SubscriptionConfig("s"),))])
    queue, topic = namespace.sender("q"), namespace.sender("t")
    queue.send([IncomingMessage(b"short-lived", time_to_live_seconds=5)], now=0.0)
    queue.send([IncomingMessage(b"later", scheduled_enqueue_time=50.0)], now=0.0)
    (number,) = topic.schedule([IncomingMessage(b"to-subscribers", scheduled_enqueue_time=50.0)], now=0.0)
    entity, subscription = namespace.receiver("q"), namespace.receiver("t/subscriptions/S")
    assert namespace.next_deadline() == 50.0
    assert entity.receive(10.0, lock=False) is None  # expired, and the other is not due yet
    assert subscription.peek(1, 10, 10.0) == []
    namespace.advance(50.0)
    later = entity.receive(50.0, lock=False)
    assert later is not None and later.payload == b"later" and later.enqueued_at == 50.0
    received = subscription.receive(50.0, lock=False)
    assert received is not None and received.sequence_number == number


# -- the frame layer on its own (no sockets) -----------------------------------------------------
def _amqp_frame(code: int, fields: list[Any], *, channel: int = 0, payload: bytes = b"") -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), fields))
    body = bytes(data.encode()) + payload
    return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + body


def _transfer(handle: int, delivery_id: int | None, *, more: bool = False, settled: bool = False,
              channel: int = 1, payload: bytes = b"body") -> bytes:
    return _amqp_frame(0x14, [uint(handle), None if delivery_id is None else uint(delivery_id), b"tag",
                              uint(0), settled, more], channel=channel, payload=payload)


def _frames(stream: bytes) -> list[tuple[int, int, list[Any], bytes]]:
    """(channel, performative code, fields, payload) of each frame in ``stream``."""
    out = []
    while stream:
        size, doff, _, channel = struct.unpack_from(">IBBH", stream)
        body, stream = stream[doff * 4:size], stream[size:]
        data = Data()
        consumed = data.decode(body)
        data.rewind()
        data.next()
        performative = data.get_object()
        out.append((channel, int(performative.descriptor), list(performative.value), body[consumed:]))
    return out


def _delivery_ids(stream: bytes) -> list[int | None]:
    return [fields[1] for _, code, fields, _ in _frames(stream) if code == 0x14]


ACCEPTED = Described(ulong(0x24), [])


def test_frames_in_order_pass_byte_for_byte() -> None:
    translator = DeliveryIdTranslator(256 * 1024)
    stream = (SASL_HEADER + AMQP_HEADER + _amqp_frame(0x11, [None, uint(0), uint(100), uint(100)], channel=1)
              + _transfer(0, 0) + _transfer(0, 1, more=True) + _transfer(0, None) + _transfer(2, 2))
    # Arriving in pieces changes nothing: frames are held until whole.
    assert b"".join(translator.inbound(stream[i:i + 7]) for i in range(0, len(stream), 7)) == stream
    reply = _amqp_frame(0x11, [uint(1), uint(0), uint(100), uint(100)]) + _amqp_frame(
        0x15, [True, uint(0), uint(2), True, ACCEPTED])
    assert translator.outbound(reply) == reply


@given(cuts=st.lists(st.integers(1, 400), max_size=30))
def test_how_bytes_arrive_does_not_change_what_proton_gets(cuts: list[int]) -> None:
    stream = (AMQP_HEADER + _amqp_frame(0x11, [None, uint(0), uint(100), uint(100)], channel=1)
              + _transfer(0, 0) + _transfer(1, 0, more=True, payload=b"y" * 900) + _transfer(1, 0)
              + _transfer(0, 2) + _transfer(0, 2))
    whole = DeliveryIdTranslator(256 * 1024).inbound(stream)
    translator, pieces, start = DeliveryIdTranslator(256 * 1024), [], 0
    for cut in [*cuts, len(stream)]:
        pieces.append(translator.inbound(stream[start:start + cut]))
        start += cut
    assert b"".join(pieces) + translator.inbound_rest() == whole
    assert _delivery_ids(whole[len(AMQP_HEADER):]) == [0, 1, 1, 2, 3]


def test_reused_and_skipped_delivery_ids_are_renumbered_and_mapped_back() -> None:
    translator = DeliveryIdTranslator(256 * 1024)
    translator.inbound(AMQP_HEADER + _amqp_frame(0x11, [None, uint(5), uint(100), uint(100)], channel=1))
    # Two threads took id 6 and the counter went on from 7; later it skipped 8. A delivery in two
    # frames keeps one id, and a renumbered transfer keeps its payload whole.
    sent = [_transfer(0, 5), _transfer(0, 6), _transfer(1, 6, more=True, payload=b"x" * 70_000), _transfer(1, 6),
            _transfer(0, 7), _transfer(1, 9, more=True), _transfer(1, None), _transfer(0, 10, settled=True)]
    received = _frames(translator.inbound(b"".join(sent)))
    assert [fields[1] for _, _, fields, _ in received] == [5, 6, 7, 7, 8, 9, None, 10]
    assert received[2][3] == b"x" * 70_000
    translator.outbound(_amqp_frame(0x11, [uint(1), uint(0), uint(100), uint(100)], channel=0))
    # The broker settles its ids 5..9 at once: the client hears of its own ids, 5..7 and 9.
    answered = _frames(translator.outbound(_amqp_frame(0x15, [True, uint(5), uint(9), True, ACCEPTED])))
    assert [(fields[1], fields[2]) for _, _, fields, _ in answered] == [(5, 7), (9, 9)]
    assert all(fields[3] is True and fields[4] == ACCEPTED for _, _, fields, _ in answered)
    # Dispositions for the broker's own deliveries (role sender) are never touched.
    own = _amqp_frame(0x15, [False, uint(7), uint(7), True, ACCEPTED])
    assert translator.outbound(own) == own


def test_errors_proton_writes_without_info_get_it_and_junk_passes_untouched() -> None:
    translator = DeliveryIdTranslator(256 * 1024)
    bare = _amqp_frame(0x18, [Described(ulong(0x1D), [symbol("amqp:session:invalid-field"), "sequencing error"])])
    ((_, code, (error,), _),) = _frames(translator.outbound(bare))
    condition, description, info = error.value
    assert (code, condition, description) == (0x18, "amqp:session:invalid-field", "sequencing error")
    assert set(info) == {symbol("com.microsoft:tracking-id")}
    complete = _amqp_frame(0x18, [Described(ulong(0x1D), [symbol("amqp:connection:forced"), "bye",
                                                          {symbol("x"): "y"}])])
    assert translator.outbound(complete) == complete

    junk = DeliveryIdTranslator(256 * 1024)
    garbage = AMQP_HEADER + b"\x7f\xff\xff\xff" + b"\x00" * 20  # a frame announcing 2 GiB
    assert junk.inbound(garbage) + junk.inbound(b"more") + junk.inbound_rest() == garbage + b"more"


class _StackToken:
    """A token credential as the identity stand-in signs its tokens, for ``audience``."""

    def __init__(self, audience: str) -> None:
        self.audience = audience

    def get_token(self, *scopes: str, **_: Any) -> Any:
        from azure.core.credentials import AccessToken

        from devstack.tokens import issue_token

        token, expires_on = issue_token(audience=self.audience, subject=str(uuid.uuid4()),
                                        tenant_id=str(uuid.uuid4()))
        return AccessToken(token, expires_on)


def test_a_namespace_reached_with_a_token_is_amqps_on_5671_and_checks_the_token(
        tmp_path: Path, closer: ThreadPoolExecutor) -> None:
    """As Service Bus takes a managed identity: ``ServiceBusClient(namespace, credential)`` speaks
    TLS to port 5671 of the namespace and puts an Entra token for ``https://servicebus.azure.net``
    on ``$cbs``; a token for another audience is refused, and a client that does not trust the
    certificate never gets as far as signing in."""
    from devstack.tls import make_loopback_certificate

    certificate = make_loopback_certificate(tmp_path / "tls")
    secure = start_broker(queues=QUEUES, tls=certificate.context_for)
    namespace = secure.fully_qualified_namespace
    trusted = {"connection_verify": str(certificate.ca_path), "retry_total": 0}
    signed_in = Bus(ServiceBusClient(namespace, _StackToken("https://servicebus.azure.net"), **trusted))
    wrong_audience = Bus(ServiceBusClient(namespace, _StackToken("https://vault.azure.net"), **trusted))
    untrusting = Bus(ServiceBusClient(namespace, _StackToken("https://servicebus.azure.net"), retry_total=0))
    try:
        signed_in.send("orders", ServiceBusMessage("over TLS"))
        (message,) = receive(signed_in.receiver("orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE), 1)
        assert str(message) == "over TLS"
        with pytest.raises(ServiceBusAuthenticationError):
            wrong_audience.send("orders", ServiceBusMessage("x"))
        with pytest.raises(ServiceBusConnectionError) as untrusted:
            untrusting.send("orders", ServiceBusMessage("x"))
        assert "CERTIFICATE_VERIFY_FAILED" in repr(untrusted.value.__cause__ or untrusted.value)
    finally:
        for bus in (signed_in, wrong_audience, untrusting):
            closer.submit(bus.close)
        closer.submit(secure.stop)
