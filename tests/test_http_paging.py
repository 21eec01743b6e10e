"""Paging ``GET /api/onboardings`` by the state table's own continuation.

A module of its own: what is submitted must stay queued, so no host with the queue trigger may run
beside it (the other API tests keep one running for their whole module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.onboarding.conftest import deps, world

if TYPE_CHECKING:
    from tests.onboarding.conftest import World
    from tests.test_http_api import Api

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding


def test_the_list_pages_by_the_tables_continuation(intake: Api, world: World) -> None:
    bodies = [world.request(client_id="00000000-0000-4000-8000-00000000000" + str(i)) for i in range(1, 6)]
    for body in bodies:
        assert intake.submit(body).status_code == 202

    seen: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        params = {"top": "2", **({"continuationToken": token} if token else {})}
        page = intake.call("GET", "/onboardings", params=params).json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += [item["requestId"] for item in page["items"]]
        token = page["continuationToken"]
        if token is None:
            break
        assert pages < 10

    assert sorted(seen) == sorted(b["requestId"] for b in bodies)
    assert pages >= 3
    queued = intake.call("GET", "/onboardings", params={"status": "queued", "top": "200"}).json()
    assert {i["requestId"] for i in queued["items"]} == set(seen) and queued["continuationToken"] is None
    assert intake.call("GET", "/onboardings", params={"status": "failed"}).json()["items"] == []
