"""A small local host for the Function App: a development tool, not the Azure Functions host.

The Functions host cannot be installed on these machines. This runner does what the host does
around the language worker, and leaves the rest to Microsoft's own Python worker
(:mod:`devstack.worker`): the worker indexes the app, converts what each trigger brings into the
``azure.functions`` objects the app sees, and calls the functions (sync ones on its thread pool,
``PYTHON_THREADPOOL_THREAD_COUNT``). The runner feeds it, as the host would:

* Service Bus queue triggers: peek-lock receive from the broker, the message handed over as the
  Service Bus extension 5.x hands it (:mod:`devstack.hostdata`); complete on success, abandon on a
  failure (the queue's ``maxDeliveryCount`` then dead-letters), lock renewal and
  ``maxConcurrentCalls`` from host.json. The connection is a connection string, or identity-based
  (``<name>__fullyQualifiedNamespace``, ``__credential``, ``__clientId``) as in Azure.
* Timer triggers: fired on their NCRONTAB schedule (six fields, seconds first), with the schedule
  status and ``IsPastDue`` (a run that starts more than a second after it was due is past due:
  a missed run, or one that waited behind the one before).
* HTTP triggers: served under ``/api`` (uvicorn: HTTP/1.1, chunked bodies, keep-alive), over HTTPS
  with the stack's certificate. Routes match as the host's do: literals case-insensitively, route
  parameters percent-decoded, a literal route before a parameterised one. A route whose auth level
  is not ``anonymous`` needs the function key (``x-functions-key`` header or ``code`` query
  parameter): an empty 401 without it. An unknown route, or a method the route does not take
  (``HEAD`` and ``OPTIONS`` included), is an empty 404; a body over the host's
  ``maxRequestBodySize`` (100 MB) a 413.
* Event Grid triggers: the host's webhook, ``/runtime/webhooks/eventgrid?functionName=<name>``, on
  the same port (:mod:`devstack.runner_eventgrid`).
* Every call ends at host.json's ``functionTimeout``: a queue message is abandoned, an HTTP request
  answered 500, as the host does (which also restarts the worker; here the late call is left to
  finish and its result dropped).

When the broker goes away (``devstack down`` under a running host) each queue trigger says so once
and reconnects quietly with backoff. :meth:`LocalHost.stop` returns at once when asked not to wait
for calls in flight: their messages stay locked until the lock expires and Service Bus redelivers
them, as after a host crash.

Production runs on Azure Functions; nothing here is deployed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import logging
import os
import random
import re
import secrets
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from devstack import hostdata
from devstack.runner_eventgrid import EventGridWebhook
from devstack.worker import Worker, failure_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping

    from devstack.tls import LoopbackCertificate

logger = logging.getLogger(__name__)

APP_DIRECTORY = Path(__file__).resolve().parent.parent
HOST_JSON = APP_DIRECTORY / "host.json"
FUNCTION_KEY_HEADER = "x-functions-key"
#: The Functions host's default ``maxRequestBodySize``; larger bodies are refused unread.
MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024
#: Reconnection delays of a queue trigger while the broker cannot be reached (seconds, capped).
RECONNECT_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
#: A timer run that starts this much later than it was due is past due.
PAST_DUE_AFTER = dt.timedelta(seconds=1)


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


class _Function:
    """One function as the worker indexed it: its id, and its trigger binding as raw JSON."""

    def __init__(self, metadata: Any) -> None:
        self.name = str(metadata.name)
        self.function_id = str(metadata.function_id)
        bindings = [json.loads(raw) for raw in metadata.raw_bindings]
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        if trigger is None:
            raise ValueError(f"function {self.name} has no trigger")
        self.trigger: dict[str, Any] = trigger
        self.kind = str(trigger["type"])
        self.arg_name = str(trigger["name"])


class _Invoker:
    """Hands invocations to the worker, each bounded by the function timeout."""

    def __init__(self, worker: Worker, timeout: float) -> None:
        self.worker = worker
        self.timeout = timeout

    def submit(self, function: _Function, data: Any, metadata: dict[str, Any] | None = None) -> Future[Any]:
        return self.worker.submit(function.function_id, [self.worker.binding(function.arg_name, data)],
                                  metadata or {}, timeout=self.timeout)

    def call(self, function: _Function, data: Any, metadata: dict[str, Any] | None = None) -> Any:
        """Invoke and wait; raises :class:`RuntimeError` (with the function's error) when it failed."""
        response = self.submit(function, data, metadata).result()
        failure = failure_of(response)
        if failure is not None:
            raise RuntimeError(failure)
        return response


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


def service_bus_client(connection: str, settings: Mapping[str, str]) -> Any:
    """A client for the binding's ``connection``, as the host reads it: a connection string in
    the setting of that name, or identity-based settings ``<name>__fullyQualifiedNamespace`` (with
    ``__credential=managedidentity`` and ``__clientId`` for a user-assigned identity).

    Raises
    ------
    KeyError
        Neither form is set.
    """
    from azure.servicebus import ServiceBusClient

    # The host trusts the machine's store; the SDK's AMQP transport reads certifi's bundle alone,
    # so the stack's CA (what the host's other clients trust) is handed over.
    trust = settings.get("REQUESTS_CA_BUNDLE") or None
    if settings.get(connection):
        return ServiceBusClient.from_connection_string(settings[connection], connection_verify=trust)
    namespace = settings.get(f"{connection}__fullyQualifiedNamespace")
    if not namespace:
        raise KeyError(f"connection {connection}: set {connection} (a connection string) or "
                       f"{connection}__fullyQualifiedNamespace")
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = settings.get(f"{connection}__clientId")
    credential: Any = (ManagedIdentityCredential(client_id=client_id)
                       if settings.get(f"{connection}__credential", "").lower() == "managedidentity"
                       else DefaultAzureCredential())
    return ServiceBusClient(namespace, credential, connection_verify=trust)


class _QueueListener(_BackgroundLoop):
    """Peek-lock receive loop for one queue trigger."""

    def __init__(self, function: _Function, invoker: _Invoker, client: Callable[[], Any], queue: str, *,
                 concurrency: int, lock_renewal_seconds: float, broker: _BrokerWatch) -> None:
        super().__init__(function.name)
        self._function = function
        self._invoker = invoker
        self._client = client
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
        from azure.servicebus import AutoLockRenewer

        with self._client() as client, \
                client.get_queue_receiver(self._queue, max_wait_time=1, prefetch_count=1) as receiver, \
                AutoLockRenewer(max_lock_renewal_duration=self._lock_renewal_seconds) as renewer:
            # Like the host, keep up to maxConcurrentCalls calls in flight and fill a free slot at
            # once (no waiting for a whole batch). One message is prefetched, so the link always
            # has credit, as the host's message pump's does. The sync receiver is not thread-safe,
            # so messages are received and settled on this thread only; the calls run in the
            # worker, so a host told not to wait for them stops at once.
            in_flight: dict[Future[Any], Any] = {}
            try:
                while not self._stop.is_set():
                    for future in [f for f in in_flight if f.done()]:
                        self._settle(receiver, in_flight.pop(future), future)
                    free = self._concurrency - len(in_flight)
                    if free <= 0:
                        wait(list(in_flight), timeout=1, return_when=FIRST_COMPLETED)
                        continue
                    # One message per receive, as the host's message pump hands each to a call as
                    # soon as it arrives: asked for several, the SDK keeps pulling for 0.2 s after
                    # the first, which would delay every onboarding by that much.
                    batch = receiver.receive_messages(max_message_count=1,
                                                      max_wait_time=0.2 if in_flight else 1)
                    self._broker.reached(self.name)
                    for message in batch:
                        renewer.register(receiver, message)
                        data, metadata = hostdata.service_bus_message(self._invoker.worker, message)
                        in_flight[self._invoker.submit(self._function, data, metadata)] = message
            finally:
                if self.wait_for_calls:
                    for future, message in in_flight.items():
                        wait([future])
                        self._settle(receiver, message, future)

    def _settle(self, receiver: Any, message: Any, call: Future[Any]) -> None:
        error = call.exception()
        failure = str(error) if error is not None else failure_of(call.result())
        if failure is not None:
            logger.error("runner: %s failed (delivery %s); abandoning: %s", self.name,
                         (message.delivery_count or 0) + 1, failure)
        verb = "complete" if failure is None else "abandon"
        try:
            if failure is None:
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
    def __init__(self, function: _Function, invoker: _Invoker, schedule: str, *,
                 last_run: dt.datetime | None = None) -> None:
        from croniter import croniter

        fields = schedule.split()
        if len(fields) != 6:
            raise ValueError(f"timer {function.name}: NCRONTAB schedules have six fields (seconds first): "
                             f"{schedule!r}")
        super().__init__(function.name)
        self._function = function
        self._invoker = invoker
        # As the host, which keeps each schedule's status in storage: a run due since the last one
        # is made at once, and is past due.
        self._last = last_run
        self._cron = croniter(schedule, last_run or dt.datetime.now(dt.UTC), second_at_beginning=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            due: dt.datetime = self._cron.get_next(dt.datetime)
            if self._stop.wait(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds())):
                return
            now = dt.datetime.now(dt.UTC)
            data = hostdata.timer(self._invoker.worker, past_due=now - due > PAST_DUE_AFTER, last=self._last,
                                  next_due=due)
            try:
                self._invoker.call(self._function, data)
            except (RuntimeError, TimeoutError) as exc:
                # A dependency that is down (the stack stopped) is one line, not a traceback.
                logger.warning("runner: timer %s failed: %s", self.name, _summary(exc))
            self._last = now
            if self._cron.get_current(dt.datetime) < now:
                self._cron.set_current(now)  # as the host: runs missed meanwhile are not made up one by one


class _HttpRoute:
    def __init__(self, function: _Function, route: str, methods: list[str], *, anonymous: bool) -> None:
        self.segments = [segment for segment in route.strip("/").split("/") if segment]
        self.function = function
        self.methods = {m.upper() for m in methods} or {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
        self.anonymous = anonymous
        self.parameters = sum(1 for segment in self.segments if segment.startswith("{"))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The decoded route parameters when ``segments`` (still percent-encoded) match."""
        if len(segments) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for template, given in zip(self.segments, segments, strict=True):
            parameter = re.fullmatch(r"\{(\w+)(?::\w+)?\??\}", template)
            if parameter is not None:
                found[parameter.group(1)] = unquote(given)
            elif unquote(given).lower() != template.lower():
                return None
        return found


class LocalHost:
    """Hosts the functions of ``app`` against the settings of a running local stack.

    tls: serve HTTPS with this certificate (the stack's); plain HTTP without it.
    function_key: the key non-anonymous HTTP routes require; generated when not given.
    only: host just the functions of these names (a benchmark of the HTTP intake leaves the queue
        trigger out); every function when None.
    warm_up: call the app's warmup trigger at start, before any other trigger runs, as the platform
        does when it adds an instance (``devstack run`` does; tests build their hosts without it).
    timers_last_run: when each timer last ran (by function name), as the host keeps it in storage;
        a run due since then is made at once, past due. None: they start from now.
    """

    def __init__(self, app: Any, settings: Mapping[str, str], *, http_port: int = 0,
                 host_json: Path = HOST_JSON, tls: LoopbackCertificate | None = None, function_key: str | None = None,
                 only: Collection[str] | None = None, warm_up: bool = False,
                 timers_last_run: Mapping[str, dt.datetime] | None = None) -> None:
        self.app = app
        self._warm_up = warm_up
        self.settings = dict(settings)
        self.function_key = function_key or secrets.token_urlsafe(32)
        self._http_port = http_port
        self._tls = tls
        self._only = set(only) if only is not None else None
        self._timers_last_run = dict(timers_last_run or {})
        self._broker = _BrokerWatch()
        config = json.loads(host_json.read_text())
        service_bus = config.get("extensions", {}).get("serviceBus", {})
        self._concurrency = int(service_bus.get("maxConcurrentCalls", 16))
        self._lock_renewal = _parse_timespan(service_bus.get("maxAutoLockRenewalDuration", "00:05:00"))
        self._route_prefix = config.get("extensions", {}).get("http", {}).get("routePrefix", "api").strip("/")
        self.function_timeout = _parse_timespan(config.get("functionTimeout", "00:30:00"))
        self._listeners: list[_QueueListener] = []
        self._timers: list[_TimerSchedule] = []
        self._routes: list[_HttpRoute] = []
        self._invoker: _Invoker | None = None
        self._event_grid: EventGridWebhook | None = None
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self.http_url = ""

    def start(self) -> None:
        # The functions read their settings from the environment, as they do in Azure.
        os.environ.update(self.settings)
        # An app object is indexed once (get_functions() refuses a second call: every name then
        # looks duplicated); here the same app may be hosted again: forget the earlier indexing.
        self.app.functions_bindings = None
        worker = Worker.get()
        invoker = self._invoker = _Invoker(worker, self.function_timeout)
        self._event_grid = EventGridWebhook(invoker)
        warmups: list[_Function] = []
        for metadata in worker.index(self.app, APP_DIRECTORY):
            function = _Function(metadata)
            if self._only is not None and function.name not in self._only:
                continue
            self._add(function, warmups)
        for function in warmups:
            self._run_warm_up(function)
        if self._routes or self._event_grid:
            self._serve_http()
        for listener in self._listeners:
            listener.start()
        for timer in self._timers:
            timer.start()

    def _add(self, function: _Function, warmups: list[_Function]) -> None:
        assert self._invoker is not None and self._event_grid is not None
        binding = function.trigger
        if function.kind == "serviceBusTrigger":
            queue = resolve_setting(binding["queueName"], self.settings)
            connection = str(binding.get("connection") or "AzureWebJobsServiceBus")
            service_bus_client(connection, self.settings)  # a missing setting fails the start, as in the host
            self._listeners.append(_QueueListener(
                function, self._invoker, lambda: service_bus_client(connection, self.settings), queue,
                concurrency=self._concurrency, lock_renewal_seconds=self._lock_renewal, broker=self._broker))
        elif function.kind == "timerTrigger":
            schedule = resolve_setting(binding["schedule"], self.settings)
            self._timers.append(_TimerSchedule(function, self._invoker, schedule,
                                               last_run=self._timers_last_run.get(function.name)))
        elif function.kind == "httpTrigger":
            methods = [str(m) for m in binding.get("methods") or []]
            level = str(binding.get("authLevel") or "function")
            self._routes.append(_HttpRoute(function, str(binding.get("route") or function.name), methods,
                                           anonymous=level.lower() == "anonymous"))
        elif function.kind == "eventGridTrigger":
            self._event_grid.add(function)
        elif function.kind == "warmupTrigger":
            if self._warm_up:
                warmups.append(function)
        else:
            raise ValueError(f"the local runner cannot host trigger type {function.kind!r}")

    def _run_warm_up(self, function: _Function) -> None:
        assert self._invoker is not None
        began = time.monotonic()
        try:
            self._invoker.call(function, hostdata.warmup(self._invoker.worker))
        except (RuntimeError, TimeoutError) as exc:
            logger.error("runner: warmup function %s failed: %s", function.name, _summary(exc))
        logger.info("runner: %s done in %.0f ms", function.name, (time.monotonic() - began) * 1000)

    # -- HTTP ------------------------------------------------------------------------------------------

    def _serve_http(self) -> None:
        import uvicorn

        logging.getLogger("uvicorn.error").addFilter(IDLE_CONNECTIONS_AT_STOP)
        options: dict[str, Any] = {}
        if self._tls is not None:
            options.update(ssl_certfile=str(self._tls.cert_path), ssl_keyfile=str(self._tls.key_path))
        config = uvicorn.Config(self._asgi, host="127.0.0.1", port=self._http_port, lifespan="off", interface="asgi3",
                                proxy_headers=False,
                                log_level="warning", access_log=False, timeout_keep_alive=30, backlog=128,
                                timeout_graceful_shutdown=1,
                                h11_max_incomplete_event_size=64 * 1024, **options)
        server = self._http = uvicorn.Server(config)  # on a thread of its own: it leaves signals alone
        self._http_thread = threading.Thread(target=server.run, name="runner-http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._http_thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the local host could not listen on 127.0.0.1:{self._http_port}")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if self._tls is not None else "http"
        self.http_url = f"{scheme}://127.0.0.1:{port}/{self._route_prefix}"

    async def _asgi(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        began = time.monotonic()
        method = str(scope["method"]).upper()
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        status, response_headers, body = await self._respond(scope, receive, method, raw_path, headers)
        # The path only: the query may carry the function key (``code``).
        logger.info("runner: %s %s -> %d in %.1f ms", method, scope["path"], status, (time.monotonic() - began) * 1000)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers]
                    + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _respond(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], method: str,
                       raw_path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BODY_BYTES:
            return 413, [], b""  # refused before a byte of it is read
        body = await _read_body(receive, MAX_REQUEST_BODY_BYTES)  # a chunked body: counted as it comes
        if body is None:
            return 413, [], b""
        scheme = "https" if self._tls is not None else "http"
        url = f"{scheme}://{headers.get('host', 'localhost')}{raw_path}" + (
            f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        assert self._event_grid is not None
        if self._event_grid.handles(scope["path"]):
            status, content_type, text = await asyncio.get_running_loop().run_in_executor(
                None, self._event_grid.handle, method, dict(query), headers, body)
            return status, [("content-type", content_type)] if content_type else [], text
        found = self._route(method, raw_path)
        if found is None:
            return 404, [], b""
        route, params = found
        if not route.anonymous and not self._has_key(headers, dict(query)):
            return 401, [], b""
        assert self._invoker is not None
        data = hostdata.http_request(self._invoker.worker, method=method, url=url, headers=headers,
                                     route_params=params, query=query, body=body)
        try:
            response = await asyncio.wrap_future(self._invoker.submit(route.function, data))
        except TimeoutError as exc:
            logger.error("runner: %s: %s", route.function.name, exc)
            return 500, [], b""
        failure = failure_of(response)
        if failure is not None:
            logger.error("runner: HTTP function %s failed: %s", route.function.name, failure)
            return 500, [], b""
        return _http_response(response.return_value.http)

    def _route(self, method: str, raw_path: str) -> tuple[_HttpRoute, dict[str, str]] | None:
        segments = [segment for segment in raw_path.split("/") if segment]
        if not segments or unquote(segments[0]).lower() != self._route_prefix.lower():
            return None
        # Literal routes win over parameterised ones, as in the host.
        for route in sorted(self._routes, key=lambda r: r.parameters):
            params = route.match(segments[1:])
            if params is not None and method in route.methods:
                return route, params
        return None

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
            self._http.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
        from functions import dependencies

        dependencies.reset()


class _IdleConnectionsAtStop(logging.Filter):
    """uvicorn says so, as an error, when kept-alive connections are still open as it stops; a
    stopped host closing them is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Cancel 0 running task")


IDLE_CONNECTIONS_AT_STOP = _IdleConnectionsAtStop()


async def _read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes | None:
    """The whole request body (chunked or not); None once it passes ``limit`` (the rest unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _http_response(http: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The worker's ``RpcHttp`` as status, headers and body."""
    body_data = http.body
    kind = body_data.WhichOneof("data")
    body = (body_data.bytes if kind == "bytes" else body_data.string.encode() if kind == "string"
            else body_data.json.encode() if kind == "json" else b"")
    headers = [(name, value) for name, value in http.headers.items() if name.lower() != "content-length"]
    return int(http.status_code or 200), headers, body
