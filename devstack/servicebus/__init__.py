"""Service Bus stand-in: an AMQP 1.0 broker that the real azure-servicebus client uses unchanged.

There is no Service Bus emulator for these machines (the official one is Docker-only), so the local
stack runs this broker on python-qpid-proton. Clients connect with :attr:`RunningBroker.connection_string`
(``UseDevelopmentEmulator=true`` turns TLS off and keeps the port). Sync and ``aio`` clients work.

Implemented (what Service Bus does for these calls):

- Connection: SASL ANONYMOUS, CBS ``put-token`` on ``$cbs`` (SAS tokens signed with the broker's
  key over ``sr`` exactly as the token carries it, percent-encoded as the SDK writes it or plain
  as Microsoft's samples do; or tokens from the local-stack identity), concurrent client
  connections, and many threads on one connection: the SDK's racing threads can send two
  transfers with one delivery id (``AutoLockRenewer`` over many messages does), which Service Bus
  takes and proton would not, so :mod:`devstack.servicebus.frames` renumbers them for proton
  and maps its dispositions back.
- Sending to queues and topics: ``send_messages`` with one message, a list, or a
  ``ServiceBusMessageBatch`` (split into its messages); topics copy each message to every
  subscription; ``scheduled_enqueue_time_utc`` on a plain send; duplicate detection by
  ``message_id`` within the window of an entity that requires it (a duplicate is accepted and
  dropped; off by default, as in Service Bus); time to live;
  the Standard-tier 256 KiB message size limit (``MessageSizeExceededError``). Properties,
  application properties and body come back byte for byte; the broker sets the header's
  ``delivery-count`` and adds ``x-opt-sequence-number``,
  ``x-opt-enqueued-time``, ``x-opt-locked-until``, ``x-opt-lock-token`` and ``x-opt-message-state``.
- Receiving from queues, subscriptions (``<topic>/Subscriptions/<name>``) and their dead-letter
  queues (``sub_queue=ServiceBusSubQueue.DEAD_LETTER``): peek-lock and receive-and-delete, link
  credit (prefetch 0 or more, ``receive_messages``, iterating a receiver, drain on close).
- Settlement on the receive link: complete, abandon (``delivery_count + 1``, redelivered at once),
  defer, dead-letter with reason and description; released messages go back uncounted; settling
  with a lost lock fails with ``com.microsoft:message-lock-lost``.
- Locks: lock duration per entity, expiry (``delivery_count + 1``), ``maxDeliveryCount`` moving
  the message to the dead-letter queue with reason ``MaxDeliveryCountExceeded``.
- ``$management`` operations: ``com.microsoft:renew-lock`` (``renew_message_lock``,
  ``AutoLockRenewer``), ``peek-message`` (``peek_messages``), ``receive-by-sequence-number``
  (``receive_deferred_messages``), ``update-disposition`` (settling deferred messages),
  ``schedule-message`` (``schedule_messages``), ``cancel-scheduled-message``
  (``cancel_scheduled_messages``).
- Errors: unknown entities refuse the attach with ``amqp:not-found``
  (``MessagingEntityNotFoundError``); bad tokens get 401 (``ServiceBusAuthenticationError``);
  malformed frames close only the connection that sent them. Every error the broker sends carries
  condition, description and info, as Service Bus's do: stopping the broker closes each
  connection with ``amqp:connection:forced``, which a client sees as ``ServiceBusConnectionError``.
- Local-stack controls: :meth:`RunningBroker.reset` (empty every entity, keep the entities) and
  :meth:`RunningBroker.call` (run a function on the broker thread to inspect the model).

Not implemented: sessions, rules/filters, transactions, auto-forwarding, dead-lettering on expiry,
an entity's default time to live, the administration (ATOM) API, AMQP over WebSockets,
partitioning.
"""

from __future__ import annotations

from devstack.servicebus.config import QueueConfig, SubscriptionConfig, TopicConfig, load_entities
from devstack.servicebus.server import RunningBroker, start_broker

__all__ = [
    "QueueConfig",
    "RunningBroker",
    "SubscriptionConfig",
    "TopicConfig",
    "load_entities",
    "start_broker",
]
