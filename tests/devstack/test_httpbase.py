"""The knobs every stand-in shares (``devstack.httpbase``): a latency added to every request and
faults that hit a share of requests, both set over the admin API as the benchmarks set them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from devstack.httpbase import Request, Response, RunningServer, ServiceApp

pytestmark = pytest.mark.timeout(60)


class _Echo(ServiceApp):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.router.add("GET", "/things/{uid}", self._get)

    def _get(self, request: Request) -> Response:
        self.handled += 1
        return Response.json(200, {"uid": request.path_params["uid"]})


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = RunningServer(_Echo())
    yield running
    running.stop()


def _admin(server: RunningServer, method: str, path: str, body: object = None) -> requests.Response:
    return requests.request(method, f"{server.url}/_devstack/{path}", json=body, timeout=10)


def test_latency_is_added_to_every_request_but_the_admin_api_and_spared_agents(server: RunningServer) -> None:
    assert _admin(server, "POST", "latency", {"ms": 120}).json() == {"ms": 120, "exceptUserAgent": None}
    with requests.Session() as session:
        session.get(f"{server.url}/things/warm", timeout=10)  # the connection is open before timing
        timed = session.get(f"{server.url}/things/a", timeout=10)
    assert timed.elapsed.total_seconds() >= 0.12
    assert _admin(server, "GET", "latency").elapsed.total_seconds() < 0.12
    _admin(server, "POST", "latency", {"ms": 120, "exceptUserAgent": "^devstack-"})
    with requests.Session() as session:
        session.get(f"{server.url}/things/warm", headers={"User-Agent": "devstack-x"}, timeout=10)
        spared = session.get(f"{server.url}/things/b", headers={"User-Agent": "devstack-palette"}, timeout=10)
    assert spared.elapsed.total_seconds() < 0.12
    recorded = _admin(server, "GET", "requests").json()["items"]
    assert all(r["time"] >= r["started"] for r in recorded)
    assert _admin(server, "POST", "reset").status_code == 204
    assert _admin(server, "GET", "latency").json()["ms"] == 0


def test_a_fault_with_a_probability_hits_about_that_share_and_is_repeatable(server: RunningServer) -> None:
    def statuses() -> list[int]:
        _admin(server, "DELETE", "faults")
        _admin(server, "POST", "faults", {"path": "^/things/", "status": 503, "probability": 0.25, "seed": 11})
        return [requests.get(f"{server.url}/things/{n}", timeout=10).status_code for n in range(200)]

    first = statuses()
    assert 25 <= first.count(503) <= 75 and set(first) == {200, 503}
    assert statuses() == first  # the same seed draws the same requests


@pytest.mark.parametrize("body", [{"path": ".", "probability": 0}, {"path": ".", "probability": 1.5},
                                  {"path": ".", "probability": True}])
def test_a_bad_probability_is_refused(server: RunningServer, body: dict[str, object]) -> None:
    answer = _admin(server, "POST", "faults", body)
    assert answer.status_code == 400 and "probability" in answer.text


@pytest.mark.parametrize("body", [{"ms": -1}, {"ms": 60_001}, {"ms": "50"}, {"ms": 5, "exceptUserAgent": 3}, []])
def test_a_bad_latency_is_refused(server: RunningServer, body: object) -> None:
    assert _admin(server, "POST", "latency", body).status_code == 400
