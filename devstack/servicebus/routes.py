"""The AMQP side of the broker: proton engine events in, model calls, AMQP frames out.

What the real azure-servicebus client (its own ``_pyamqp`` stack) needs, and where it is handled:

- ``$cbs``: a request link and a reply link; ``put-token`` is answered on the reply link with
  ``correlation-id`` = the request's ``message-id`` and application properties
  ``status-code: 202`` / ``status-description: Accepted`` (401 for a bad token). Entity and
  management links are refused (``amqp:unauthorized-access``) until a token was accepted.
- Entity links: sender targets look like ``amqps://host:port/<entity>``; receiver sources
  ``<queue>``, ``<topic>/Subscriptions/<name>`` and either with ``/$DeadLetterQueue``. Names are
  case-insensitive. An unknown entity gets its attach answered and closed with ``amqp:not-found``.
- Receiving: ``rcv-settle-mode second`` (peek-lock) deliveries are tagged with the lock token
  (UUID, little-endian bytes) and stay unsettled; the client's outcome is applied to the model and
  echoed back settled (``accepted`` complete, ``modified`` abandon/defer, ``rejected`` dead-letter
  or, with an error, a failed settlement such as ``com.microsoft:message-lock-lost``).
  ``snd-settle-mode settled`` (receive-and-delete) deliveries go pre-settled.
- ``<entity>/$management``: request/response with ``operation`` and the ``statusCode`` /
  ``statusDescription`` / ``errorCondition`` application properties the SDK reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote, unquote_plus

from proton import (
    UNDESCRIBED,
    Array,
    Condition,
    Data,
    Delivery,
    Disposition,
    Endpoint,
    Handler,
    Link,
    Message,
    Terminus,
    int32,
    symbol,
    timestamp,
)

from devstack.servicebus import codec
from devstack.servicebus.errors import (
    ArgumentError,
    BrokerError,
    CodecError,
    MessageSizeExceededError,
    NotAllowedError,
    UnauthorizedError,
)
from devstack.servicebus.models import IncomingMessage, ManagementNode, MessageState, Namespace, StoredMessage
from devstack.tokens import verify_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from proton import Connection, Event, Receiver, Sender, Session

    from devstack.servicebus.models import Entity, SendTarget

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

CBS_ADDRESS = "$cbs"
SAS_TOKEN_TYPE = "servicebus.windows.net:sastoken"
JWT_TOKEN_TYPE = "jwt"
SAS_PREFIX = "SharedAccessSignature "
JWT_AUDIENCE = "https://servicebus.azure.net"
MAX_MESSAGE_SIZE = 256 * 1024  # Standard tier; the SDK sizes batches from this
INBOUND_CREDIT = 1000
_STATE = "_devstack_sb"  # attribute on proton wrappers (kept in the engine object's record)
_DELIVERY = "_devstack_sb_delivery"


@dataclass
class _ConnectionState:
    authorized: bool = False


@dataclass(frozen=True)
class _Cbs:
    """A ``$cbs`` link: requests when the broker receives on it, replies when it sends."""


@dataclass(frozen=True)
class _Management:
    node: ManagementNode


@dataclass(frozen=True)
class _Inbound:
    """Messages sent to a queue or topic."""

    target: SendTarget


@dataclass(frozen=True)
class _Outbound:
    """Messages handed to a receiver of a queue, subscription or dead-letter queue."""

    entity: Entity
    receive_and_delete: bool


_LinkRole = _Cbs | _Management | _Inbound | _Outbound


@dataclass(frozen=True)
class _Handed:
    """What an unsettled outbound delivery refers to."""

    entity: Entity
    lock_token: uuid.UUID


class TokenValidator:
    """Checks CBS tokens: SAS tokens signed with the broker's key, or local-stack identity tokens."""

    def __init__(self, key_name: str, key: str) -> None:
        self.key_name = key_name
        self.key = key

    def check(self, token_type: str, token: str, now: float) -> str | None:
        """``None`` when the token is good, otherwise why it was refused.

        The SDK labels SAS tokens ``jwt`` too (pyamqp's default token type), so the token's own
        shape decides how it is checked, as Service Bus does.
        """
        if token.startswith(SAS_PREFIX):
            return self._check_sas(token, now)
        if token_type in (JWT_TOKEN_TYPE, SAS_TOKEN_TYPE):
            if verify_token(token, audience=JWT_AUDIENCE) is None:
                return "The token was not issued by the local stack."
            return None
        return f"Unsupported token type {token_type!r}."

    def _check_sas(self, token: str, now: float) -> str | None:
        """Check a ``SharedAccessSignature sr=...&sig=...&se=...&skn=...`` token.

        The signature is HMAC-SHA256 over ``sr``, a newline and ``se``, with ``sr`` exactly as it
        appears in the token: the SDK percent-encodes the resource URI and signs the encoded form,
        Microsoft's samples put it in plain and sign that, and Service Bus takes both. A signature
        over one form sent with the other does not match.
        """
        fields = _sas_fields(token[len(SAS_PREFIX):])
        if fields is None:
            return "Malformed SharedAccessSignature token."
        audience, signature, expiry, key_name = (fields.get(name) for name in ("sr", "sig", "se", "skn"))
        if not audience or not signature or not expiry or not expiry.isdigit():
            return "Malformed SharedAccessSignature token."
        if key_name is None or unquote_plus(key_name) != self.key_name:
            return f"Unknown SharedAccessKeyName {key_name!r}."
        if int(expiry) < now:
            return "The SharedAccessSignature token has expired."
        expected = hmac.new(self.key.encode("utf-8"), f"{audience}\n{expiry}".encode(), hashlib.sha256).digest()
        try:
            # "+" is a base64 character here, not an encoded space: unquote, not unquote_plus.
            given = base64.b64decode(unquote(signature), validate=True)
        except ValueError:
            return "The SharedAccessSignature signature is not base64."
        if not hmac.compare_digest(expected, given):
            return "The SharedAccessSignature signature does not match."
        return None


def _sas_fields(text: str) -> dict[str, str] | None:
    """A SAS token's ``key=value`` fields as sent (values not percent-decoded); ``None`` when a
    field repeats or has no ``=``, which leaves the token ambiguous."""
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        key, equals, value = pair.partition("=")
        if not equals or key in fields:
            return None
        fields[key] = value
    return fields


class Router(Handler):
    """Proton event handler for every connection of one broker; all calls come from one thread."""

    def __init__(self, namespace: Namespace, tokens: TokenValidator,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.namespace = namespace
        self.tokens = tokens
        self.clock = clock
        self._reply_tags = 0

    # -- connections and sessions --------------------------------------------------------------
    def on_connection_remote_open(self, event: Event) -> None:
        connection = _required(event.connection)
        setattr(connection, _STATE, _ConnectionState())
        connection.container = "devstack-servicebus"
        if connection.state & Endpoint.LOCAL_UNINIT:
            connection.open()

    def on_connection_remote_close(self, event: Event) -> None:
        connection = _required(event.connection)
        if not connection.state & Endpoint.LOCAL_CLOSED:
            connection.close()

    def on_session_remote_open(self, event: Event) -> None:
        session = _required(event.session)
        if session.state & Endpoint.LOCAL_UNINIT:
            session.open()

    def on_session_remote_close(self, event: Event) -> None:
        session = _required(event.session)
        if not session.state & Endpoint.LOCAL_CLOSED:
            session.close()

    def on_link_remote_close(self, event: Event) -> None:
        link = _required(event.link)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def on_transport_error(self, event: Event) -> None:
        transport = event.transport
        logger.debug("AMQP transport error: %s", transport.condition if transport is not None else None)

    # -- links ---------------------------------------------------------------------------------
    def on_link_remote_open(self, event: Event) -> None:
        link: Link = _required(event.link)
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        try:
            role = self._classify(link)
        except BrokerError as error:
            # Refuse as AMQP prescribes (and Service Bus does): attach with a null terminus on our
            # side, then detach with the error, so the client fails the attach instead of sending.
            logger.info("Refusing link %r: %s", link.name, error.description)
            (link.target if link.is_receiver else link.source).type = Terminus.UNSPECIFIED
            link.condition = _condition(error)
            link.open()
            link.close()
            return
        setattr(link, _STATE, role)
        if isinstance(role, _Inbound):
            link.max_message_size = MAX_MESSAGE_SIZE
        link.open()
        if link.is_receiver:
            cast("Receiver", link).flow(INBOUND_CREDIT)

    def _classify(self, link: Link) -> _LinkRole:
        address = (link.remote_target.address if link.is_receiver else link.remote_source.address) or ""
        if address == CBS_ADDRESS:
            return _Cbs()
        if not self._connection_state(link.connection).authorized:
            raise UnauthorizedError(f"Put a token on $cbs before attaching to '{address}'.")
        if self.namespace.normalize(address).endswith("/$management"):
            return _Management(self.namespace.management_node(address))
        if link.is_receiver:
            return _Inbound(self.namespace.sender(address))
        if _has_session_filter(link):
            raise NotAllowedError(f"'{address}' is not session-enabled (sessions are not supported here).")
        receive_and_delete = link.remote_snd_settle_mode == Link.SND_SETTLED
        return _Outbound(self.namespace.receiver(address), receive_and_delete)

    # -- deliveries ----------------------------------------------------------------------------
    def on_delivery(self, event: Event) -> None:
        delivery = _required(event.delivery)
        link = delivery.link
        role = getattr(link, _STATE, None)
        if link.is_receiver:
            self._incoming(cast("Receiver", link), delivery, role)
        elif isinstance(role, _Outbound):
            self._settlement(delivery)
        elif delivery.remote_state or delivery.settled:
            delivery.settle()

    def _incoming(self, link: Receiver, delivery: Delivery, role: object) -> None:
        if delivery.aborted:
            delivery.settle()
            return
        if delivery.partial or not delivery.readable:
            return
        payload = _read(link)
        link.advance()
        error: BrokerError | None = None
        try:
            if isinstance(role, _Inbound):
                if len(payload) > MAX_MESSAGE_SIZE:
                    raise MessageSizeExceededError(
                        f"The message ({len(payload)} bytes) exceeds the limit of {MAX_MESSAGE_SIZE} bytes.")
                role.target.send(_incoming_messages(payload), self.clock())
            elif isinstance(role, _Cbs):
                self._put_token(link, payload)
            elif isinstance(role, _Management):
                self._management(link, role.node, payload)
            else:
                error = NotAllowedError("This link does not accept messages.")
        except BrokerError as exc:
            error = exc
        except Exception as exc:  # a bug here fails this one transfer, not the whole connection
            logger.exception("Handling an incoming message failed.")
            error = BrokerError(f"The broker could not process the message: {exc}")
        if error is not None:
            delivery.local.condition = _condition(error)
            delivery.update(Disposition.REJECTED)
        else:
            delivery.update(Disposition.ACCEPTED)
        delivery.settle()
        if link.credit < INBOUND_CREDIT // 2:
            link.flow(INBOUND_CREDIT - link.credit)

    def _settlement(self, delivery: Delivery) -> None:
        handed = cast("_Handed | None", getattr(delivery, _DELIVERY, None))
        outcome: int | None = delivery.remote_state
        if outcome == Disposition.RECEIVED:
            outcome = None  # progress report, not an outcome
        if handed is None or not (outcome or delivery.settled):
            return
        setattr(delivery, _DELIVERY, None)
        remote = delivery.remote
        entity, token, now = handed.entity, handed.lock_token, self.clock()
        error: BrokerError | None = None
        try:
            if outcome == Disposition.ACCEPTED:
                entity.complete(token, now)
            elif outcome == Disposition.REJECTED:
                info = _condition_info(remote.condition)
                entity.dead_letter(token, now, reason=info.get("DeadLetterReason"),
                                   description=info.get("DeadLetterErrorDescription"))
            elif outcome == Disposition.MODIFIED and remote.failed and remote.undeliverable:
                entity.defer(token, now)
            elif outcome == Disposition.MODIFIED and remote.failed:
                entity.abandon(token, now)
            else:  # released, modified without failure, or settled with no outcome
                entity.release(token, now)
        except BrokerError as exc:
            error = exc
        if not delivery.settled:  # the receiver waits for the outcome (rcv-settle-mode second)
            if error is not None:
                delivery.local.condition = _condition(error)
                delivery.update(Disposition.REJECTED)
            else:
                if outcome == Disposition.MODIFIED:
                    delivery.local.failed = remote.failed
                    delivery.local.undeliverable = remote.undeliverable
                delivery.update(outcome or Disposition.RELEASED)
        delivery.settle()

    # -- handing messages to receivers ---------------------------------------------------------
    def pump(self, connections: Iterable[Connection]) -> None:
        """Give waiting messages to every receiver link that has credit."""
        now = self.clock()
        for connection in connections:
            link = connection.link_head(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
            while link is not None:
                role = getattr(link, _STATE, None)
                if link.is_sender and isinstance(role, _Outbound):
                    try:
                        self._fill(cast("Sender", link), role, now)
                    except Exception:  # one bad link must not starve the others
                        logger.exception("Handing messages to link %r failed.", link.name)
                link = link.next(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)

    def _fill(self, link: Sender, role: _Outbound, now: float) -> None:
        entity = role.entity
        while link.credit > 0:
            message = entity.receive(now, lock=not role.receive_and_delete)
            if message is None:
                break
            token = message.lock_token
            payload = _render(message, lock_token=token)
            delivery = link.delivery(_tag((token or uuid.uuid4()).bytes_le))
            link.stream(payload)
            link.advance()
            if token is None:
                delivery.settle()
            else:
                setattr(delivery, _DELIVERY, _Handed(entity, token))
        if link.drain_mode and link.credit > 0:
            link.drained()

    # -- $cbs ----------------------------------------------------------------------------------
    def _put_token(self, link: Receiver, payload: bytes) -> None:
        request = _decode_request(payload)
        properties: dict[str, Any] = dict(request.properties or {})
        if str(properties.get("operation", "")) != "put-token":
            raise ArgumentError(f"Unsupported $cbs operation {properties.get('operation')!r}.")
        token = request.body.decode("utf-8", "replace") if isinstance(request.body, bytes) else str(request.body)
        problem = self.tokens.check(str(properties.get("type", "")), token, self.clock())
        if problem is None:
            self._connection_state(link.connection).authorized = True
            status, description = 202, "Accepted"
        else:
            logger.info("Refused CBS token: %s", problem)
            status, description = 401, problem
        reply = Message(correlation_id=request.id, properties={
            "status-code": int32(status), "status-description": description})
        self._reply(link, CBS_ADDRESS, reply)

    # -- $management ---------------------------------------------------------------------------
    def _management(self, link: Receiver, node: ManagementNode, payload: bytes) -> None:
        request = _decode_request(payload)
        request_properties: dict[str, Any] = dict(request.properties or {})
        operation = str(request_properties.get("operation", ""))
        try:
            status, body = self._operation(node, operation, request.body)
            properties: dict[str, Any] = {"statusCode": int32(status),
                                          "statusDescription": "OK" if status == 200 else "No Content"}
        except BrokerError as error:
            logger.info("Management %s on %s failed: %s", operation, node.path, error.description)
            body = None
            properties = {"statusCode": int32(error.status_code), "statusDescription": error.description,
                          "errorCondition": symbol(error.condition)}
        reply = Message(correlation_id=request.id, properties=properties, body=body)
        self._reply(link, f"{node.path}/$management", reply)

    def _operation(self, node: ManagementNode, operation: str, body: Any) -> tuple[int, Any]:
        request = body if isinstance(body, dict) else {}
        now = self.clock()
        if operation == "com.microsoft:schedule-message":
            sender = _need(node.sender, node, operation)
            messages = []
            for item in _list(request.get("messages"), "messages"):
                if not isinstance(item, dict) or not isinstance(item.get("message"), bytes):
                    raise ArgumentError("Each scheduled message needs a binary 'message'.")
                messages.extend(_incoming_messages(item["message"]))
            numbers = sender.schedule(messages, now)
            return 200, {"sequence-numbers": _array(Data.LONG, numbers)}
        if operation == "com.microsoft:cancel-scheduled-message":
            sender = _need(node.sender, node, operation)
            sender.cancel_scheduled(int(number) for number in _list(request.get("sequence-numbers"),
                                                                      "sequence-numbers"))
            return 200, {}
        entity = _need(node.receiver, node, operation)
        if operation == "com.microsoft:renew-lock":
            tokens = [_uuid(token) for token in _list(request.get("lock-tokens"), "lock-tokens")]
            until = [entity.renew_lock(token, now) for token in tokens]
            return 200, {"expirations": _array(Data.TIMESTAMP, [timestamp(int(when * 1000)) for when in until])}
        if operation == "com.microsoft:peek-message":
            start = int(request.get("from-sequence-number", 1))
            count = int(request.get("message-count", 1))
            peeked = entity.peek(start, max(count, 1), now)
            if not peeked:
                return 204, {}
            return 200, {"messages": [{"message": _render(message, lock_token=None)} for message in peeked]}
        if operation == "com.microsoft:receive-by-sequence-number":
            numbers = [int(number) for number in _list(request.get("sequence-numbers"), "sequence-numbers")]
            peek_lock = int(request.get("receiver-settle-mode", 1)) == 1
            found = entity.receive_deferred(numbers, now, lock=peek_lock)
            items: list[dict[str, Any]] = []
            for message in found:
                items.append({"message": _render(message, lock_token=message.lock_token)})
                if message.lock_token is not None:
                    items[-1]["lock-token"] = message.lock_token
            return 200, {"messages": items}
        if operation == "com.microsoft:update-disposition":
            status = str(request.get("disposition-status", ""))
            for token in (_uuid(value) for value in _list(request.get("lock-tokens"), "lock-tokens")):
                _dispose(entity, token, status, now, request)
            return 200, {}
        raise _NotImplementedOperation(f"Operation {operation!r} is not supported by this stand-in.")

    # -- helpers -------------------------------------------------------------------------------
    def _reply(self, request_link: Link, node: str, message: Message) -> None:
        reply_link = _reply_link(request_link, node)
        if reply_link is None:
            logger.info("No reply link for %s on this connection; dropping the response.", node)
            return
        self._reply_tags += 1
        delivery = reply_link.delivery(_tag(str(self._reply_tags).encode()))
        reply_link.stream(message.encode())
        reply_link.advance()
        delivery.settle()

    @staticmethod
    def _connection_state(connection: Connection) -> _ConnectionState:
        state = getattr(connection, _STATE, None)
        if not isinstance(state, _ConnectionState):
            state = _ConnectionState()
            setattr(connection, _STATE, state)
        return state


class _NotImplementedOperation(BrokerError):
    condition = "amqp:not-implemented"
    status_code = 501


def _dispose(entity: Entity, token: uuid.UUID, status: str, now: float, request: dict[str, Any]) -> None:
    if status == "completed":
        entity.complete(token, now)
    elif status == "abandoned":
        entity.abandon(token, now)
    elif status == "defered":
        entity.defer(token, now)
    elif status == "suspended":
        entity.dead_letter(token, now, reason=_optional_text(request.get("deadletter-reason")),
                           description=_optional_text(request.get("deadletter-description")))
    else:
        raise ArgumentError(f"Unknown disposition-status {status!r}.")


def _incoming_messages(payload: bytes) -> list[IncomingMessage]:
    """The message (or, for a batch envelope, the messages) in a transfer."""
    sections = codec.split_sections(payload)
    batch = codec.split_batch(sections)
    messages = []
    for parts in batch if batch is not None else [sections]:
        facts = codec.read_facts(parts)
        messages.append(IncomingMessage(
            payload=codec.join_sections(parts),
            message_id=facts.message_id,
            time_to_live_seconds=facts.time_to_live_ms / 1000 if facts.time_to_live_ms else None,
            scheduled_enqueue_time=(facts.scheduled_enqueue_time_ms / 1000
                                    if facts.scheduled_enqueue_time_ms is not None else None),
        ))
    return messages


def _render(message: StoredMessage, *, lock_token: uuid.UUID | None) -> bytes:
    extra = None
    if message.dead_letter_reason is not None or message.dead_letter_description is not None:
        extra = {key: value for key, value in ((codec.DEAD_LETTER_REASON, message.dead_letter_reason),
                                               (codec.DEAD_LETTER_DESCRIPTION, message.dead_letter_description))
                 if value is not None}
    return codec.render(
        message.payload,
        sequence_number=message.sequence_number,
        enqueued_time_ms=int(message.enqueued_at * 1000),
        delivery_count=message.delivery_count,
        message_state=int(message.state) if message.state is not MessageState.ACTIVE else 0,
        locked_until_ms=int(message.locked_until * 1000) if lock_token and message.locked_until else None,
        lock_token=lock_token,
        extra_application_properties=extra,
    )


def amqp_error(condition: str, description: str) -> Condition:
    """An AMQP error with all three fields, as Service Bus sends them (info carries a tracking id).

    pyamqp reads the info slot of every error it is given (a rejected transfer, a detach, a
    close) by position; proton leaves a null info out of the encoding, and the client then fails
    with ``IndexError`` instead of raising the error.
    """
    return Condition(condition, description, {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())})


def _condition(error: BrokerError) -> Condition:
    return amqp_error(error.condition, error.description)


def _required(value: _T | None) -> _T:
    """The engine object an event is about (proton types them all as optional)."""
    if value is None:
        raise ValueError("A proton event arrived without the object it is about.")
    return value


def _tag(raw: bytes) -> Any:
    """Delivery tags are binary; proton's type hints say ``str`` but it takes bytes."""
    return raw


def _array(element_type: int, values: list[Any]) -> Array:
    """An AMQP array (what Service Bus answers with for lock expirations and sequence numbers)."""
    return Array(cast("Any", UNDESCRIBED), element_type, *values)


def _read(link: Receiver) -> bytes:
    chunks = []
    while True:
        chunk = link.recv(1024 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_request(payload: bytes) -> Message:
    message = Message()
    try:
        message.decode(payload)
    except Exception as exc:  # proton raises its own MessageException/DataException
        raise CodecError(f"Malformed request message: {exc}") from exc
    message.body = codec.materialize(message.body)
    message.properties = codec.materialize(message.properties)
    return message


def _reply_link(request_link: Link, node: str) -> Sender | None:
    """The client's reply receiver for ``node``: same session first, then the connection."""
    wanted = Namespace.normalize(node)
    candidates: list[Link] = []
    link = request_link.connection.link_head(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
    while link is not None:
        if link.is_sender and Namespace.normalize(link.remote_source.address or "") == wanted:
            candidates.append(link)
        link = link.next(Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE)
    session: Session = request_link.session
    for candidate in candidates:
        if candidate.session == session:
            return cast("Sender", candidate)
    return cast("Sender", candidates[0]) if candidates else None


def _has_session_filter(link: Link) -> bool:
    data = link.remote_source.filter
    data.rewind()
    if not data.next():
        return False
    filters = data.get_object()
    return isinstance(filters, dict) and any("session-filter" in str(key) for key in filters)


def _condition_info(condition: Condition | None) -> dict[str, str]:
    if condition is None or not isinstance(condition.info, dict):
        return {}
    return {str(key): str(value) for key, value in condition.info.items() if value is not None}


def _need(side: Any, node: ManagementNode, operation: str) -> Any:
    if side is None:
        raise NotAllowedError(f"Operation {operation!r} is not valid on '{node.path}'.")
    return side


def _list(value: Any, name: str) -> list[Any]:
    if isinstance(value, Array):
        return list(value.elements)
    if isinstance(value, list | tuple):
        return list(value)
    raise ArgumentError(f"The management request needs a list '{name}'.")


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise ArgumentError(f"{value!r} is not a lock token.") from exc


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)
