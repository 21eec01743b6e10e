"""The shared HTTP plumbing: pure retry/rate logic, then retries and error mapping over real HTTP.

The over-the-wire half runs a tiny stand-in built on ``devstack.httpbase`` with the base's fault
injection (status, Retry-After, latency, dropped connections), so what is tested is what
``requests`` really sees from a socket.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st

from devstack.httpbase import Fault, HttpError, Request, Response, RunningServer, ServiceApp
from shared.clients.http import (
    JsonHttpClient,
    RateLimiter,
    RetryPolicy,
    TokenBucket,
    format_timestamp,
    parse_retry_after,
    parse_timestamp,
    redact,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

# -- pure logic: Retry-After ------------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5


def test_retry_after_negative_is_now() -> None:
    assert parse_retry_after("-4") == 0.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "nan", "inf", "Mon, 99 Foo 2024"])
def test_retry_after_unreadable_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)


def test_retry_after_past_http_date_is_now() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 600, usegmt=True), now=now) == 0.0


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_any_delay_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == float(seconds)


# -- pure logic: backoff ----------------------------------------------------------------------------


def test_retry_policy_documented_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay, policy.budget_seconds,
            policy.jitter) == (6, 0.5, 20.0, 60.0, "full")


def test_retry_policy_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[call-arg]
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 2  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"initial_delay": -1}, {"budget_seconds": -1},
                                    {"jitter": "half"}])
def test_retry_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@given(attempt=st.integers(min_value=1, max_value=200),
       initial=st.floats(min_value=0, max_value=5),
       maximum=st.floats(min_value=0, max_value=60),
       seed=st.integers())
def test_full_jitter_stays_within_the_exponential_cap(attempt: int, initial: float, maximum: float,
                                                      seed: int) -> None:
    policy = RetryPolicy(initial_delay=initial, max_delay=maximum)
    cap = min(maximum, initial * 2.0 ** min(attempt - 1, 62))
    delay = policy.backoff(attempt, random.Random(seed))
    assert 0.0 <= delay <= cap


def test_backoff_without_jitter_doubles_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=20, jitter="none")
    assert [policy.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 20, 20]


def test_redact_masks_every_occurrence() -> None:
    assert redact("a s3cr3t b s3cr3t", ["s3cr3t", ""]) == "a *** b ***"


# -- pure logic: timestamps ------------------------------------------------------------------------


def test_timestamp_format() -> None:
    assert format_timestamp(dt.datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)) == (
        "2026-12-31T23:59:59.999Z")
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_timestamp(dt.datetime(2027, 1, 1, 1, 0, tzinfo=plus_two)) == "2026-12-31T23:00:00.000Z"
    with pytest.raises(ValueError):
        format_timestamp(dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-31T23:59:59.000Z", dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
    ("2026-01-02T03:04:05.1234567Z", dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)),
    ("2026-01-02T03:04:05Z", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    ("2026-01-02T03:04:05+01:00", dt.datetime(2026, 1, 2, 2, 4, 5, tzinfo=dt.UTC)),
    ("not a time", None),
    (None, None),
])
def test_parse_timestamp(text: str | None, expected: dt.datetime | None) -> None:
    assert parse_timestamp(text) == expected


# -- pure logic: token bucket -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_paced() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2])


def test_token_bucket_refills_but_never_beyond_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.now += 60  # a long idle period refills to the burst, not to 600 tokens
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_token_bucket_is_fair_across_threads() -> None:
    """With time frozen, N concurrent callers get the burst free and then 1/rate apart, no two equal."""
    clock = FakeClock()
    bucket = TokenBucket(4, 2, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = bucket.reserve()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == pytest.approx([0.0, 0.0] + [n / 4 for n in range(1, 39)])


def test_rate_limiter_keys_are_independent() -> None:
    clock = FakeClock()
    slept: list[float] = []
    limiter = RateLimiter(5, 1, clock=clock, sleep=slept.append)
    assert limiter.acquire("/v1/users") == 0
    assert limiter.acquire("/v1/cloudaccounts") == 0
    assert limiter.acquire("/v1/users") == pytest.approx(0.2)
    assert slept == pytest.approx([0.2])


def test_rate_limiter_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 5)
    with pytest.raises(ValueError):
        RateLimiter(5, 0)


# -- over real HTTP: a tiny stand-in ----------------------------------------------------------------

SECRET = "Sup3r-S3cret-value~"


class EchoApp(ServiceApp):
    """Items by id; its error body is flat like Palette's (``{"code", "message"}``)."""

    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.router.add("GET", "/items/{id}", self._get)
        self.router.add("PUT", "/items/{id}", self._put)
        self.router.add("DELETE", "/items/{id}", lambda r: Response.empty(204))
        self.router.add("POST", "/items", lambda r: Response.json(201, {"uid": "new"}))
        self.router.add("POST", "/echo", self._echo)
        self.router.add("GET", "/html", lambda r: Response(502, b"<html>" + SECRET.encode() + b"</html>",
                                                           {"Content-Type": "text/html"}))

    def error_response(self, error: HttpError) -> Response:
        return Response.json(error.status, {"code": error.code, "message": error.message}, error.headers)

    def _get(self, request: Request) -> Response:
        item_id = request.path_params["id"]
        statuses = {"missing": (404, "ResourceNotFound"), "taken": (409, "AlreadyExists"),
                    "stale": (412, "PreconditionFailed"), "anon": (401, "Unauthorized"),
                    "denied": (403, "Forbidden"), "bad": (400, "BadRequest")}
        if item_id in statuses:
            status, code = statuses[item_id]
            raise HttpError(status, code, f"item {item_id}: {code}", headers={"X-Request-Id": "req-1"})
        return Response.json(200, {"id": item_id})

    def _put(self, request: Request) -> Response:
        return Response.empty(204)

    def _echo(self, request: Request) -> Response:
        # A careless service that quotes the request back in its error message.
        raise HttpError(400, "InvalidBody", f"cannot accept {request.json()}")


class EchoClient(JsonHttpClient):
    service_name = "Echo"
    request_id_headers = ("X-Request-Id",)

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(endpoint, **kwargs)
        self.delays: list[float] = []
        self.skipped = 0.0
        self._sleep = self._fake_sleep
        self._clock = lambda: time.monotonic() + self.skipped

    def _fake_sleep(self, seconds: float) -> None:
        # Record the backoff and move the budget's clock on instead of waiting it out.
        self.delays.append(seconds)
        self.skipped += seconds

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._send(method, path, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(EchoApp())
    yield running
    running.stop()


@pytest.fixture
def echo(server: RunningServer) -> Iterator[RunningServer]:
    server.reset()
    yield server
    server.reset()


def fast_policy(**overrides: Any) -> RetryPolicy:
    values: dict[str, Any] = {"initial_delay": 0.01, "max_delay": 0.05, "budget_seconds": 30}
    values.update(overrides)
    return RetryPolicy(**values)


@pytest.fixture
def client(echo: RunningServer) -> Iterator[EchoClient]:
    with EchoClient(echo.url, retry=fast_policy(), timeout=5) as c:
        yield c


def attempts(server: RunningServer, method: str, path: str) -> int:
    return sum(1 for r in server.requests if r.method == method and r.path == path)


def test_success_returns_the_response(client: EchoClient) -> None:
    assert client.send("GET", "/items/a").json() == {"id": "a"}
    assert client.delays == []


@pytest.mark.parametrize(("item", "error_type", "status", "code"), [
    ("missing", ResourceNotFoundError, 404, "ResourceNotFound"),
    ("taken", ResourceExistsError, 409, "AlreadyExists"),
    ("stale", ResourceModifiedError, 412, "PreconditionFailed"),
    ("anon", ClientAuthenticationError, 401, "Unauthorized"),
    ("denied", ClientAuthenticationError, 403, "Forbidden"),
    ("bad", HttpResponseError, 400, "BadRequest"),
])
def test_errors_map_to_azure_core_and_are_not_retried(client: EchoClient, echo: RunningServer, item: str,
                                                      error_type: type[HttpResponseError], status: int,
                                                      code: str) -> None:
    with pytest.raises(error_type) as caught:
        client.send("GET", f"/items/{item}")
    error = caught.value
    assert error.status_code == status
    assert error.error is not None and error.error.code == code
    assert f"item {item}: {code}" in str(error)
    assert error.request_id == "req-1"  # type: ignore[attr-defined]
    assert attempts(echo, "GET", f"/items/{item}") == 1


def test_non_json_error_body_is_not_copied_into_the_message(client: EchoClient) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.send("GET", "/html", idempotent=False)
    assert caught.value.status_code == 502
    assert SECRET not in str(caught.value)
    assert caught.value.error is None


def test_secret_echoed_by_the_service_is_masked(client: EchoClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HttpResponseError) as caught:
        client.send("POST", "/echo", json={"clientSecret": SECRET}, secrets=[SECRET])
    assert "InvalidBody" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert caught.value.error is not None and SECRET not in str(caught.value.error.message)
    assert SECRET not in caplog.text


def test_429_with_retry_after_is_honoured(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", status=429, times=2,
                         headers={"Retry-After": "2"}))
    assert client.send("GET", "/items/a").status_code == 200
    assert client.delays == [2.0, 2.0]
    assert attempts(echo, "GET", "/items/a") == 3


def test_429_with_http_date_retry_after(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", status=429, times=1,
                         headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}))
    assert client.send("GET", "/items/a").status_code == 200
    assert client.delays == [0.0]


def test_429_without_retry_after_backs_off_within_bounds(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="POST", path_regex="^/items$", status=429, times=3))
    assert client.send("POST", "/items").status_code == 201  # 429 is safe to repeat even for POST
    assert len(client.delays) == 3
    assert all(0 <= d <= cap for d, cap in zip(client.delays, [0.01, 0.02, 0.04], strict=True))


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_maybe_done_statuses_are_retried_only_when_idempotent(client: EchoClient, echo: RunningServer,
                                                              status: int) -> None:
    echo.add_fault(Fault(method=None, path_regex="^/items", status=status, times=1))
    assert client.send("PUT", "/items/a", json={}).status_code == 204
    assert attempts(echo, "PUT", "/items/a") == 2

    echo.add_fault(Fault(method="POST", path_regex="^/items$", status=status, times=1))
    with pytest.raises(HttpResponseError) as caught:
        client.send("POST", "/items")
    assert caught.value.status_code == status
    assert attempts(echo, "POST", "/items") == 1


def test_idempotent_override_lets_a_read_only_post_retry(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="POST", path_regex="^/items$", status=500, times=1))
    assert client.send("POST", "/items", idempotent=True).status_code == 201


def test_dropped_connection_on_get_is_retried(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", drop=True, times=1))
    assert client.send("GET", "/items/a").json() == {"id": "a"}
    assert attempts(echo, "GET", "/items/a") == 2


def test_dropped_connection_on_post_is_not_retried(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="POST", path_regex="^/items$", drop=True, times=1))
    with pytest.raises(ServiceResponseError) as caught:
        client.send("POST", "/items")
    assert "may have been carried out" in str(caught.value)
    assert attempts(echo, "POST", "/items") == 1
    # The chained requests error no longer holds the prepared request (headers and body).
    cause = caught.value.__cause__
    assert isinstance(cause, requests.RequestException) and cause.request is None


def test_read_timeout_on_get_is_retried_and_on_post_is_not(echo: RunningServer) -> None:
    with EchoClient(echo.url, retry=fast_policy(), timeout=0.5) as client:
        echo.add_fault(Fault(method="GET", path_regex="^/items/a$", latency_ms=3000, times=1))
        assert client.send("GET", "/items/a").status_code == 200
        echo.add_fault(Fault(method="POST", path_regex="^/items$", latency_ms=3000, times=1))
        with pytest.raises(ServiceResponseTimeoutError):
            client.send("POST", "/items")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_for_every_method_then_raises() -> None:
    client = EchoClient(f"http://127.0.0.1:{_closed_port()}", retry=fast_policy(max_attempts=3))
    with client, pytest.raises(ServiceRequestError) as caught:
        client.send("POST", "/items")  # never sent, so repeating a POST is safe
    assert not isinstance(caught.value, ServiceResponseError)
    assert len(client.delays) == 2
    assert "after 3 attempts" in str(caught.value)


def test_attempts_run_out(client: EchoClient, echo: RunningServer) -> None:
    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", status=503))
    with pytest.raises(HttpResponseError) as caught:
        client.send("GET", "/items/a")
    assert caught.value.status_code == 503
    assert attempts(echo, "GET", "/items/a") == 6


def test_budget_runs_out_before_attempts(echo: RunningServer) -> None:
    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", status=429, headers={"Retry-After": "5"}))
    client = EchoClient(echo.url, retry=fast_policy(max_attempts=100, budget_seconds=12))
    with client, pytest.raises(HttpResponseError) as caught:
        client.send("GET", "/items/a")
    assert caught.value.status_code == 429
    # 5 s + 5 s fit in 12 s; a third wait would not. (The waits are skipped on a fake clock.)
    assert client.delays == [5.0, 5.0]
    assert attempts(echo, "GET", "/items/a") == 3


def test_budget_is_wall_clock_including_requests(echo: RunningServer) -> None:
    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", status=503, latency_ms=100))
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.01, budget_seconds=0.5, max_attempts=1000)
    with JsonHttpClient(echo.url, retry=policy) as client, pytest.raises(HttpResponseError) as caught:
        client._send("GET", "/items/a")
    assert caught.value.status_code == 503
    assert 1 < attempts(echo, "GET", "/items/a") < 1000


def test_log_lines_carry_no_headers_query_or_body(client: EchoClient, echo: RunningServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.clients.http")
    echo.add_fault(Fault(method="POST", path_regex="^/items$", status=429, times=1))
    client.send("POST", "/items", json={"clientSecret": SECRET}, params={"token": SECRET},
                headers={"ApiKey": SECRET})
    assert "POST /items -> 429 on attempt 1; retrying" in caplog.text
    assert SECRET not in caplog.text


def test_rate_limiter_is_consulted_on_every_attempt(echo: RunningServer) -> None:
    keys: list[str] = []

    class Recording(RateLimiter):
        def acquire(self, key: str) -> float:
            keys.append(key)
            return 0.0

    echo.add_fault(Fault(method="GET", path_regex="^/items/a$", status=429, times=1))
    with EchoClient(echo.url, retry=fast_policy(), rate_limiter=Recording(1, 1)) as client:
        client.send("GET", "/items/a", rate_key="/items")
        client.send("GET", "/items/a")  # no key: not limited
    assert keys == ["/items", "/items"]


def test_own_session_is_closed_but_a_given_one_is_not(echo: RunningServer) -> None:
    closed: list[bool] = []

    class Tracking(requests.Session):
        def close(self) -> None:
            closed.append(True)
            super().close()

    given_session = Tracking()
    with JsonHttpClient(echo.url, session=given_session):
        pass
    assert closed == []
    given_session.close()


@pytest.mark.parametrize("endpoint", ["", "api.example.com", "ftp://x"])
def test_endpoint_must_be_an_http_url(endpoint: str) -> None:
    with pytest.raises(ValueError):
        JsonHttpClient(endpoint)
