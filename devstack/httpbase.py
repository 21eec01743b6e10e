"""A small threaded HTTP(S) server shared by the JSON stand-ins (Key Vault, Graph, Palette).

Each stand-in supplies a :class:`ServiceApp`: a router of handlers over its pure-Python backend,
an error formatter in the real service's wire format, and optional per-request checks (auth, rate
limits). This module adds what they all need: routing with path parameters, a record of every
request, fault injection (status, latency, dropped connection; on every matching request, a set
number of them, or a share of them at random), a latency added to every request (what a network
between the app and the service would add), and a ``/_devstack/`` admin surface (state, requests,
reset, faults, latency). A handler that raises never leaks a stack trace: the client gets
the service's own error body with status 500.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_devstack"
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class Request:
    """One parsed HTTP request as handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    path_params: dict[str, str] = field(default_factory=dict)
    #: The request target exactly as sent (path and query, still encoded): what a proxy passes on.
    target: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def json(self) -> Any:
        """The body parsed as JSON; raises :class:`HttpError` 400 when it is not JSON."""
        if not self.body:
            raise HttpError(400, "BadRequest", "The request body is empty; a JSON body is required.")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise HttpError(400, "BadRequest", f"The request body is not valid JSON: {exc}") from None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(payload).encode(), merged)

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


class HttpError(Exception):
    """Raised by handlers to answer with the service's error body."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


Handler = Callable[[Request], Response]


class Router:
    """Maps ``METHOD /path/{param}`` patterns to handlers; ``{param}`` matches one segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern.rstrip("/") or "/")
        self._routes.append((method.upper(), re.compile(f"^{regex}/?$"), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler
        return decorator

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """Return the handler and path parameters, or raise 404/405 as :class:`HttpError`."""
        path_matched = False
        for route_method, regex, handler in self._routes:
            match = regex.match(path)
            if match:
                path_matched = True
                if route_method == method:
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}
        if path_matched:
            raise HttpError(405, "MethodNotAllowed", f"The method {method} is not allowed on {path}.")
        raise HttpError(404, "NotFound", f"No such route: {method} {path}.")


@dataclass
class Fault:
    """A fault injected on matching requests: status and/or latency and/or a dropped connection.

    ``times`` counts how many matching requests it still applies to (``None``: all of them).
    ``probability`` applies it to that share of matching requests, drawn at random (``seed``
    makes the draw repeatable); a request it spares goes on to the next fault, so several faults
    of 5 % each on one path fail about the sum of them. ``except_user_agent`` spares requests
    whose ``User-Agent`` matches it: the stand-ins' own calls to each other (Palette asking Entra
    about credentials) are not the network between the app and a service.
    ``drop_after_handling`` drops the connection only after the request was carried out: the
    response is lost, as when a network fails on the way back, which is what tests of "did my
    create happen?" need. ``after_handling`` with a ``status`` carries the request out and then
    answers with that status instead (a gateway's 503 after the backend did the work).
    """

    method: str | None
    path_regex: str
    status: int | None = None
    body: Any = None
    latency_ms: int = 0
    drop: bool = False
    drop_after_handling: bool = False
    after_handling: bool = False
    times: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    probability: float = 1.0
    except_user_agent: str | None = None
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self._rng.seed(self.seed)

    def matches(self, method: str, path: str, user_agent: str = "") -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.except_user_agent and re.search(self.except_user_agent, user_agent):
            return False
        return re.search(self.path_regex, path) is not None

    def draw(self) -> bool:
        """Whether this matching request is one the fault applies to (always, unless a share)."""
        return self.probability >= 1.0 or self._rng.random() < self.probability


class ServiceApp:
    """Base for a stand-in's HTTP surface; subclasses register routes in ``__init__``."""

    name = "service"

    def __init__(self) -> None:
        self.router = Router()

    def error_response(self, error: HttpError) -> Response:
        """Render an error in the service's own wire format."""
        return Response.json(error.status, {"error": {"code": error.code, "message": error.message}},
                             error.headers)

    def before_request(self, request: Request) -> Response | None:
        """Per-request checks (auth, rate limits); return a response to short-circuit."""
        return None

    def reset(self) -> None:
        """Return the backend to its freshly started, seeded state."""

    def state(self) -> Any:
        """A JSON view of the backend for the admin API (secret values masked)."""
        return {}

    def redact(self, body: Any) -> Any:
        """Mask secret values in a recorded request body (the admin API shows what was received)."""
        return body

    def admin(self, request: Request, subpath: str) -> Response | None:
        """Service-specific admin routes under ``/_devstack/``; ``None`` when not handled."""
        return None

    def bound(self, host: str, port: int) -> None:
        """Called once the listening socket has its address, before the first request.

        Ports are picked at bind time, so a service whose identity depends on its own address
        (Key Vault's challenge resource) learns it here.
        """


@dataclass
class RecordedRequest:
    """One request as received: ``started`` when it arrived, ``time`` when it was answered (or
    dropped), both POSIX seconds; any added latency lies between them, at the start."""

    time: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int
    started: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: ServiceApp,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(address, _RequestHandler)
        self.app = app
        self.tls = tls
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        #: Added to every request but the admin API's, before any fault (``/_devstack/latency``).
        self.latency_ms = 0
        self.latency_except_user_agent: str | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake happens in the handler thread, so a slow or broken client cannot stall
            # the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def take_fault(self, method: str, path: str, user_agent: str = "") -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, user_agent) and fault.draw():
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("%s: connection error from %s", self.app.name, client_address, exc_info=True)


# Header names never kept in the request record.
_REDACTED_HEADERS = {"authorization", "apikey", "cookie", "x-identity-header"}


class LoopbackHandler(BaseHTTPRequestHandler):
    """What every loopback HTTP(S) server here needs of its handler: no Nagle delay, the TLS
    handshake done in the handler's thread (not the accept loop's), and a client that hangs up or
    fails the handshake closing its connection quietly instead of printing a traceback."""

    #: Seconds a connection may sit idle (None: no limit).
    socket_timeout: float | None = None

    def setup(self) -> None:
        super().setup()
        if self.socket_timeout is not None:
            self.connection.settimeout(self.socket_timeout)
        # Headers and body go out in separate writes; without this, Nagle plus delayed ACK adds
        # ~40 ms to every response on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            self.close_connection = True


class _RequestHandler(LoopbackHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    error_content_type = "application/json"
    socket_timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s: " + format, self.server.app.name, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed request lines and headers get the service's error body, never an HTML page.
        error = HttpError(code, "BadRequest" if code < 500 else "InternalError", message or "Bad request")
        self._write(self.server.app.error_response(error))
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_MERGE = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            total = 0
            while True:
                try:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise HttpError(400, "BadRequest", "The chunked request body is malformed.") from None
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise HttpError(413, "RequestEntityTooLarge", "The request body is too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length_header = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_header)
        except ValueError:
            raise HttpError(400, "BadRequest", "The Content-Length header is not a number.") from None
        if length < 0:
            raise HttpError(400, "BadRequest", "The Content-Length header is negative.")
        if length > MAX_BODY_BYTES:
            raise HttpError(413, "RequestEntityTooLarge", "The request body is too large.")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path or "/"
        method = self.command.upper()
        request = Request(method, path, parse_qs(split.query, keep_blank_values=True),
                          {k.lower(): v for k, v in self.headers.items()}, b"", target=self.path)
        started = time.time()
        try:
            request.body = self._read_body()
            if path.startswith(ADMIN_PREFIX + "/") or path == ADMIN_PREFIX:
                response = self._admin(request, path[len(ADMIN_PREFIX):].strip("/"))
            else:
                user_agent = request.header("user-agent") or ""
                self._add_latency(user_agent)
                fault = self.server.take_fault(method, path, user_agent)
                if fault is not None:
                    if fault.latency_ms:
                        time.sleep(fault.latency_ms / 1000)
                    if fault.drop:
                        self._record(request, 0, started)
                        self._drop()
                        return
                response = self._faulted_or_handled(request, fault)
                if fault is not None and fault.drop_after_handling:
                    self._record(request, response.status, started)
                    self._drop()
                    return
        except HttpError as error:
            response = app.error_response(error)
        except Exception:
            logger.exception("%s: handler failed for %s %s", app.name, method, path)
            response = app.error_response(HttpError(500, "InternalError", "The server had an internal error."))
        if not path.startswith(ADMIN_PREFIX):
            self._record(request, response.status, started)
        self._write(response, head=method == "HEAD")

    def _add_latency(self, user_agent: str) -> None:
        server = self.server
        if server.latency_ms <= 0:
            return
        spared = server.latency_except_user_agent
        if spared and re.search(spared, user_agent):
            return
        time.sleep(server.latency_ms / 1000)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _faulted_or_handled(self, request: Request, fault: Fault | None) -> Response:
        app = self.server.app
        if fault is not None and fault.status is not None and fault.after_handling:
            self._faulted_or_handled(request, None)
        if fault is not None and fault.status is not None:
            if fault.body is not None:
                return Response.json(fault.status, fault.body, fault.headers)
            error = HttpError(fault.status, "InjectedFault", f"Injected fault: status {fault.status}.",
                              headers=fault.headers)
            return app.error_response(error)
        early = app.before_request(request)
        if early is not None:
            return early
        handler, params = app.router.resolve(request.method, request.path)
        request.path_params = params
        return handler(request)

    def _record(self, request: Request, status: int, started: float) -> None:
        try:
            body: Any = json.loads(request.body) if request.body else None
        except (ValueError, UnicodeDecodeError, RecursionError):  # e.g. "[" * 5000
            body = request.body.decode("utf-8", "replace")
        body = self.server.app.redact(body)
        headers = {k: ("***" if k in _REDACTED_HEADERS else v) for k, v in request.headers.items()}
        with self.server.lock:
            self.server.requests.append(RecordedRequest(time.time(), request.method, request.path,
                                                        request.query, headers, body, status, started))

    def _admin(self, request: Request, subpath: str) -> Response:
        server = self.server
        app = server.app
        if subpath == "state" and request.method == "GET":
            return Response.json(200, app.state())
        if subpath == "requests" and request.method == "GET":
            with server.lock:
                items = [vars(r) for r in server.requests]
            return Response.json(200, {"items": items})
        if subpath == "requests" and request.method == "DELETE":
            with server.lock:
                server.requests.clear()
            return Response.empty()
        if subpath == "reset" and request.method == "POST":
            with server.lock:
                server.requests.clear()
                server.faults.clear()
                server.latency_ms = 0
                server.latency_except_user_agent = None
            app.reset()
            return Response.empty()
        if subpath == "faults" and request.method == "POST":
            spec = request.json()
            if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
                raise HttpError(400, "BadRequest", "A fault needs at least a 'path' regular expression.")
            probability = spec.get("probability", 1.0)
            if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability <= 1:
                raise HttpError(400, "BadRequest", "probability must be a number above 0 and at most 1.")
            fault = Fault(method=spec.get("method"), path_regex=spec["path"], status=spec.get("status"),
                          body=spec.get("body"), latency_ms=int(spec.get("latencyMs", 0)),
                          drop=bool(spec.get("drop", False)),
                          drop_after_handling=bool(spec.get("dropAfterHandling", False)),
                          after_handling=bool(spec.get("afterHandling", False)), times=spec.get("times"),
                          headers=dict(spec.get("headers") or {}), probability=float(probability),
                          except_user_agent=spec.get("exceptUserAgent"), seed=spec.get("seed"))
            with server.lock:
                server.faults.append(fault)
            return Response.empty(201)
        if subpath == "faults" and request.method == "DELETE":
            with server.lock:
                server.faults.clear()
            return Response.empty()
        if subpath == "latency" and request.method == "GET":
            return Response.json(200, self._latency_config())
        if subpath == "latency" and request.method == "POST":
            spec = request.json()
            ms = spec.get("ms") if isinstance(spec, dict) else None
            spared = spec.get("exceptUserAgent") if isinstance(spec, dict) else None
            if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 60_000 \
                    or not isinstance(spared, str | None):
                raise HttpError(400, "BadRequest", 'The latency body is {"ms": 0-60000, "exceptUserAgent"?: regex}.')
            with server.lock:
                server.latency_ms = int(ms)
                server.latency_except_user_agent = spared
            return Response.json(200, self._latency_config())
        handled = app.admin(request, subpath)
        if handled is not None:
            return handled
        raise HttpError(404, "NotFound", f"No such admin route: {request.method} {ADMIN_PREFIX}/{subpath}.")

    def _latency_config(self) -> dict[str, Any]:
        return {"ms": self.server.latency_ms, "exceptUserAgent": self.server.latency_except_user_agent}

    def _write(self, response: Response, head: bool = False) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body and not head:
                self.wfile.write(response.body)
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True


class RunningServer:
    """A stand-in serving on a loopback port in a background thread."""

    def __init__(self, app: ServiceApp, *, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._server = _Server((host, port), app, tls)
        self.host = host
        self.port = self._server.server_address[1]
        try:
            app.bound(host, self.port)
        except BaseException:
            self._server.server_close()
            raise
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"devstack-{app.name}", daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._server.lock:
            return list(self._server.requests)

    def add_fault(self, fault: Fault) -> None:
        with self._server.lock:
            self._server.faults.append(fault)

    def clear_faults(self) -> None:
        with self._server.lock:
            self._server.faults.clear()

    def set_latency(self, ms: int, *, except_user_agent: str | None = None) -> None:
        with self._server.lock:
            self._server.latency_ms = ms
            self._server.latency_except_user_agent = except_user_agent

    def reset(self) -> None:
        with self._server.lock:
            self._server.requests.clear()
            self._server.faults.clear()
            self._server.latency_ms = 0
            self._server.latency_except_user_agent = None
        self.app.reset()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
