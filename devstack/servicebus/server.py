"""Sockets and the event-loop thread: one proton engine per TCP connection, one model for all.

The loop owns the listening socket, every connection's proton ``Transport``/``Connection`` and
the model, so nothing needs locking; other threads (``reset``, ``stop``) hand it work through a
wake-up socket and wait for the answer. A connection whose bytes are not AMQP, or whose handling
raises, is closed on its own; the loop keeps serving everyone else.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import queue
import secrets
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from proton import Collector, Connection, Transport

from devstack.servicebus.errors import CONNECTION_FORCED, INTERNAL_ERROR
from devstack.servicebus.frames import DeliveryIdTranslator
from devstack.servicebus.models import Namespace
from devstack.servicebus.routes import Router, TokenValidator, amqp_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from devstack.servicebus.config import QueueConfig, TopicConfig

logger = logging.getLogger(__name__)

KEY_NAME = "devstack"
MAX_FRAME_SIZE = 256 * 1024
READ_CHUNK = 64 * 1024
MAX_WAIT_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 5.0
_T = TypeVar("_T")


class _PlainWire:
    """A connection's bytes as the socket carries them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.wants_write = False

    def recv(self, size: int) -> bytes:
        """What arrived (b"" once the peer closed); :class:`BlockingIOError` when nothing did."""
        return self.sock.recv(size)

    def send(self, data: bytes | bytearray) -> int:
        return self.sock.send(data)

    def flush(self) -> None:
        return None


class _TlsWire:
    """A connection's bytes through TLS, ended here (``amqps`` on port 5671, as Service Bus takes a
    client that signs in with a token): the engine and the frame translator see plain AMQP."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshaken = False
        self._closed = False
        self._unsent = bytearray()

    @property
    def wants_write(self) -> bool:
        return bool(self._unsent)

    def recv(self, size: int) -> bytes:
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            data = None
        if data == b"":
            self._closed = True
            self._incoming.write_eof()
        elif data:
            self._incoming.write(data)
        plain = bytearray()
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
            while True:
                chunk = self._tls.read(READ_CHUNK)
                if not chunk:
                    self._closed = True
                    break
                plain += chunk
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._closed = True
        self.flush()
        if plain:
            return bytes(plain)
        if self._closed:
            return b""
        raise BlockingIOError

    def send(self, data: bytes | bytearray) -> int:
        if not self._handshaken:
            raise BlockingIOError  # the engine's bytes wait for the handshake
        self._tls.write(bytes(data))
        self.flush()
        return len(data)

    def flush(self) -> None:
        """Send what TLS produced; what the socket cannot take yet waits for the next write event."""
        self._unsent += self._outgoing.read()
        while self._unsent:
            try:
                sent = self.sock.send(self._unsent)
            except (BlockingIOError, InterruptedError):
                return
            del self._unsent[:sent]


class _Channel:
    """One accepted TCP connection and its proton engine.

    Bytes pass through a :class:`DeliveryIdTranslator` each way; what the engine or the socket
    cannot take yet waits in ``to_engine`` / ``to_socket``.
    """

    def __init__(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        self.sock = sock
        self.wire: _PlainWire | _TlsWire = _TlsWire(sock, tls) if tls is not None else _PlainWire(sock)
        self.frames = DeliveryIdTranslator(MAX_FRAME_SIZE)
        self.to_engine = bytearray()
        self.to_socket = bytearray()
        self.client_finished = False  # the client closed its side; close the engine's tail once fed
        self.connection = Connection()
        self.transport = Transport(Transport.SERVER)
        self.transport.max_frame_size = MAX_FRAME_SIZE
        sasl = self.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        sasl.allow_insecure_mechs = True
        self.transport.bind(self.connection)
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.events = 0
        self.failed = False
        self.deadline = 0.0

    def read(self) -> None:
        self.feed()
        capacity = self.transport.capacity()
        if capacity <= 0 or self.to_engine or self.client_finished:
            return
        try:
            data = self.wire.recv(min(capacity, READ_CHUNK))
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ssl.SSLError):
            data = b""
        if data:
            self.to_engine += self.frames.inbound(data)
        else:
            self.to_engine += self.frames.inbound_rest()
            self.client_finished = True
        self.feed()

    def feed(self) -> None:
        """Push what the engine has room for; close its tail once the client's last bytes are in."""
        capacity = self.transport.capacity()
        if self.to_engine and capacity > 0:
            chunk = bytes(self.to_engine[:capacity])
            del self.to_engine[:len(chunk)]
            try:
                self.transport.push(chunk)
            except Exception:  # proton raises TransportException on bytes it cannot take
                logger.debug("Closing a connection that sent bytes proton refused.", exc_info=True)
                self.to_engine.clear()
                self.client_finished = True
        if self.client_finished and (not self.to_engine or capacity < 0) and self.transport.capacity() >= 0:
            self.to_engine.clear()
            self.transport.close_tail()

    def write(self) -> None:
        pending = self.transport.pending()
        if pending > 0:
            data = self.transport.peek(pending) or b""
            self.transport.pop(len(data))
            self.to_socket += self.frames.outbound(data)
        elif pending < 0:
            self.to_socket += self.frames.outbound_rest()
        try:
            self.wire.flush()
            while self.to_socket:
                sent = self.wire.send(self.to_socket)
                del self.to_socket[:sent]
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ssl.SSLError):
            self.to_socket.clear()
            self.transport.close_head()

    def process(self, router: Router) -> None:
        while True:
            event = self.collector.peek()
            if event is None:
                return
            try:
                event.dispatch(router)
            finally:
                self.collector.pop()

    def fail(self, error: BaseException) -> None:
        """Close this connection with an error the client can see; abort it if that fails too."""
        if self.failed:
            self.abort()
            return
        self.failed = True
        try:
            self.connection.condition = amqp_error(INTERNAL_ERROR, f"The broker failed: {error}")
            self.connection.close()
        except Exception:  # noqa: BLE001 - any failure here means the engine is unusable
            self.abort()

    def abort(self) -> None:
        self.to_engine.clear()
        self.to_socket.clear()
        with contextlib.suppress(Exception):
            self.transport.close_tail()
        with contextlib.suppress(Exception):
            self.transport.close_head()

    @property
    def done(self) -> bool:
        pending = self.transport.pending()
        finished = pending < 0 or (self.transport.capacity() < 0 and pending == 0)
        return finished and not self.to_socket and not self.wire.wants_write

    @property
    def waiting_to_feed(self) -> bool:
        """Bytes for the engine that need no socket event to be pushed."""
        return bool(self.to_engine) and self.transport.capacity() > 0

    def wanted_events(self) -> int:
        events = 0
        if self.transport.capacity() > 0 and not self.to_engine and not self.client_finished:
            events |= selectors.EVENT_READ
        if self.transport.pending() > 0 or self.to_socket or self.wire.wants_write:
            events |= selectors.EVENT_WRITE
        return events


class BrokerServer:
    """The listening socket and the loop thread; :class:`RunningBroker` is its public face."""

    def __init__(self, namespace: Namespace, *, host: str, port: int, key: str,
                 tls: tuple[socket.socket, ssl.SSLContext] | None = None) -> None:
        self.namespace = namespace
        self.router = Router(namespace, TokenValidator(KEY_NAME, key))
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.setblocking(False)
        self.host = host
        self.port = int(self._listener.getsockname()[1])
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._tls_listener: socket.socket | None = tls[0] if tls is not None else None
        self._tls: ssl.SSLContext | None = tls[1] if tls is not None else None
        if self._tls_listener is not None:
            self._tls_listener.setblocking(False)
            self._selector.register(self._tls_listener, selectors.EVENT_READ, "tls-listener")
        self._selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
        self._channels: dict[socket.socket, _Channel] = {}
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"servicebus-broker-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call(self, function: Callable[[], _T], timeout: float = STOP_TIMEOUT_SECONDS) -> _T:
        """Run ``function`` on the loop thread and return its result."""
        if not self._thread.is_alive():
            return function()
        future: Future[_T] = Future()
        self._calls.put((function, future))
        self._wake()
        return future.result(timeout=timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            self._close_all()
            return
        self._running = False
        self._wake()
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)

    # -- loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._running:
                try:
                    self._iteration()
                except Exception:  # the loop must outlive any single bad event
                    logger.exception("Service Bus broker loop iteration failed; continuing.")
                    time.sleep(0.01)
        finally:
            self._close_all()

    def _iteration(self) -> None:
        ready = self._selector.select(self._timeout())
        for key, mask in ready:
            if key.data == "listener":
                self._accept(self._listener, None)
            elif key.data == "tls-listener" and self._tls_listener is not None:
                self._accept(self._tls_listener, self._tls)
            elif key.data == "wake":
                self._drain_wake()
            elif isinstance(key.data, _Channel) and key.data.sock in self._channels:
                channel = key.data
                if mask & selectors.EVENT_READ:
                    self._guard(channel, channel.read)
                if mask & selectors.EVENT_WRITE:
                    self._guard(channel, channel.write)
        self._run_calls()
        self.namespace.advance(time.time())
        for channel in list(self._channels.values()):
            self._guard(channel, channel.feed)
            self._guard(channel, functools.partial(channel.process, self.router))
        self._guard_pump()
        now = time.monotonic()
        for channel in list(self._channels.values()):
            self._guard(channel, functools.partial(channel.process, self.router))
            self._guard(channel, channel.write)
            try:
                channel.deadline = channel.transport.tick(now)
            except Exception:  # noqa: BLE001 - a transport that cannot tick is finished
                channel.abort()
            self._refresh(channel)

    def _guard(self, channel: _Channel, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as error:
            logger.warning("Closing an AMQP connection after an error in the broker.", exc_info=True)
            channel.fail(error)

    def _guard_pump(self) -> None:
        try:
            self.router.pump(channel.connection for channel in self._channels.values()
                             if not channel.failed)
        except Exception:
            logger.exception("Handing messages to receivers failed.")

    def _timeout(self) -> float:
        wait = MAX_WAIT_SECONDS
        deadline = self.namespace.next_deadline()
        if deadline is not None:
            wait = min(wait, deadline - time.time())
        now = time.monotonic()
        for channel in self._channels.values():
            if channel.waiting_to_feed:
                return 0.0
            if channel.deadline:
                wait = min(wait, channel.deadline - now)
        return max(wait, 0.0)

    def _accept(self, listener: socket.socket, tls: ssl.SSLContext | None) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                logger.warning("accept() failed", exc_info=True)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                channel = _Channel(sock, tls)
            except Exception:
                logger.exception("Could not set up an AMQP engine for a new connection.")
                sock.close()
                continue
            self._channels[sock] = channel
            channel.events = selectors.EVENT_READ
            self._selector.register(sock, channel.events, channel)

    def _refresh(self, channel: _Channel) -> None:
        if channel.done:
            self._drop(channel)
            return
        events = channel.wanted_events()
        if events == channel.events:
            return
        if channel.events and events:
            self._selector.modify(channel.sock, events, channel)
        elif events:
            self._selector.register(channel.sock, events, channel)
        else:
            self._selector.unregister(channel.sock)
        channel.events = events

    def _drop(self, channel: _Channel) -> None:
        self._channels.pop(channel.sock, None)
        if channel.events:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(channel.sock)
        channel.events = 0
        with contextlib.suppress(OSError):
            channel.sock.close()
        with contextlib.suppress(Exception):
            channel.transport.unbind()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            while self._wake_reader.recv(4096):
                pass

    def _run_calls(self) -> None:
        while True:
            try:
                function, future = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(function())
            except Exception as error:  # noqa: BLE001 - handed to the calling thread, which re-raises it
                future.set_exception(error)

    def _close_all(self) -> None:
        for channel in list(self._channels.values()):
            with contextlib.suppress(Exception):  # best effort: tell clients before hanging up
                channel.connection.condition = amqp_error(CONNECTION_FORCED, "The broker is shutting down.")
                channel.connection.close()
                channel.write()
            self._drop(channel)
        for sock in (self._listener, self._tls_listener, self._wake_reader, self._wake_writer):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(Exception):
            self._selector.close()


class RunningBroker:
    """A broker serving on ``host:port`` in a daemon thread; use :func:`start_broker`."""

    def __init__(self, server: BrokerServer, key: str, fully_qualified_namespace: str = "") -> None:
        self._server = server
        self.host = server.host
        self.port = server.port
        self.connection_string = (f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={KEY_NAME};"
                                  f"SharedAccessKey={key};UseDevelopmentEmulator=true")
        #: Where a client that signs in with a token reaches the broker, as in Azure: ``amqps`` on
        #: port 5671 of this address ('' when the broker was started without TLS).
        self.fully_qualified_namespace = fully_qualified_namespace

    def call(self, function: Callable[[Namespace], _T]) -> _T:
        """Run ``function(namespace)`` on the broker thread: the safe way to inspect the model."""
        namespace = self._server.namespace
        return self._server.call(lambda: function(namespace))

    def reset(self) -> None:
        """Drop every message, lock, scheduled message and duplicate-detection record; keep entities."""
        self._server.call(lambda: self._server.namespace.reset())

    def stop(self) -> None:
        """Close every connection and the listening socket; safe to call twice."""
        self._server.stop()


def start_broker(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    queues: Iterable[QueueConfig] = (),
    topics: Iterable[TopicConfig] = (),
    tls: Callable[[str], ssl.SSLContext] | None = None,
) -> RunningBroker:
    """Start a broker; it is accepting connections when this returns.

    With ``tls`` (a server context for an address), it also takes ``amqps`` on port 5671, as
    Service Bus does, of a loopback address of its own (``127.0.0.x``: the SDK drops the port of a
    namespace it reaches over TLS, so each broker needs an address where 5671 is free); clients
    that sign in with a token from the local-stack identity use it as their fully qualified
    namespace, and trust the stack's CA through ``SSL_CERT_FILE``.

    Raises
    ------
    ValueError
        The entity configuration is invalid (see :func:`validate_entities`).
    OSError
        The address cannot be bound.
    """
    from devstack.servicebus.config import validate_entities

    queue_list, topic_list = list(queues), list(topics)
    validate_entities(queue_list, topic_list)
    key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    secure: tuple[socket.socket, ssl.SSLContext] | None = None
    namespace_host = ""
    if tls is not None:
        listener = _tls_listener()
        namespace_host = listener.getsockname()[0]
        secure = (listener, tls(namespace_host))
    server = BrokerServer(Namespace(queue_list, topic_list), host=host, port=port, key=key, tls=secure)
    server.start()
    return RunningBroker(server, key, namespace_host)


#: Service Bus's AMQP-over-TLS port, which the SDK uses for a namespace it signs in to with a token.
AMQPS_PORT = 5671


def _tls_listener() -> socket.socket:
    """A socket listening on port 5671 of a loopback address nobody uses it on yet."""
    import random

    candidates = list(range(2, 255))
    random.shuffle(candidates)
    for last in candidates:
        try:
            return socket.create_server((f"127.0.0.{last}", AMQPS_PORT), backlog=128)
        except OSError:
            continue
    raise OSError("no loopback address has port 5671 free for the broker's TLS listener")
