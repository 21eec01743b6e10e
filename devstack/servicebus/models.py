"""The broker's state, free of any protocol: entities, messages, locks, delivery counts, DLQ.

Everything here is plain Python driven by explicit ``now`` timestamps (seconds since the epoch),
so the Service Bus rules can be tested without sockets or sleeping:

- peek-lock hands out a lock token valid for the entity's lock duration; complete deletes,
  abandon and lock expiry put the message back with ``delivery_count + 1``, defer parks it until
  it is received by sequence number, dead-letter moves it to ``<entity>/$DeadLetterQueue``;
- when ``delivery_count`` reaches ``max_delivery_count`` the message is dead-lettered with reason
  ``MaxDeliveryCountExceeded`` (a release, which the SDK sends for buffered messages it does not
  want, does not count as a delivery);
- sequence numbers are per queue or per topic (a topic's subscriptions share its numbers);
- scheduled messages are held until their time, then enqueued (or cancelled before that);
- duplicate detection drops a message whose ``message_id`` was accepted within the window;
- a message past its time to live is dropped.

The model is not thread-safe; the wire layer calls it from its one event-loop thread.
"""

from __future__ import annotations

import heapq
import uuid
from collections import deque
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import TYPE_CHECKING

from devstack.servicebus.errors import (
    EntityNotFoundError,
    MessageLockLostError,
    MessageNotFoundError,
    NotAllowedError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from devstack.servicebus.config import QueueConfig, TopicConfig

MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
DEAD_LETTER_SUFFIX = "/$deadletterqueue"
SUBSCRIPTIONS_SEGMENT = "/subscriptions/"
MANAGEMENT_SUFFIX = "/$management"


class MessageState(IntEnum):
    """Service Bus message states, as ``x-opt-message-state`` reports them."""

    ACTIVE = 0
    DEFERRED = 1
    SCHEDULED = 2


@dataclass(frozen=True)
class IncomingMessage:
    """A message as a sender handed it over: its encoded bytes and the facts the broker needs."""

    payload: bytes
    message_id: str | None = None
    time_to_live_seconds: float | None = None
    scheduled_enqueue_time: float | None = None  # seconds since the epoch


@dataclass
class StoredMessage:
    """A message in an entity, with the state Service Bus keeps about it."""

    sequence_number: int
    payload: bytes
    message_id: str | None
    enqueued_at: float
    time_to_live_seconds: float | None = None
    state: MessageState = MessageState.ACTIVE
    scheduled_at: float | None = None
    delivery_count: int = 0
    lock_token: uuid.UUID | None = None
    locked_until: float | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None

    @property
    def expires_at(self) -> float | None:
        """When the time to live runs out (it starts when the message becomes visible)."""
        if self.time_to_live_seconds is None:
            return None
        return self.enqueued_at + self.time_to_live_seconds

    def expired(self, now: float) -> bool:
        expires_at = self.expires_at
        return expires_at is not None and expires_at <= now


class Entity:
    """Something receivers read from: a queue, a subscription, or a dead-letter sub-queue."""

    def __init__(self, path: str, *, lock_duration: float, max_delivery_count: int,
                 dead_letter_queue: Entity | None = None) -> None:
        self.path = path
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.dead_letter_queue = dead_letter_queue
        self.messages: dict[int, StoredMessage] = {}
        self._ready: list[int] = []  # heap of sequence numbers that may be deliverable
        self._ready_set: set[int] = set()
        self._locks: dict[uuid.UUID, int] = {}
        self._scheduled: dict[int, float] = {}  # sequence number -> scheduled enqueue time

    # -- filling -------------------------------------------------------------------------------
    def add(self, message: StoredMessage) -> None:
        """Store ``message``; an active one becomes receivable at once."""
        self.messages[message.sequence_number] = message
        if message.state is MessageState.ACTIVE:
            self._make_ready(message)
        elif message.state is MessageState.SCHEDULED and message.scheduled_at is not None:
            self._scheduled[message.sequence_number] = message.scheduled_at

    def cancel_scheduled(self, sequence_number: int) -> None:
        """Drop a message that is still waiting for its scheduled enqueue time."""
        if self._scheduled.pop(sequence_number, None) is not None:
            del self.messages[sequence_number]

    def clear(self) -> None:
        """Drop every message and lock (entity settings stay)."""
        self.messages.clear()
        self._ready.clear()
        self._ready_set.clear()
        self._locks.clear()
        self._scheduled.clear()

    # -- receiving -----------------------------------------------------------------------------
    def has_ready(self, now: float) -> bool:
        """Whether :meth:`receive` would return a message now (drops stale heap entries)."""
        while self._ready:
            message = self.messages.get(self._ready[0])
            if message is not None and self._deliverable(message, now):
                return True
            self._ready_set.discard(heapq.heappop(self._ready))
            if message is not None and message.expired(now) and message.lock_token is None:
                del self.messages[message.sequence_number]
        return False

    def receive(self, now: float, *, lock: bool) -> StoredMessage | None:
        """The next active message: locked (peek-lock) or removed (receive-and-delete)."""
        if not self.has_ready(now):
            return None
        sequence_number = heapq.heappop(self._ready)
        self._ready_set.discard(sequence_number)
        message = self.messages[sequence_number]
        if lock:
            self._lock(message, now)
        else:
            del self.messages[sequence_number]
        return message

    def receive_deferred(self, sequence_numbers: Iterable[int], now: float, *, lock: bool) -> list[StoredMessage]:
        """Deferred messages by sequence number; all must exist or nothing changes.

        Raises
        ------
        MessageNotFoundError
            One of the numbers is not a deferred message of this entity.
        """
        wanted = list(sequence_numbers)
        found: list[StoredMessage] = []
        for number in wanted:
            message = self.messages.get(number)
            if message is None or message.state is not MessageState.DEFERRED or message.expired(now):
                raise MessageNotFoundError(
                    f"Failed to retrieve the deferred message with sequence number {number} from {self.path}.")
            found.append(message)
        for message in found:
            if lock:
                if message.lock_token is not None:
                    self._unlock(message)
                self._lock(message, now)
            else:
                self._remove(message)
        return found

    def peek(self, from_sequence_number: int, count: int, now: float) -> list[StoredMessage]:
        """Messages from a sequence number on, in order, without locking or counting a delivery."""
        numbers = sorted(number for number in self.messages if number >= from_sequence_number)
        result: list[StoredMessage] = []
        for number in numbers:
            message = self.messages[number]
            if message.expired(now) and message.lock_token is None:
                continue
            result.append(message)
            if len(result) >= count:
                break
        return result

    # -- settling ------------------------------------------------------------------------------
    def complete(self, token: uuid.UUID, now: float) -> None:
        """Remove a locked message for good."""
        self._remove(self._locked(token, now))

    def abandon(self, token: uuid.UUID, now: float) -> None:
        """Give a message back at once, counting the failed delivery."""
        message = self._locked(token, now)
        self._unlock(message)
        self._count_failed_delivery(message)

    def release(self, token: uuid.UUID, now: float) -> None:
        """Give a message back without counting a delivery (AMQP ``released``)."""
        message = self._locked(token, now)
        self._unlock(message)
        self._back(message)

    def defer(self, token: uuid.UUID, now: float) -> None:
        """Park a message until it is received by sequence number."""
        message = self._locked(token, now)
        self._unlock(message)
        message.state = MessageState.DEFERRED

    def dead_letter(self, token: uuid.UUID, now: float, *, reason: str | None, description: str | None) -> None:
        """Move a locked message to the dead-letter queue with the receiver's reason."""
        message = self._locked(token, now)
        if self.dead_letter_queue is None:
            raise NotAllowedError(f"{self.path} is a dead-letter queue; its messages cannot be dead-lettered.")
        self._unlock(message)
        self._move_to_dead_letter(message, reason, description)

    def renew_lock(self, token: uuid.UUID, now: float) -> float:
        """Extend a lock by the lock duration from now; returns the new locked-until time."""
        message = self._locked(token, now)
        message.locked_until = now + self.lock_duration
        return message.locked_until

    def is_locked(self, token: uuid.UUID) -> bool:
        return token in self._locks

    # -- time ----------------------------------------------------------------------------------
    def advance(self, now: float) -> bool:
        """Expire locks and make due scheduled messages active; True when anything changed."""
        changed = False
        for token, number in list(self._locks.items()):
            message = self.messages[number]
            if message.locked_until is not None and message.locked_until <= now:
                self._expire_lock(token, message)
                changed = True
        for number, when in list(self._scheduled.items()):
            if when <= now:
                del self._scheduled[number]
                message = self.messages[number]
                message.state = MessageState.ACTIVE
                message.enqueued_at = when
                self._make_ready(message)
                changed = True
        return changed

    def next_deadline(self) -> float | None:
        """The earliest lock expiry or scheduled enqueue time, if any."""
        times = [self.messages[number].locked_until for number in self._locks.values()]
        known = [when for when in times if when is not None] + list(self._scheduled.values())
        return min(known) if known else None

    # -- internals -----------------------------------------------------------------------------
    def _deliverable(self, message: StoredMessage, now: float) -> bool:
        return (message.state is MessageState.ACTIVE and message.lock_token is None
                and not message.expired(now))

    def _make_ready(self, message: StoredMessage) -> None:
        if message.sequence_number not in self._ready_set:
            self._ready_set.add(message.sequence_number)
            heapq.heappush(self._ready, message.sequence_number)

    def _lock(self, message: StoredMessage, now: float) -> None:
        message.lock_token = uuid.uuid4()
        message.locked_until = now + self.lock_duration
        self._locks[message.lock_token] = message.sequence_number

    def _unlock(self, message: StoredMessage) -> None:
        if message.lock_token is not None:
            self._locks.pop(message.lock_token, None)
        message.lock_token = None
        message.locked_until = None

    def _locked(self, token: uuid.UUID, now: float) -> StoredMessage:
        number = self._locks.get(token)
        if number is None:
            raise MessageLockLostError(
                "The lock supplied is invalid. Either the lock expired, or the message has already been "
                f"removed from the queue. Reference: {token}, entity: {self.path}.")
        message = self.messages[number]
        if message.locked_until is not None and message.locked_until <= now:
            self._expire_lock(token, message)
            raise MessageLockLostError(
                f"The lock on the message expired before it was settled. Reference: {token}, entity: {self.path}.")
        return message

    def _expire_lock(self, token: uuid.UUID, message: StoredMessage) -> None:
        self._locks.pop(token, None)
        message.lock_token = None
        message.locked_until = None
        self._count_failed_delivery(message)

    def _count_failed_delivery(self, message: StoredMessage) -> None:
        message.delivery_count += 1
        if self.dead_letter_queue is not None and message.delivery_count >= self.max_delivery_count:
            self._move_to_dead_letter(
                message, MAX_DELIVERY_COUNT_EXCEEDED,
                f"Message could not be consumed after {self.max_delivery_count} delivery attempts.")
        else:
            self._back(message)

    def _back(self, message: StoredMessage) -> None:
        if message.state is MessageState.ACTIVE:
            self._make_ready(message)

    def _remove(self, message: StoredMessage) -> None:
        self._unlock(message)
        self._scheduled.pop(message.sequence_number, None)
        self.messages.pop(message.sequence_number, None)

    def _move_to_dead_letter(self, message: StoredMessage, reason: str | None, description: str | None) -> None:
        if self.dead_letter_queue is None:
            raise NotAllowedError(f"{self.path} has no dead-letter queue.")
        self._remove(message)
        self.dead_letter_queue.add(replace(message, state=MessageState.ACTIVE, lock_token=None, locked_until=None,
                                     dead_letter_reason=reason, dead_letter_description=description))


class SendTarget:
    """What senders address (a queue or a topic): sequence numbers, duplicate detection, scheduling."""

    def __init__(self, path: str, duplicate_detection_window: float | None) -> None:
        self.path = path
        self.duplicate_detection_window = duplicate_detection_window
        self.next_sequence_number = 1
        self.seen_message_ids: dict[str, float] = {}  # message id -> end of its detection window
        self._seen_order: deque[tuple[float, str]] = deque()  # same, oldest first, for pruning

    def send(self, messages: Iterable[IncomingMessage], now: float) -> None:
        """Enqueue (or hold until their scheduled time) the messages that are not duplicates."""
        for incoming in messages:
            self._accept(incoming, now, always_schedule=False)

    def schedule(self, messages: Iterable[IncomingMessage], now: float) -> list[int]:
        """Hold messages until their scheduled enqueue time; returns their sequence numbers."""
        return [self._accept(incoming, now, always_schedule=True) for incoming in messages]

    def cancel_scheduled(self, sequence_numbers: Iterable[int]) -> None:
        """Drop scheduled messages that have not been enqueued yet (unknown numbers are ignored)."""
        raise NotImplementedError

    def advance(self, now: float) -> bool:
        """Forget duplicate-detection records older than the window."""
        while self._seen_order and self._seen_order[0][0] <= now:
            until, message_id = self._seen_order.popleft()
            if self.seen_message_ids.get(message_id) == until:
                del self.seen_message_ids[message_id]
        return False

    def next_deadline(self) -> float | None:
        return None

    def clear(self) -> None:
        self.seen_message_ids.clear()
        self._seen_order.clear()

    def _accept(self, incoming: IncomingMessage, now: float, *, always_schedule: bool) -> int:
        number = self.next_sequence_number
        self.next_sequence_number += 1
        if self._is_duplicate(incoming, now):
            return number
        scheduled = incoming.scheduled_enqueue_time
        stored = StoredMessage(sequence_number=number, payload=incoming.payload, message_id=incoming.message_id,
                               enqueued_at=now, time_to_live_seconds=incoming.time_to_live_seconds)
        if scheduled is not None and (scheduled > now or always_schedule):
            stored.state = MessageState.SCHEDULED
            stored.scheduled_at = scheduled
            stored.enqueued_at = scheduled
        self._store(stored)
        return number

    def _is_duplicate(self, incoming: IncomingMessage, now: float) -> bool:
        if self.duplicate_detection_window is None or incoming.message_id is None:
            return False
        until = self.seen_message_ids.get(incoming.message_id)
        if until is not None and until > now:
            return True
        until = now + self.duplicate_detection_window
        self.seen_message_ids[incoming.message_id] = until
        self._seen_order.append((until, incoming.message_id))
        return False

    def _store(self, message: StoredMessage) -> None:
        raise NotImplementedError


class Queue(SendTarget):
    """A queue: senders and receivers share one entity; scheduled messages wait inside it."""

    def __init__(self, path: str, duplicate_detection_window: float | None, entity: Entity) -> None:
        super().__init__(path, duplicate_detection_window)
        self.entity = entity

    def cancel_scheduled(self, sequence_numbers: Iterable[int]) -> None:
        for number in sequence_numbers:
            self.entity.cancel_scheduled(number)

    def _store(self, message: StoredMessage) -> None:
        self.entity.add(message)


class Topic(SendTarget):
    """A topic: holds scheduled messages itself and copies each active one to every subscription."""

    def __init__(self, path: str, duplicate_detection_window: float | None) -> None:
        super().__init__(path, duplicate_detection_window)
        self.subscriptions: dict[str, Entity] = {}
        self.scheduled: dict[int, StoredMessage] = {}

    def cancel_scheduled(self, sequence_numbers: Iterable[int]) -> None:
        for number in sequence_numbers:
            self.scheduled.pop(number, None)

    def advance(self, now: float) -> bool:
        super().advance(now)
        due = [message for message in self.scheduled.values()
               if message.scheduled_at is not None and message.scheduled_at <= now]
        for message in due:
            del self.scheduled[message.sequence_number]
            message.state = MessageState.ACTIVE
            self._fan_out(message)
        return bool(due)

    def next_deadline(self) -> float | None:
        times = [message.scheduled_at for message in self.scheduled.values() if message.scheduled_at is not None]
        return min(times) if times else None

    def clear(self) -> None:
        super().clear()
        self.scheduled.clear()

    def _store(self, message: StoredMessage) -> None:
        if message.state is MessageState.SCHEDULED:
            self.scheduled[message.sequence_number] = message
        else:
            self._fan_out(message)

    def _fan_out(self, message: StoredMessage) -> None:
        for subscription in self.subscriptions.values():
            subscription.add(replace(message))


@dataclass(frozen=True)
class ManagementNode:
    """What a ``<entity>/$management`` node can act on: its sender side and/or receiver side."""

    path: str
    sender: SendTarget | None
    receiver: Entity | None


class Namespace:
    """All entities of one broker, addressed by case-insensitive path like Service Bus."""

    def __init__(self, queues: Iterable[QueueConfig] = (), topics: Iterable[TopicConfig] = ()) -> None:
        self._senders: dict[str, SendTarget] = {}
        self._receivers: dict[str, Entity] = {}
        for config in queues:
            entity = self._receivable(config.name, config.lock_duration_seconds, config.max_delivery_count)
            self._senders[config.name.lower()] = Queue(config.name, config.duplicate_detection_window_seconds,
                                                       entity)
        for topic_config in topics:
            topic = Topic(topic_config.name, topic_config.duplicate_detection_window_seconds)
            for sub in topic_config.subscriptions:
                path = f"{topic_config.name}/Subscriptions/{sub.name}"
                topic.subscriptions[sub.name.lower()] = self._receivable(path, sub.lock_duration_seconds,
                                                                         sub.max_delivery_count)
            self._senders[topic_config.name.lower()] = topic

    def _receivable(self, path: str, lock_duration: float, max_delivery_count: int) -> Entity:
        dead_letter = Entity(f"{path}/$DeadLetterQueue", lock_duration=lock_duration,
                             max_delivery_count=max_delivery_count)
        entity = Entity(path, lock_duration=lock_duration, max_delivery_count=max_delivery_count,
                        dead_letter_queue=dead_letter)
        self._receivers[path.lower()] = entity
        self._receivers[dead_letter.path.lower()] = dead_letter
        return entity

    @staticmethod
    def normalize(address: str) -> str:
        """An address's entity path: no scheme/host, no surrounding slashes, lower case."""
        path = address.strip()
        if "://" in path:
            path = path.split("://", 1)[1]
            path = path.split("/", 1)[1] if "/" in path else ""
        path = path.split("?", 1)[0]
        return "/".join(part for part in path.split("/") if part).lower()

    def sender(self, address: str) -> SendTarget:
        """The queue or topic a sender link targets.

        Raises
        ------
        EntityNotFoundError
            Nothing has that name.
        NotAllowedError
            It is a subscription or a dead-letter queue, which cannot be sent to.
        """
        path = self.normalize(address)
        if path in self._senders:
            return self._senders[path]
        if path in self._receivers:
            raise NotAllowedError(f"Cannot send to '{address}': it is not a queue or topic.")
        raise EntityNotFoundError(f"The messaging entity '{address}' could not be found.")

    def receiver(self, address: str) -> Entity:
        """The queue, subscription or dead-letter queue a receiver link reads from.

        Raises
        ------
        EntityNotFoundError
            Nothing has that name.
        NotAllowedError
            It is a topic, which cannot be received from.
        """
        path = self.normalize(address)
        if path in self._receivers:
            return self._receivers[path]
        if path in self._senders:
            raise NotAllowedError(f"Cannot receive from topic '{address}'; use one of its subscriptions.")
        raise EntityNotFoundError(f"The messaging entity '{address}' could not be found.")

    def management_node(self, address: str) -> ManagementNode:
        """The ``<entity>/$management`` node: raises :class:`EntityNotFoundError` for anything else."""
        path = self.normalize(address)
        if not path.endswith(MANAGEMENT_SUFFIX):
            raise EntityNotFoundError(f"'{address}' is not a management node.")
        entity_path = path[: -len(MANAGEMENT_SUFFIX)]
        sender = self._senders.get(entity_path)
        receiver = self._receivers.get(entity_path)
        if sender is None and receiver is None:
            raise EntityNotFoundError(f"The messaging entity '{entity_path}' could not be found.")
        return ManagementNode(entity_path, sender, receiver)

    def entities(self) -> Iterator[Entity]:
        return iter(self._receivers.values())

    def advance(self, now: float) -> bool:
        """Run the clock: lock expiry, scheduled messages, duplicate-detection records."""
        changed = False
        for sender in self._senders.values():
            changed = sender.advance(now) or changed
        for entity in self._receivers.values():
            changed = entity.advance(now) or changed
        return changed

    def next_deadline(self) -> float | None:
        times = [sender.next_deadline() for sender in self._senders.values()]
        times += [entity.next_deadline() for entity in self._receivers.values()]
        known = [when for when in times if when is not None]
        return min(known) if known else None

    def reset(self) -> None:
        """Drop every message, lock, scheduled message and duplicate-detection record."""
        for sender in self._senders.values():
            sender.clear()
        for entity in self._receivers.values():
            entity.clear()
