"""A small local host for the Function App: a development tool, not the Azure Functions host.

The Functions host cannot be installed on these machines, so this runner indexes ``function_app``
the way the worker does (``app.get_functions()``) and feeds each function from the local stack:

* Service Bus queue triggers: peek-lock receive from the broker; complete on success, abandon on
  an exception (the queue's ``maxDeliveryCount`` then dead-letters), with lock renewal and
  ``maxConcurrentCalls`` taken from host.json.
* Timer triggers: fired on their NCRONTAB schedule (six fields, seconds first).
* HTTP triggers: served under ``/api`` on a local port, over HTTPS when given a certificate (the
  stack's, trusted through ``REQUESTS_CA_BUNDLE``). Function keys are checked as the host checks
  them: a route whose auth level is not ``anonymous`` needs the key in the ``x-functions-key``
  header or the ``code`` query parameter, and answers 401 without it. The key is generated at
  start unless one is given.
* Event Grid triggers: the host's webhook, ``/runtime/webhooks/eventgrid?functionName=<name>``, on
  the same port (:mod:`devstack.runner_eventgrid`).

When the broker goes away (``devstack down`` under a running host) each queue trigger says so once
and reconnects quietly with backoff. :meth:`LocalHost.stop` returns at once when asked not to wait
for calls in flight: their messages stay locked until the lock expires and Service Bus redelivers
them, as after a host crash.

Production runs on Azure Functions; nothing here is deployed.
"""

from __future__ import annotations

import datetime as dt
import hmac
import inspect
import json
import logging
import os
import random
import re
import secrets
import ssl
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devstack.httpbase import LoopbackHandler
from devstack.runner_eventgrid import EventGridWebhook

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Collection, Mapping

logger = logging.getLogger(__name__)

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
FUNCTION_KEY_HEADER = "x-functions-key"
#: The Functions host's default ``maxRequestBodySize``; larger bodies are refused unread.
MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024
#: Reconnection delays of a queue trigger while the broker cannot be reached (seconds, capped).
RECONNECT_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)


def resolve_setting(value: str, settings: Mapping[str, str]) -> str:
    """Expand ``%NAME%`` binding expressions from the app settings, as the host does."""
    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise KeyError(f"binding expression %{name}% names an app setting that is not set")
        return settings[name]
    return re.sub(r"%([^%]+)%", expand, value)


def _parse_timespan(text: str) -> float:
    hours, minutes, seconds = (float(part) for part in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def _to_function_message(received: Any) -> func.ServiceBusMessage:
    from azure.functions.servicebus import ServiceBusMessage

    body = b"".join(received.body) if not isinstance(received.body, bytes) else received.body
    properties = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in (received.application_properties or {}).items()
    }
    ttl = received.time_to_live
    # The AMQP header counts earlier failed deliveries (0 on the first); the Functions host, like
    # the .NET SDK, reports DeliveryCount from 1.
    delivery_count = (received.delivery_count or 0) + 1
    return ServiceBusMessage(
        body=body, message_id=str(received.message_id or ""), application_properties=properties,
        user_properties=dict(properties), content_type=received.content_type,
        correlation_id=received.correlation_id, delivery_count=delivery_count,
        enqueued_time_utc=received.enqueued_time_utc, sequence_number=received.sequence_number,
        locked_until=received.locked_until_utc, subject=received.subject, label=received.subject,
        lock_token=str(received.lock_token), dead_letter_reason=received.dead_letter_reason,
        dead_letter_error_description=received.dead_letter_error_description,
        scheduled_enqueue_time_utc=received.scheduled_enqueue_time_utc,
        time_to_live=ttl,
    )


class _Context(func.Context):
    """What the worker hands a function that asks for ``context``: a fresh invocation id each call."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(HOST_JSON.parent)

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None

    @property
    def thread_local_storage(self) -> Any:
        return threading.local()


def _call(function: Callable[..., Any], name: str, arg_name: str, value: Any) -> Any:
    """Call a user function as the worker does: its trigger argument, plus ``context`` if it takes one."""
    kwargs = {arg_name: value}
    if "context" in inspect.signature(function).parameters:
        kwargs["context"] = _Context(name)
    return function(**kwargs)


class _BackgroundLoop:
    """A daemon thread running ``_loop`` until :meth:`stop`."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"runner-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def signal_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        raise NotImplementedError


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message``: enough to name a failure without a traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    """The broker cannot be reached (gone, restarting, refusing connections): not a bug."""
    from azure.servicebus.exceptions import ServiceBusError

    return isinstance(exc, ServiceBusError | OSError)


class _BrokerWatch:
    """Says once that the broker went away, and once that it is back, for all queue triggers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: set[str] = set()

    def lost(self, listener: str, exc: BaseException) -> None:
        with self._lock:
            first = not self._down
            self._down.add(listener)
        if first:
            logger.warning("runner: the Service Bus broker cannot be reached (%s); the queue triggers retry "
                           "quietly with backoff until it is back", _summary(exc))

    def reached(self, listener: str) -> None:
        with self._lock:
            if listener not in self._down:
                return
            self._down.discard(listener)
            last = not self._down
        if last:
            logger.warning("runner: the Service Bus broker is back; the queue triggers receive again")


class _QueueListener(_BackgroundLoop):
    """Peek-lock receive loop for one queue trigger."""

    def __init__(self, name: str, function: Callable[..., Any], arg_name: str, connection: str,
                 queue: str, *, concurrency: int, lock_renewal_seconds: float, broker: _BrokerWatch) -> None:
        super().__init__(name)
        self._function = function
        self._arg_name = arg_name
        self._connection = connection
        self._queue = queue
        self._concurrency = max(1, concurrency)
        self._lock_renewal_seconds = lock_renewal_seconds
        self._broker = broker
        self.wait_for_calls = True

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._receive_until_stopped()
                return
            except Exception as exc:
                if self._stop.is_set():
                    return
                if _unreachable(exc):
                    self._broker.lost(self.name, exc)
                    logger.debug("runner: %s lost its receiver", self.name, exc_info=True)
                else:
                    logger.exception("runner: %s lost its receiver; reconnecting", self.name)
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                self._stop.wait(delay * (0.75 + random.random() / 2))

    def _receive_until_stopped(self) -> None:
        from azure.servicebus import AutoLockRenewer, ServiceBusClient

        with ServiceBusClient.from_connection_string(self._connection) as client, \
                client.get_queue_receiver(self._queue, max_wait_time=1, prefetch_count=1) as receiver, \
                AutoLockRenewer(max_lock_renewal_duration=self._lock_renewal_seconds) as renewer:
            # Like the host, keep up to maxConcurrentCalls calls in flight and fill a free slot at
            # once (no waiting for a whole batch). One message is prefetched, so the link always
            # has credit, as the host's message pump's does: without it, a message that arrived
            # while the receive call was renewing its credit waited for the SDK's next pull (0.2 s
            # later, in about one onboarding in seven). The sync receiver is not thread-safe, so
            # messages are received and settled on this thread only. Calls run on daemon threads,
            # so a host told not to wait for them stops at once.
            in_flight: set[Future[tuple[Any, bool]]] = set()
            try:
                while not self._stop.is_set():
                    for future in [f for f in in_flight if f.done()]:
                        in_flight.discard(future)
                        self._settle(receiver, *future.result())
                    free = self._concurrency - len(in_flight)
                    if free <= 0:
                        wait(in_flight, timeout=1, return_when=FIRST_COMPLETED)
                        continue
                    # One message per receive, as the host's message pump hands each to a call as
                    # soon as it arrives: asked for several, the SDK keeps pulling for 0.2 s after
                    # the first, which would delay every onboarding by that much.
                    batch = receiver.receive_messages(max_message_count=1,
                                                      max_wait_time=0.2 if in_flight else 1)
                    self._broker.reached(self.name)
                    for message in batch:
                        renewer.register(receiver, message)
                        in_flight.add(self._start(message))
            finally:
                if self.wait_for_calls:
                    for future in list(in_flight):
                        self._settle(receiver, *future.result())

    def _start(self, message: Any) -> Future[tuple[Any, bool]]:
        future: Future[tuple[Any, bool]] = Future()

        def run() -> None:
            future.set_result(self._invoke(message))

        threading.Thread(target=run, name=f"{self.name}-call", daemon=True).start()
        return future

    def _invoke(self, message: Any) -> tuple[Any, bool]:
        try:
            _call(self._function, self.name, self._arg_name, _to_function_message(message))
        except Exception:
            logger.exception("runner: %s failed (delivery %s); abandoning", self.name,
                             (message.delivery_count or 0) + 1)
            return message, False
        return message, True

    def _settle(self, receiver: Any, message: Any, succeeded: bool) -> None:
        verb = "complete" if succeeded else "abandon"
        try:
            if succeeded:
                receiver.complete_message(message)
            else:
                receiver.abandon_message(message)
        except Exception as exc:
            # The message stays locked until its lock expires; Service Bus then redelivers it.
            if _unreachable(exc):
                logger.info("runner: could not %s message %s (%s); it is redelivered when its lock expires",
                            verb, message.message_id, _summary(exc))
            else:
                logger.warning("runner: could not %s message %s", verb, message.message_id, exc_info=True)


class _TimerSchedule(_BackgroundLoop):
    def __init__(self, name: str, function: Callable[..., Any], arg_name: str, schedule: str) -> None:
        from croniter import croniter

        fields = schedule.split()
        if len(fields) != 6:
            raise ValueError(f"timer {name}: NCRONTAB schedules have six fields (seconds first): {schedule!r}")
        super().__init__(name)
        self._function = function
        self._arg_name = arg_name
        self._cron = croniter(schedule, dt.datetime.now(dt.UTC), second_at_beginning=True)

    def _loop(self) -> None:
        from azure.functions.timer import TimerRequest

        while not self._stop.is_set():
            due: dt.datetime = self._cron.get_next(dt.datetime)
            wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
            if self._stop.wait(max(0.0, wait)):
                return
            try:
                _call(self._function, self.name, self._arg_name, TimerRequest(past_due=False))
            except Exception as exc:
                # A dependency that is down (the stack stopped) is one line, not a traceback.
                logger.warning("runner: timer %s failed: %s", self.name, _summary(exc))
                logger.debug("runner: timer %s failure", self.name, exc_info=True)


class _HttpRoute:
    def __init__(self, function: Callable[..., Any], arg_name: str, route: str, methods: list[str], *,
                 anonymous: bool) -> None:
        pattern = re.sub(r"\{(\w+)(?::\w+)?\??\}", r"(?P<\1>[^/]+)", route.strip("/"))
        self.regex = re.compile(f"^{pattern}/?$")
        self.function = function
        self.arg_name = arg_name
        self.methods = {m.upper() for m in methods} or {"GET", "POST", "PUT", "PATCH", "DELETE"}
        self.anonymous = anonymous


class _HttpHandler(LoopbackHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("runner http: " + format, *args)

    def _dispatch(self) -> None:
        began = time.monotonic()
        split = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BODY_BYTES:
            response = func.HttpResponse(status_code=413 if length > 0 else 400)
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            response = self.server.host.handle_http(self.command, split.path, dict(parse_qsl(split.query)),
                                                    dict(self.headers.items()), body,
                                                    f"{scheme}://{self.headers.get('Host', 'localhost')}{self.path}")
        # The path only: the query may carry the function key (``code``).
        logger.info("runner: %s %s -> %d in %.1f ms", self.command, split.path, response.status_code,
                    (time.monotonic() - began) * 1000)
        payload = response.get_body() or b""
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if response.mimetype and "content-type" not in {k.lower() for k, _ in response.headers.items()}:
            self.send_header("Content-Type", f"{response.mimetype}; charset={response.charset}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    host: LocalHost
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake happens in the handler thread, so a slow client cannot stall accept().
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


class LocalHost:
    """Hosts the functions of ``app`` against the settings of a running local stack.

    tls: serve HTTPS with this context (the stack's certificate); plain HTTP without it.
    function_key: the key non-anonymous HTTP routes require; generated when not given.
    only: host just the functions of these names (a benchmark of the HTTP intake leaves the queue
        trigger out); every function when None.
    warm_up: call the app's warmup trigger at start, before any other trigger runs, as the platform
        does when it adds an instance (``devstack run`` does; tests build their hosts without it).
    """

    def __init__(self, app: func.FunctionApp, settings: Mapping[str, str], *, http_port: int = 0,
                 host_json: Path = HOST_JSON, tls: ssl.SSLContext | None = None, function_key: str | None = None,
                 only: Collection[str] | None = None, warm_up: bool = False) -> None:
        self.app = app
        self._warm_up = warm_up
        self.settings = dict(settings)
        self.function_key = function_key or secrets.token_urlsafe(32)
        self._http_port = http_port
        self._tls = tls
        self._only = set(only) if only is not None else None
        self._broker = _BrokerWatch()
        config = json.loads(host_json.read_text())
        service_bus = config.get("extensions", {}).get("serviceBus", {})
        self._concurrency = int(service_bus.get("maxConcurrentCalls", 16))
        self._lock_renewal = _parse_timespan(service_bus.get("maxAutoLockRenewalDuration", "00:05:00"))
        self._route_prefix = config.get("extensions", {}).get("http", {}).get("routePrefix", "api").strip("/")
        self._listeners: list[_QueueListener] = []
        self._timers: list[_TimerSchedule] = []
        self._routes: list[_HttpRoute] = []
        self._event_grid = EventGridWebhook(_call)
        self._http: _HttpServer | None = None
        self.http_url = ""

    def start(self) -> None:
        # The functions read their settings from the environment, as they do in Azure.
        os.environ.update(self.settings)
        # The worker indexes an app once per process, and get_functions() refuses a second call
        # (every name then looks duplicated). Here the same app object may be hosted again, or have
        # been indexed by a test first: forget the names an earlier indexing recorded.
        self.app.functions_bindings = None
        for fn in self.app.get_functions():
            trigger = fn.get_trigger()
            if trigger is None:
                raise ValueError(f"function {fn.get_function_name()} has no trigger")
            binding = trigger.get_dict_repr()
            user_function = fn.get_user_function()
            arg_name = trigger.name
            kind = binding["type"]
            name = fn.get_function_name() or user_function.__name__
            if self._only is not None and name not in self._only:
                continue
            if kind == "serviceBusTrigger":
                queue = resolve_setting(binding["queueName"], self.settings)
                connection = self.settings[binding["connection"]]
                self._listeners.append(_QueueListener(
                    name, user_function, arg_name, connection, queue, concurrency=self._concurrency,
                    lock_renewal_seconds=self._lock_renewal, broker=self._broker))
            elif kind == "timerTrigger":
                schedule = resolve_setting(binding["schedule"], self.settings)
                self._timers.append(_TimerSchedule(name, user_function, arg_name, schedule))
            elif kind == "httpTrigger":
                methods = [str(getattr(m, "value", m)) for m in binding.get("methods") or []]
                level = str(getattr(binding.get("authLevel"), "value", binding.get("authLevel") or "function"))
                self._routes.append(_HttpRoute(user_function, arg_name, str(binding.get("route") or name),
                                               methods, anonymous=level.lower() == "anonymous"))
            elif kind == "eventGridTrigger":
                self._event_grid.add(name, user_function, arg_name)
            elif kind == "warmupTrigger":
                if self._warm_up:
                    self._run_warm_up(name, user_function, arg_name)
            else:
                raise ValueError(f"the local runner cannot host trigger type {kind!r}")
        if self._routes or self._event_grid:
            self._http = _HttpServer(("127.0.0.1", self._http_port), _HttpHandler)
            self._http.host = self
            self._http.tls = self._tls
            scheme = "https" if self._tls is not None else "http"
            self.http_url = f"{scheme}://127.0.0.1:{self._http.server_address[1]}/{self._route_prefix}"
            threading.Thread(target=self._http.serve_forever, name="runner-http", daemon=True).start()
        for listener in self._listeners:
            listener.start()
        for timer in self._timers:
            timer.start()

    @staticmethod
    def _run_warm_up(name: str, function: Callable[..., Any], arg_name: str) -> None:
        from azure.functions.warmup import WarmUpContext

        began = time.monotonic()
        try:
            function(**{arg_name: WarmUpContext()})
        except Exception:
            logger.exception("runner: warmup function %s failed", name)
        logger.info("runner: %s done in %.0f ms", name, (time.monotonic() - began) * 1000)

    def handle_http(self, method: str, path: str, params: dict[str, str], headers: dict[str, str],
                    body: bytes, url: str) -> func.HttpResponse:
        if self._event_grid.handles(path):
            return self._event_grid.handle(method, params, headers, body)
        prefix = f"/{self._route_prefix}/"
        if not path.startswith(prefix):
            return func.HttpResponse(status_code=404)
        route_path = path[len(prefix):].strip("/")
        # Literal routes win over parameterised ones, as in the host.
        for route in sorted(self._routes, key=lambda r: r.regex.pattern.count("(?P<")):
            match = route.regex.match(route_path)
            if match and method.upper() in route.methods:
                if not route.anonymous and not self._has_key(headers, params):
                    return func.HttpResponse(status_code=401)
                request = func.HttpRequest(method.upper(), url, headers=headers, params=params,
                                           route_params=match.groupdict(), body=body)
                try:
                    response: func.HttpResponse = _call(route.function, route.regex.pattern, route.arg_name, request)
                except Exception:
                    logger.exception("runner: HTTP function failed")
                    return func.HttpResponse(status_code=500)
                return response
        return func.HttpResponse(status_code=404)

    def _has_key(self, headers: Mapping[str, str], params: Mapping[str, str]) -> bool:
        """The function key, from the ``x-functions-key`` header or else the ``code`` query parameter."""
        supplied = next((v for k, v in headers.items() if k.lower() == FUNCTION_KEY_HEADER), None)
        if supplied is None:
            supplied = params.get("code")
        return supplied is not None and hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"),
                                                            self.function_key.encode())

    def stop(self, *, wait_for_calls: bool = True) -> None:
        """Stop every trigger. With ``wait_for_calls`` (tests), calls in flight finish and their
        messages are settled first; without it (Ctrl-C), this returns at once and their messages are
        redelivered when their locks expire."""
        loops: list[_BackgroundLoop] = [*self._listeners, *self._timers]
        for listener in self._listeners:
            listener.wait_for_calls = wait_for_calls
        for loop in loops:
            loop.signal_stop()
        deadline = time.monotonic() + (15 if wait_for_calls else 1)
        for loop in loops:
            loop.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        from functions import dependencies

        dependencies.reset()
