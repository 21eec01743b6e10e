"""A small local host for the Function App: a development tool, not the Azure Functions host.

The Functions host cannot be installed on these machines, so this runner indexes ``function_app``
the way the worker does (``app.get_functions()``) and feeds each function from the local stack:

* Service Bus queue triggers: peek-lock receive from the broker; complete on success, abandon on
  an exception (the queue's ``maxDeliveryCount`` then dead-letters), with lock renewal and
  ``maxConcurrentCalls`` taken from host.json.
* Timer triggers: fired on their NCRONTAB schedule (six fields, seconds first).
* HTTP triggers: served under ``/api`` on a local port. Like ``func start``, it does not check
  function keys.
* Event Grid triggers: the host's webhook, ``/runtime/webhooks/eventgrid?functionName=<name>``, on
  the same port (:mod:`devstack.runner_eventgrid`).

Production runs on Azure Functions; nothing here is deployed.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import os
import re
import threading
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devstack.runner_eventgrid import EventGridWebhook

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


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

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        raise NotImplementedError


class _QueueListener(_BackgroundLoop):
    """Peek-lock receive loop for one queue trigger."""

    def __init__(self, name: str, function: Callable[..., Any], arg_name: str, connection: str,
                 queue: str, *, concurrency: int, lock_renewal_seconds: float) -> None:
        super().__init__(name)
        self._function = function
        self._arg_name = arg_name
        self._connection = connection
        self._queue = queue
        self._concurrency = max(1, concurrency)
        self._lock_renewal_seconds = lock_renewal_seconds

    def _loop(self) -> None:
        from azure.servicebus import AutoLockRenewer, ServiceBusClient

        while not self._stop.is_set():
            try:
                with ServiceBusClient.from_connection_string(self._connection) as client, \
                        client.get_queue_receiver(self._queue, max_wait_time=1) as receiver, \
                        AutoLockRenewer(max_lock_renewal_duration=self._lock_renewal_seconds) as renewer, \
                        ThreadPoolExecutor(self._concurrency, thread_name_prefix=self.name) as pool:
                    # Like the host, keep up to maxConcurrentCalls calls in flight and fill a free
                    # slot at once (no waiting for a whole batch). The sync receiver is not
                    # thread-safe, so messages are received and settled on this thread only.
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
                            batch = receiver.receive_messages(max_message_count=free,
                                                              max_wait_time=0.2 if in_flight else 1)
                            for message in batch:
                                renewer.register(receiver, message)
                                in_flight.add(pool.submit(self._invoke, message))
                    finally:
                        for future in as_completed(in_flight):
                            self._settle(receiver, *future.result())
            except Exception:
                if not self._stop.is_set():
                    logger.exception("runner: %s lost its receiver; reconnecting", self.name)
                    self._stop.wait(1)

    def _invoke(self, message: Any) -> tuple[Any, bool]:
        try:
            _call(self._function, self.name, self._arg_name, _to_function_message(message))
        except Exception:
            logger.exception("runner: %s failed (delivery %s); abandoning", self.name,
                             (message.delivery_count or 0) + 1)
            return message, False
        return message, True

    def _settle(self, receiver: Any, message: Any, succeeded: bool) -> None:
        if not succeeded:
            try:
                receiver.abandon_message(message)
            except Exception:
                logger.warning("runner: could not abandon a message", exc_info=True)
            return
        try:
            receiver.complete_message(message)
        except Exception:
            logger.warning("runner: could not complete a message", exc_info=True)


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
            except Exception:
                logger.exception("runner: timer %s failed", self.name)


class _HttpRoute:
    def __init__(self, function: Callable[..., Any], arg_name: str, route: str, methods: list[str]) -> None:
        pattern = re.sub(r"\{(\w+)(?::\w+)?\??\}", r"(?P<\1>[^/]+)", route.strip("/"))
        self.regex = re.compile(f"^{pattern}/?$")
        self.function = function
        self.arg_name = arg_name
        self.methods = {m.upper() for m in methods} or {"GET", "POST", "PUT", "PATCH", "DELETE"}


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("runner http: " + format, *args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.host.handle_http(self.command, split.path, dict(parse_qsl(split.query)),
                                                dict(self.headers.items()), body,
                                                f"http://{self.headers.get('Host', 'localhost')}{self.path}")
        payload = response.get_body() or b""
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if response.mimetype and "content-type" not in {k.lower() for k in response.headers}:
            self.send_header("Content-Type", f"{response.mimetype}; charset={response.charset}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    host: LocalHost


class LocalHost:
    """Hosts every function of ``app`` against the settings of a running local stack."""

    def __init__(self, app: func.FunctionApp, settings: Mapping[str, str], *, http_port: int = 0,
                 host_json: Path = HOST_JSON) -> None:
        self.app = app
        self.settings = dict(settings)
        self._http_port = http_port
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
            if kind == "serviceBusTrigger":
                queue = resolve_setting(binding["queueName"], self.settings)
                connection = self.settings[binding["connection"]]
                self._listeners.append(_QueueListener(
                    name, user_function, arg_name, connection, queue,
                    concurrency=self._concurrency, lock_renewal_seconds=self._lock_renewal))
            elif kind == "timerTrigger":
                schedule = resolve_setting(binding["schedule"], self.settings)
                self._timers.append(_TimerSchedule(name, user_function, arg_name, schedule))
            elif kind == "httpTrigger":
                methods = [str(getattr(m, "value", m)) for m in binding.get("methods") or []]
                self._routes.append(_HttpRoute(user_function, arg_name, str(binding.get("route") or name),
                                               methods))
            elif kind == "eventGridTrigger":
                self._event_grid.add(name, user_function, arg_name)
            else:
                raise ValueError(f"the local runner cannot host trigger type {kind!r}")
        if self._routes or self._event_grid:
            self._http = _HttpServer(("127.0.0.1", self._http_port), _HttpHandler)
            self._http.host = self
            self.http_url = f"http://127.0.0.1:{self._http.server_address[1]}/{self._route_prefix}"
            threading.Thread(target=self._http.serve_forever, name="runner-http", daemon=True).start()
        for listener in self._listeners:
            listener.start()
        for timer in self._timers:
            timer.start()

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
                request = func.HttpRequest(method.upper(), url, headers=headers, params=params,
                                           route_params=match.groupdict(), body=body)
                try:
                    response: func.HttpResponse = _call(route.function, route.regex.pattern, route.arg_name, request)
                except Exception:
                    logger.exception("runner: HTTP function failed")
                    return func.HttpResponse(status_code=500)
                return response
        return func.HttpResponse(status_code=404)

    def stop(self) -> None:
        for listener in self._listeners:
            listener.stop()
        for timer in self._timers:
            timer.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        from functions import dependencies

        dependencies.reset()
