"""HTTP plumbing shared by our hand-written JSON clients (Palette, Graph).

Why not azure-core's pipeline: Palette is not an Azure service (``ApiKey`` header, its own error
body, no ``x-ms-*`` headers) and a plain :class:`requests.Session` keeps cold start small. What we
do take from the Azure SDK is the contract seen by callers: the same azure-core exception family
(so the pipeline handles Palette, Graph, Key Vault and Tables failures alike), a ``session`` seam,
``close()`` and ``with`` support.

Retry rules (``JsonHttpClient._send``):

- **429** is retried for every method: the service throttled the call before doing any work.
- **500, 502, 503 and 504** are retried only for idempotent methods (GET, HEAD, OPTIONS, PUT,
  DELETE): a gateway or a busy server may answer after the request was carried out, and repeating
  a POST that creates something could create it twice (an API key is never deduplicated by name,
  for instance). A creating POST that fails so is left to its step, whose marker says whether to
  look for what the first call made before calling again.
- **Connection errors before the request was sent** (refused, DNS, connect timeout) are retried
  for every method. **Errors after it was sent** (read timeout, connection dropped mid-response)
  are retried only for idempotent methods. A create whose response was lost surfaces as
  :class:`~azure.core.exceptions.ServiceResponseError`; the caller (the onboarding step) then
  looks the resource up by name before trying again, which the HTTP layer cannot do.
- Other 4xx are never retried. A ``Retry-After`` header (seconds or HTTP date) replaces the
  computed backoff. Retrying stops when ``max_attempts`` is reached or when the next wait would
  end past ``budget_seconds`` counted from the first attempt.

Nothing here logs headers, query strings or bodies: log lines carry method, path, status, attempt
and delay only, so neither an API key nor a client secret can reach a log.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ODataV4Format,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

logger = logging.getLogger(__name__)

#: Methods whose repetition has the same effect as one call (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: The service refused the work: safe to repeat whatever the method.
RETRY_ANY_METHOD_STATUSES = frozenset({429})
#: The work may have happened: repeat only when doing it twice is harmless.
RETRY_IDEMPOTENT_STATUSES = frozenset({500, 502, 503, 504})

_STATUS_ERRORS: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    403: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    412: ResourceModifiedError,
}

#: Longest service error message we copy into an exception.
_MAX_MESSAGE_CHARS = 500
_REDACTED = "***"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard ``_send`` tries before giving up.

    Defaults: ``max_attempts=6`` (first try plus five retries), ``initial_delay=0.5`` s doubling
    per attempt up to ``max_delay=20`` s, ``budget_seconds=60`` for all attempts and waits together
    (well inside a Functions invocation), and ``jitter="full"``: each wait is drawn uniformly from
    zero to the exponential cap, so many workers hit by the same 429 do not come back in step.
    """

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 20.0
    budget_seconds: float = 60.0
    jitter: Literal["full", "none"] = "full"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1.")
        if self.initial_delay < 0 or self.max_delay < 0 or self.budget_seconds < 0:
            raise ValueError("RetryPolicy delays and budget must not be negative.")
        if self.jitter not in ("full", "none"):
            raise ValueError("RetryPolicy.jitter must be 'full' or 'none'.")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), before any Retry-After."""
        exponent = min(max(attempt - 1, 0), 62)  # keep 2**n finite for absurd attempt counts
        cap = min(self.max_delay, self.initial_delay * (2.0**exponent))
        if self.jitter == "none":
            return cap
        return (rng or random).uniform(0.0, cap)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP date), else ``None``.

    A date in the past means "now" (0). An unparseable value is ignored, so the caller falls back
    to its own backoff rather than failing on a header it cannot read.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
            return None
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    reference = time.time() if now is None else now
    return max(when.timestamp() - reference, 0.0)


def check_pace(rate_per_second: float, burst: int) -> None:
    """A pace needs a positive rate and a burst of at least one call (ValueError otherwise)."""
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive.")
    if burst < 1:
        raise ValueError("burst must be at least 1.")


class TokenBucket:
    """A token bucket: ``burst`` tokens at most, refilled at ``rate_per_second``. Thread-safe.

    ``reserve()`` takes a token now and returns how long the caller must wait before using it;
    tokens may go negative, which queues callers fairly without holding the lock while sleeping.
    """

    def __init__(self, rate_per_second: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_pace(rate_per_second, burst)
        self.rate_per_second = float(rate_per_second)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before the request may go out."""
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._updated, 0.0)
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_second)
            self._updated = now
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate_per_second


class Pace(Protocol):
    """What a client consults before each attempt: blocks until the call may go out."""

    def acquire(self, key: str) -> float:
        """Wait for a slot for ``key``; return the seconds waited."""
        ...


class RateLimiter:
    """One :class:`TokenBucket` per key (Palette limits each resource prefix separately)."""

    def __init__(self, rate_per_second: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        # Validate once here so a bad setting fails at construction, not on the first call.
        TokenBucket(rate_per_second, burst, clock=clock)
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.rate_per_second, self.burst, clock=self._clock)
                self._buckets[key] = bucket
            return bucket

    def acquire(self, key: str) -> float:
        """Block until a token for ``key`` is free; return the seconds waited."""
        wait = self._bucket(key).reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass(frozen=True)
class _TransportFailure:
    """A :class:`requests.RequestException` sorted by whether the request reached the service."""

    sent: bool
    timeout: bool
    retryable: bool
    cause: str


def _classify(exc: requests.RequestException) -> _TransportFailure:
    if isinstance(exc, requests.exceptions.SSLError):
        # A certificate problem does not go away on retry; it is a configuration error.
        return _TransportFailure(sent=False, timeout=False, retryable=False, cause="SSLError")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _TransportFailure(sent=False, timeout=True, retryable=True, cause="ConnectTimeout")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return _TransportFailure(sent=True, timeout=True, retryable=True, cause="ReadTimeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason: object = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(reason, (NewConnectionError, ConnectTimeoutError)):
            return _TransportFailure(sent=False, timeout=False, retryable=True, cause=type(reason).__name__)
        inner = reason.args[-1] if isinstance(reason, Exception) and reason.args else reason
        name = type(inner).__name__ if isinstance(inner, BaseException) else type(reason).__name__
        return _TransportFailure(sent=True, timeout=False, retryable=True, cause=name)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return _TransportFailure(sent=True, timeout=False, retryable=True, cause=type(exc).__name__)
    # InvalidURL, MissingSchema, TooManyRedirects and the like: our bug, not the network's.
    return _TransportFailure(sent=False, timeout=False, retryable=False, cause=type(exc).__name__)


def error_codes(exc: BaseException) -> set[str]:
    """The service's error code and its detail codes, from an error our clients raised."""
    error = getattr(exc, "error", None)
    if error is None:
        return set()
    codes = {str(error.code)} if getattr(error, "code", None) else set()
    codes |= {str(d.code) for d in getattr(error, "details", None) or [] if getattr(d, "code", None)}
    return codes


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds (``2026-12-31T23:59:59.000Z``).

    The form Palette's Go SDK emits and Graph accepts. A naive datetime is refused: guessing its
    zone would move an expiry by hours.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("A timestamp needs a timezone-aware datetime (for example UTC).")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp from Palette or Graph as an aware datetime; ``None`` if missing or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Graph sends seven fractional digits; keep at most the six a datetime holds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}" if digits else head + rest
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


#: Kept-alive connections per host: an onboarding's lookups go out together (up to a dozen) and
#: a worker runs several onboardings at once; a connection beyond the pool costs a TLS handshake.
POOL_SIZE = 32


def pooled_session() -> requests.Session:
    """A session keeping up to :data:`POOL_SIZE` connections per host (requests keeps 10)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class JsonHttpClient:
    """Base for a small JSON-over-HTTPS client: one reused session, retries, rate limits, errors.

    :param endpoint: Base URL such as ``https://api.spectrocloud.com``; paths are appended to it.
    :keyword timeout: Seconds for connect and for each read, on every call.
    :keyword session: A :class:`requests.Session` to use (tests, custom TLS trust). A session
        passed in belongs to the caller and is not closed by :meth:`close`.
    :keyword retry: The :class:`RetryPolicy`; defaults to ``RetryPolicy()``.
    :keyword rate_limiter: Client-side limiter (a :class:`Pace`: a :class:`RateLimiter`, or the
        app-wide :class:`~shared.state.pace.SharedPace`) consulted before every attempt whose call
        names a ``rate_key``; share one instance between clients to share the limit.
    """

    #: Service name used in exception messages.
    service_name = "service"
    #: Response headers that carry the service's request or audit id, first match wins.
    request_id_headers: tuple[str, ...] = ("request-id", "x-ms-request-id")

    def __init__(self, endpoint: str, *, timeout: float = 30, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None, rate_limiter: Pace | None = None) -> None:
        if not endpoint or not endpoint.startswith(("https://", "http://")):
            raise ValueError("endpoint must be an absolute http(s) URL, for example 'https://api.example.com'.")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds.")
        self._endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._owns_session = session is None
        self._session = session if session is not None else pooled_session()
        self._retry = retry or RetryPolicy()
        self._rate_limiter = rate_limiter
        self._rng = random.Random()
        # Seams for tests: how to wait, and the clock the time budget is measured on.
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def close(self) -> None:
        """Release the connection pool; unnecessary when the client is used as a context manager."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self._endpoint!r})"

    def _send(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None, rate_key: str | None = None,
              idempotent: bool | None = None, secrets: Iterable[str] = ()) -> requests.Response:
        """Send one logical request with retries; return a 2xx/3xx response or raise azure-core errors.

        ``idempotent`` overrides the method-based rule for POSTs that only read (a search).
        ``secrets`` are values from the request body that must be masked if the service echoes them
        in an error message.

        :raises ~azure.core.exceptions.HttpResponseError: or its subclasses, for status >= 400.
        :raises ~azure.core.exceptions.ServiceRequestError: when no connection could be made.
        :raises ~azure.core.exceptions.ServiceResponseError: when the response was lost.
        """
        method = method.upper()
        safe_to_repeat = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        secret_values = tuple(s for s in secrets if s)
        policy = self._retry
        url = self._endpoint + path
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            if self._rate_limiter is not None and rate_key is not None:
                self._rate_limiter.acquire(rate_key)
            try:
                # ``verify`` passed explicitly: requests lets REQUESTS_CA_BUNDLE override a session's
                # own CA path otherwise, so a session built to trust a private CA would not.
                response = self._session.request(method, url, json=json, params=params, headers=headers,
                                                 timeout=self._timeout, verify=self._session.verify)
            except requests.RequestException as exc:
                failure = _classify(exc)
                may_repeat = failure.retryable and (safe_to_repeat or not failure.sent)
                delay = policy.backoff(attempt, self._rng)
                if may_repeat and self._can_retry(attempt, started, delay):
                    logger.warning("%s %s failed (%s) on attempt %d; retrying in %.2fs",
                                   method, path, failure.cause, attempt, delay)
                    self._sleep(delay)
                    continue
                logger.warning("%s %s failed (%s) on attempt %d; giving up",
                               method, path, failure.cause, attempt)
                # The chained exception would otherwise keep the prepared request, whose headers
                # and body hold the API key or a client secret, reachable from ours.
                exc.request = None
                exc.response = None
                raise self._transport_error(method, path, failure, attempt, exc) from exc

            status = response.status_code
            logger.debug("%s %s -> %d (attempt %d)", method, path, status, attempt)
            self._observe_response(method, response)
            if status < 400:
                return response
            retryable = status in RETRY_ANY_METHOD_STATUSES or (
                safe_to_repeat and status in RETRY_IDEMPOTENT_STATUSES)
            if retryable:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                delay = retry_after if retry_after is not None else policy.backoff(attempt, self._rng)
                if self._can_retry(attempt, started, delay):
                    logger.warning("%s %s -> %d on attempt %d; retrying in %.2fs",
                                   method, path, status, attempt, delay)
                    response.close()
                    self._sleep(delay)
                    continue
                logger.warning("%s %s -> %d on attempt %d; giving up", method, path, status, attempt)
            raise self._response_error(method, path, response, secret_values)

    def _observe_response(self, method: str, response: requests.Response) -> None:
        """Seam for subclasses: sees every response as it arrives, retried or not, before it is judged
        (a service's usage headers say how close the caller is to being throttled)."""

    def _can_retry(self, attempt: int, started: float, delay: float) -> bool:
        if attempt >= self._retry.max_attempts:
            return False
        return (self._clock() - started) + delay <= self._retry.budget_seconds

    def _transport_error(self, method: str, path: str, failure: _TransportFailure, attempts: int,
                         exc: requests.RequestException) -> ServiceRequestError | ServiceResponseError:
        noun = "attempt" if attempts == 1 else "attempts"
        if failure.sent:
            message = (f"{self.service_name} {method} {path}: the response was lost ({failure.cause}) "
                       f"after {attempts} {noun}; the request may have been carried out")
            cls_response = ServiceResponseTimeoutError if failure.timeout else ServiceResponseError
            response_error = cls_response(message, error=exc)
            response_error.service = self.service_name  # type: ignore[attr-defined]
            return response_error
        message = (f"{self.service_name} {method} {path}: could not send the request ({failure.cause}) "
                   f"after {attempts} {noun}")
        cls_request = ServiceRequestTimeoutError if failure.timeout else ServiceRequestError
        request_error = cls_request(message, error=exc)
        request_error.service = self.service_name  # type: ignore[attr-defined]
        return request_error

    def _parse_error_body(self, response: requests.Response) -> tuple[str | None, str | None, list[str]]:
        """The service's ``(code, message, detail codes)`` from an error body: flat or under ``"error"``
        (Graph's OData errors carry the precise reason in ``details[].code``)."""
        try:
            body = response.json()
        except ValueError:
            return None, None, []
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body = body["error"]
        if not isinstance(body, dict):
            return None, None, []
        code = body.get("code")
        message = body.get("message")
        details = body.get("details")
        detail_codes = [str(d["code"]) for d in details if isinstance(d, dict) and isinstance(d.get("code"), str)] \
            if isinstance(details, list) else []
        return (code if isinstance(code, str) and code else None,
                message if isinstance(message, str) and message else None, detail_codes)

    def _response_error(self, method: str, path: str, response: requests.Response,
                        secrets: tuple[str, ...]) -> HttpResponseError:
        status = response.status_code
        code, service_message, detail_codes = self._parse_error_body(response)
        if service_message is not None:
            service_message = redact(service_message, secrets)
            if len(service_message) > _MAX_MESSAGE_CHARS:
                service_message = service_message[:_MAX_MESSAGE_CHARS] + "..."
        text = f"{self.service_name} {method} {path} returned {status}"
        if code:
            text += f" ({code})"
        text += f": {service_message}" if service_message else f": {response.reason or 'no message'}"
        cls = _STATUS_ERRORS.get(status, HttpResponseError)
        error = cls(message=text)
        error.status_code = status
        error.reason = response.reason
        error.service = self.service_name  # type: ignore[attr-defined]
        if code or service_message:
            error.error = ODataV4Format({"code": code, "message": service_message,
                                         "details": [{"code": c, "message": ""} for c in detail_codes]})
        headers = response.headers
        error.request_id = next(  # type: ignore[attr-defined]
            (headers[name] for name in self.request_id_headers if name in headers), None)
        response.close()
        return error
