"""The AMQP frames between a client's socket and proton: delivery ids as Service Bus takes them.

pyamqp, azure-servicebus's AMQP stack, numbers the transfers of a session from a counter that
threads share without a lock. When several threads send on one connection at once (an
``AutoLockRenewer`` renewing many locks over ``$management``, a host settling with
``maxConcurrentCalls`` above one), two transfers can leave with the same ``delivery-id``, or an id
can be skipped. Service Bus keeps such a connection; proton's engine closes it ("sequencing
error, expected delivery-id 3, got 2") and every later settlement fails.

:class:`DeliveryIdTranslator` sits on one connection's byte streams and fixes what proton would
reject, without touching anything else:

* inbound (client to broker), the delivery ids of new transfers are renumbered to the sequence
  proton expects, per session; frames of a delivery still arriving keep its id;
* outbound (broker to client), a disposition for renumbered deliveries is mapped back to the ids
  the client used (one frame per run of consecutive ids), so each delivery still gets its
  outcome; two deliveries the client sent with one id share the first outcome, as they would
  with any peer;
* outbound, an error proton writes itself (a close for a framing error, say) gets the info
  field it leaves out when empty, which pyamqp reads by position (see ``routes.amqp_error``).

While a client's ids are in order, every frame goes through byte for byte. Bytes that are not
AMQP frames (or frames larger than the broker accepts) go through untouched from there on, so
proton still judges malformed input itself. Session flow windows are 2^31 here, so the
``next-incoming-id`` proton reports in renumbered ids, a few off the client's, never stalls it.
"""

from __future__ import annotations

import logging
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from proton import Data, DataException, Described, symbol, uint, ulong

logger = logging.getLogger(__name__)

PROTOCOL_HEADER_PREFIX = b"AMQP"
PROTOCOL_HEADER_SIZE = 8
FRAME_HEADER_SIZE = 8
AMQP_FRAME = 0x00
# Performative descriptor codes (AMQP 1.0, section 2.7).
BEGIN, TRANSFER, DISPOSITION, DETACH, END, CLOSE = 0x11, 0x14, 0x15, 0x16, 0x17, 0x18
ERROR = 0x1D
_SYMBOLIC_PERFORMATIVES = {"amqp:begin:list": BEGIN, "amqp:transfer:list": TRANSFER,
                           "amqp:disposition:list": DISPOSITION, "amqp:detach:list": DETACH,
                           "amqp:end:list": END, "amqp:close:list": CLOSE}
# Where the error sits in each performative that can carry one.
_ERROR_FIELD = {DETACH: 2, END: 0, CLOSE: 0}
_SEQUENCE_MODULUS = 2**32
_TRACKING_ID = symbol("com.microsoft:tracking-id")


@dataclass
class _Frame:
    """One AMQP frame: its header fields and its performative (decoded) with any payload."""

    channel: int
    extended_header: bytes
    code: int
    fields: list[Any]
    payload: bytes

    def encode(self) -> bytes:
        data = Data()
        data.put_object(Described(ulong(self.code), self.fields))
        body = bytes(data.encode()) + self.payload
        doff = (FRAME_HEADER_SIZE + len(self.extended_header)) // 4
        header = struct.pack(">IBBH", FRAME_HEADER_SIZE + len(self.extended_header) + len(body), doff,
                             AMQP_FRAME, self.channel)
        return header + self.extended_header + body

    def field(self, index: int) -> Any:
        return self.fields[index] if index < len(self.fields) else None

    def set_field(self, index: int, value: Any) -> None:
        while len(self.fields) <= index:
            self.fields.append(None)
        self.fields[index] = value


@dataclass
class _Session:
    """Delivery ids of one session the client began, as proton numbers them and as the client did."""

    next_id: int
    client_ids: dict[int, int] = field(default_factory=dict)  # proton's id -> the client's, where they differ
    arriving: dict[int, int] = field(default_factory=dict)  # link handle -> proton's id of a partial delivery
    renumbered: bool = False


class _FrameReader:
    """Cuts a byte stream into protocol headers and frames; hands back what it cannot parse."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.buffer = bytearray()
        self.opaque = False  # set once the stream stopped looking like AMQP

    def feed(self, data: bytes) -> list[bytes]:
        """The complete units (headers, frames) now available; in opaque mode, the raw bytes."""
        self.buffer += data
        buffer, position = self.buffer, 0
        units: list[bytes] = []
        while position < len(buffer) and not self.opaque:
            head = bytes(buffer[position:position + 4])
            if PROTOCOL_HEADER_PREFIX.startswith(head):
                if len(buffer) - position < PROTOCOL_HEADER_SIZE:
                    break
                units.append(bytes(buffer[position:position + PROTOCOL_HEADER_SIZE]))
                position += PROTOCOL_HEADER_SIZE
                continue
            if len(buffer) - position < FRAME_HEADER_SIZE:
                break
            size, doff = struct.unpack_from(">IB", buffer, position)
            if size < FRAME_HEADER_SIZE or size > self.max_frame_size or doff < 2 or doff * 4 > size:
                self.opaque = True
                break
            if len(buffer) - position < size:
                break
            units.append(bytes(buffer[position:position + size]))
            position += size
        if self.opaque and position < len(buffer):
            units.append(bytes(buffer[position:]))
            position = len(buffer)
        del buffer[:position]
        return units

    def flush(self) -> bytes:
        """Whatever is held back (an incomplete frame at the end of the stream)."""
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest


def _performative_code(body: bytes) -> int | None:
    """The descriptor code of a frame body, read from its first bytes when it is a small ulong."""
    if len(body) >= 3 and body[0] == 0x00 and body[1] == 0x53:  # described, smallulong
        return body[2]
    if len(body) >= 10 and body[0] == 0x00 and body[1] == 0x80:  # described, ulong
        return int.from_bytes(body[2:10], "big")
    return None


def _materialize(value: Any) -> Any:
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, Described):
        return Described(_materialize(value.descriptor), _materialize(value.value))
    if isinstance(value, list):
        return [_materialize(item) for item in value]
    if isinstance(value, dict):
        return {_materialize(key): _materialize(item) for key, item in value.items()}
    return value


def _decode(unit: bytes, wanted: frozenset[int]) -> _Frame | None:
    """The frame in ``unit`` when it is an AMQP frame with one of the ``wanted`` performatives."""
    if len(unit) < FRAME_HEADER_SIZE or unit[:4] == PROTOCOL_HEADER_PREFIX:
        return None
    _, doff, frame_type, channel = struct.unpack_from(">IBBH", unit)
    if frame_type != AMQP_FRAME:
        return None
    body = unit[doff * 4:]
    if not body:  # an empty frame: a heartbeat
        return None
    code = _performative_code(body)
    if code is not None and code not in wanted:
        return None
    data = Data()
    try:
        consumed = data.decode(body)
        data.rewind()
        data.next()
        performative = _materialize(data.get_object())
    except (DataException, ValueError, TypeError, KeyError):
        return None
    if not isinstance(performative, Described) or not isinstance(performative.value, list):
        return None
    descriptor = performative.descriptor
    if isinstance(descriptor, symbol):
        code = _SYMBOLIC_PERFORMATIVES.get(str(descriptor))
    elif isinstance(descriptor, int):
        code = int(descriptor)
    else:
        return None
    if code not in wanted:
        return None
    return _Frame(channel, unit[FRAME_HEADER_SIZE:doff * 4], code, list(performative.value), body[consumed:])


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted, de-duplicated ``ids`` as ``(first, last)`` runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for value in sorted(set(ids)):
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


class DeliveryIdTranslator:
    """Both directions of one connection; see the module docstring for what it changes and why."""

    _INBOUND = frozenset({BEGIN, TRANSFER, END})
    _OUTBOUND = frozenset({BEGIN, DISPOSITION, DETACH, END, CLOSE})

    def __init__(self, max_frame_size: int) -> None:
        self._inbound = _FrameReader(max_frame_size)
        self._outbound = _FrameReader(2**32 - 1)  # proton writes frames up to the client's limit
        self._sessions: dict[int, _Session] = {}  # by the client's channel
        self._client_channels: dict[int, int] = {}  # the broker's channel -> the client's

    # -- client to broker ----------------------------------------------------------------------
    def inbound(self, data: bytes) -> bytes:
        return b"".join(self._inbound_unit(unit) for unit in self._inbound.feed(data))

    def inbound_rest(self) -> bytes:
        return self._inbound.flush()

    def _inbound_unit(self, unit: bytes) -> bytes:
        if self._inbound.opaque:
            return unit
        frame = _decode(unit, self._INBOUND)
        if frame is None:
            return unit
        if frame.code == BEGIN:
            next_outgoing_id = frame.field(1)
            if isinstance(next_outgoing_id, int):
                self._sessions[frame.channel] = _Session(int(next_outgoing_id))
            return unit
        if frame.code == END:
            self._sessions.pop(frame.channel, None)
            return unit
        session = self._sessions.get(frame.channel)
        handle, client_id = frame.field(0), frame.field(1)
        if session is None or not isinstance(handle, int):
            return unit
        more, aborted, settled = bool(frame.field(5)), bool(frame.field(9)), bool(frame.field(4))
        if handle in session.arriving:  # a further frame of a delivery already numbered
            proton_id = session.arriving[handle]
            if not more or aborted:
                del session.arriving[handle]
            if settled:
                session.client_ids.pop(proton_id, None)
            if client_id is None or int(client_id) == proton_id:
                return unit
        else:
            if not isinstance(client_id, int):
                return unit  # proton refuses a new delivery without an id itself
            proton_id = session.next_id
            session.next_id = (session.next_id + 1) % _SEQUENCE_MODULUS
            if more and not aborted:
                session.arriving[int(handle)] = proton_id
            if int(client_id) == proton_id:
                return unit
            if not session.renumbered:
                session.renumbered = True
                logger.info("A client sent delivery-id %d where %d comes next on channel %d (concurrent "
                            "sends); renumbering that session's deliveries.", client_id, proton_id, frame.channel)
            if not settled:
                session.client_ids[proton_id] = int(client_id)
        frame.set_field(1, uint(proton_id))
        return frame.encode()

    # -- broker to client ----------------------------------------------------------------------
    def outbound(self, data: bytes) -> bytes:
        return b"".join(self._outbound_unit(unit) for unit in self._outbound.feed(data))

    def outbound_rest(self) -> bytes:
        return self._outbound.flush()

    def _outbound_unit(self, unit: bytes) -> bytes:
        if self._outbound.opaque:
            return unit
        frame = _decode(unit, self._OUTBOUND)
        if frame is None:
            return unit
        if frame.code == BEGIN:
            remote_channel = frame.field(0)
            if isinstance(remote_channel, int):
                self._client_channels[frame.channel] = int(remote_channel)
            return unit
        if frame.code == DISPOSITION:
            return self._disposition(frame, unit)
        return self._complete_error(frame, unit)

    def _disposition(self, frame: _Frame, unit: bytes) -> bytes:
        """Map a disposition the broker sends as receiver back to the client's delivery ids."""
        role_is_receiver, first = frame.field(0), frame.field(1)
        session = self._sessions.get(self._client_channels.get(frame.channel, -1))
        if not role_is_receiver or session is None or not session.client_ids or not isinstance(first, int):
            return unit
        last = frame.field(2)
        last = int(last) if isinstance(last, int) else int(first)
        span = (last - int(first)) % _SEQUENCE_MODULUS
        proton_ids = [(int(first) + offset) % _SEQUENCE_MODULUS for offset in range(span + 1)]
        client_ids = [session.client_ids.get(proton_id, proton_id) for proton_id in proton_ids]
        if frame.field(3):  # settled: the client hears nothing more about these
            for proton_id in proton_ids:
                session.client_ids.pop(proton_id, None)
        if client_ids == proton_ids:
            return unit
        frames = []
        for run_first, run_last in _runs(client_ids):
            frame.set_field(1, uint(run_first))
            frame.set_field(2, uint(run_last))
            frames.append(frame.encode())
        return b"".join(frames)

    @staticmethod
    def _complete_error(frame: _Frame, unit: bytes) -> bytes:
        """Give an error proton wrote without info the info field pyamqp expects."""
        index = _ERROR_FIELD[frame.code]
        error = frame.field(index)
        if not isinstance(error, Described) or not isinstance(error.value, list):
            return unit
        fields = list(error.value)
        if len(fields) >= 3 and fields[2] is not None:
            return unit
        fields += [None] * (3 - len(fields))
        fields[2] = {_TRACKING_ID: str(uuid.uuid4())}
        frame.set_field(index, Described(ulong(ERROR), fields))
        return frame.encode()
