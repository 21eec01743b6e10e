"""AMQP 1.0 message sections: split what senders transfer, rewrite what receivers get.

The broker stores each message as the bytes the sender encoded and only rewrites the sections
Service Bus owns on the way out: the header (``delivery-count``), delivery annotations
(``x-opt-lock-token``), message annotations (``x-opt-sequence-number``, ``x-opt-enqueued-time``,
``x-opt-locked-until``, ``x-opt-message-state``) and, for dead-lettered messages, the
``DeadLetterReason``/``DeadLetterErrorDescription`` application properties. Everything else
(properties, application properties, body, footer) goes back byte for byte, so no field the
sender set can be lost by a decode/encode round trip.

Values are decoded and encoded with proton's ``Data`` (one described value per section).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proton import Array, Data, DataException, Described, symbol, timestamp, uint, ulong

from devstack.servicebus.errors import CodecError

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterable

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78
BODY_CODES = frozenset({DATA, AMQP_SEQUENCE, AMQP_VALUE})

_SYMBOLIC_DESCRIPTORS = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}

# Annotations the broker sets on every delivery; a sender's own values for them are dropped.
SEQUENCE_NUMBER = "x-opt-sequence-number"
ENQUEUED_TIME = "x-opt-enqueued-time"
LOCKED_UNTIL = "x-opt-locked-until"
LOCK_TOKEN = "x-opt-lock-token"
MESSAGE_STATE = "x-opt-message-state"
SCHEDULED_ENQUEUE_TIME = "x-opt-scheduled-enqueue-time"
_BROKER_ANNOTATIONS = frozenset({SEQUENCE_NUMBER, ENQUEUED_TIME, LOCKED_UNTIL, LOCK_TOKEN, MESSAGE_STATE,
                                 "x-opt-enqueue-sequence-number"})
DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"


@dataclass(frozen=True)
class Section:
    """One message section: its descriptor code and its exact encoded bytes."""

    code: int
    raw: bytes

    def value(self) -> Any:
        """The section's value (the list, map or body inside the descriptor)."""
        data = Data()
        data.decode(self.raw)
        data.rewind()
        data.next()
        described = materialize(data.get_object())
        return described.value if isinstance(described, Described) else described


@dataclass(frozen=True)
class MessageFacts:
    """What the broker needs to know about an incoming message to store and route it."""

    message_id: str | None
    time_to_live_ms: int | None
    scheduled_enqueue_time_ms: int | None


def materialize(value: Any) -> Any:
    """Copy proton's zero-copy ``memoryview`` binaries to ``bytes`` before their ``Data`` is freed."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, Described):
        return Described(materialize(value.descriptor), materialize(value.value))
    if isinstance(value, Array):
        return Array(value.descriptor, value.type, *(materialize(item) for item in value.elements))
    if isinstance(value, dict):
        return {materialize(key): materialize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [materialize(item) for item in value]
    return value


def split_sections(payload: bytes) -> list[Section]:
    """Cut an encoded message into its sections.

    Raises
    ------
    CodecError
        The bytes are not a sequence of described AMQP message sections.
    """
    sections: list[Section] = []
    view = memoryview(payload)
    position = 0
    while position < len(payload):
        data = Data()
        try:
            consumed = data.decode(bytes(view[position:]))
            code = _section_code(data)
        except (DataException, ValueError, TypeError, KeyError) as exc:
            raise CodecError(f"Malformed message section at byte {position}: {exc}") from exc
        if consumed <= 0:
            raise CodecError(f"Empty message section at byte {position}.")
        sections.append(Section(code, bytes(view[position:position + consumed])))
        position += consumed
    if not sections:
        raise CodecError("Empty message.")
    return sections


def split_batch(sections: list[Section]) -> list[list[Section]] | None:
    """The messages inside a batch envelope, or ``None`` when ``sections`` is a plain message.

    A batch (message format 0x80013700) carries one data section per message, each holding a
    complete encoded message. The transfer's message format is not visible through proton's
    Python API, so the envelope is recognised by that shape instead.
    """
    bodies = [section for section in sections if section.code in BODY_CODES]
    if not bodies or any(section.code != DATA for section in bodies):
        return None
    inner: list[list[Section]] = []
    for body in bodies:
        content = body.value()
        if not isinstance(content, bytes) or not content:
            return None
        try:
            parts = split_sections(content)
        except CodecError:
            return None
        if not any(part.code in BODY_CODES for part in parts):
            return None
        inner.append(parts)
    return inner


def read_facts(sections: list[Section]) -> MessageFacts:
    """Pull the message id, time to live and scheduled enqueue time out of a message."""
    message_id: str | None = None
    ttl: int | None = None
    scheduled: int | None = None
    for section in sections:
        if section.code == PROPERTIES:
            fields = _as_list(section.value())
            if fields and fields[0] is not None:
                message_id = _text(fields[0])
        elif section.code == HEADER:
            fields = _as_list(section.value())
            if len(fields) > 2 and isinstance(fields[2], int) and fields[2] > 0:
                ttl = int(fields[2])
        elif section.code == MESSAGE_ANNOTATIONS:
            value = _as_map(section.value()).get(symbol(SCHEDULED_ENQUEUE_TIME))
            if isinstance(value, int) and not isinstance(value, bool):
                scheduled = int(value)
    return MessageFacts(message_id=message_id, time_to_live_ms=ttl, scheduled_enqueue_time_ms=scheduled)


def join_sections(sections: Iterable[Section]) -> bytes:
    """The encoded message made of ``sections``."""
    return b"".join(section.raw for section in sections)


def render(
    payload: bytes,
    *,
    sequence_number: int,
    enqueued_time_ms: int,
    delivery_count: int,
    message_state: int,
    locked_until_ms: int | None = None,
    lock_token: uuid.UUID | None = None,
    extra_application_properties: dict[str, str] | None = None,
) -> bytes:
    """Re-encode a stored message as Service Bus delivers it (to a receiver or in a mgmt reply)."""
    sections = split_sections(payload)
    by_code: dict[int, Section] = {}
    rest: list[Section] = []
    for section in sections:
        if section.code in (HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, APPLICATION_PROPERTIES):
            by_code[section.code] = section
        else:
            rest.append(section)

    header = _as_list(by_code[HEADER].value()) if HEADER in by_code else []
    header = [*header, *([None] * (5 - len(header)))][:5]
    header[4] = uint(delivery_count)
    out = [_encode(Described(ulong(HEADER), header))]

    if lock_token is not None:
        out.append(_encode(Described(ulong(DELIVERY_ANNOTATIONS), {symbol(LOCK_TOKEN): _any(lock_token)})))

    annotations = _as_map(by_code[MESSAGE_ANNOTATIONS].value()) if MESSAGE_ANNOTATIONS in by_code else {}
    annotations = {key: value for key, value in annotations.items() if str(key) not in _BROKER_ANNOTATIONS}
    annotations[symbol(SEQUENCE_NUMBER)] = sequence_number
    annotations[symbol(ENQUEUED_TIME)] = timestamp(enqueued_time_ms)
    if locked_until_ms is not None:
        annotations[symbol(LOCKED_UNTIL)] = timestamp(locked_until_ms)
    if message_state:
        annotations[symbol(MESSAGE_STATE)] = message_state
    out.append(_encode(Described(ulong(MESSAGE_ANNOTATIONS), annotations)))

    out.extend(section.raw for section in rest if section.code == PROPERTIES)
    if extra_application_properties is not None:
        out.append(_application_properties(by_code.get(APPLICATION_PROPERTIES), extra_application_properties))
    elif APPLICATION_PROPERTIES in by_code:
        out.append(by_code[APPLICATION_PROPERTIES].raw)
    out.extend(section.raw for section in rest if section.code != PROPERTIES)
    return b"".join(out)


def _application_properties(section: Section | None, extra: dict[str, str]) -> bytes:
    properties = _as_map(section.value()) if section is not None else {}
    properties.update(extra)
    return _encode(Described(ulong(APPLICATION_PROPERTIES), properties))


def _section_code(data: Data) -> int:
    data.rewind()
    if not data.next() or data.type() != Data.DESCRIBED:
        raise ValueError("not a described value")
    data.enter()
    data.next()
    descriptor = data.get_object()
    data.exit()
    if isinstance(descriptor, symbol | str):
        code = _SYMBOLIC_DESCRIPTORS.get(str(descriptor))
        if code is None:
            raise ValueError(f"unknown section {descriptor!r}")
        return code
    if isinstance(descriptor, int) and HEADER <= descriptor <= FOOTER:
        return int(descriptor)
    raise ValueError(f"unknown section descriptor {descriptor!r}")


def _encode(value: Any) -> bytes:
    data = Data()
    data.put_object(value)
    return bytes(data.encode())


def _any(value: Any) -> Any:
    """Values proton encodes natively but its type hints do not list (``uuid.UUID``)."""
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _as_map(value: Any) -> dict[Any, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
