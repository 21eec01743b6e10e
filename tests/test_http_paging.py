"""Paging ``GET /api/onboardings`` by the state table's own continuation, and its filters: the
list holds rotations and offboardings too, and ``operation`` picks them.

A module of its own: what is submitted must stay queued, so no host with the queue trigger may run
beside it (the other API tests keep one running for their whole module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.onboarding.conftest import deps, world
from tests.rotation.test_rotation import onboard
from tests.test_http_api import Api, hosted_app

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import Stack
    from tests.onboarding.conftest import World

__all__ = ["deps", "world"]  # fixtures shared with tests/onboarding


@pytest.fixture
def lister(stack: Stack, world: World) -> Iterator[Api]:
    """The routes that make requests, rotation and offboarding too, and the list; no queue trigger,
    so what they start stays queued."""
    with hosted_app(stack, only={"submit_onboarding", "list_onboardings", "rotate_account",
                                 "offboard_account"}) as local:
        yield Api(local.http_url, local.function_key)


def _listed(api: Api, **params: str) -> dict[str, str]:
    """Every listed request, one to a page, followed to the end: requestId to its operation."""
    found: dict[str, str] = {}
    token: str | None = None
    for _ in range(20):
        page: dict[str, Any] = api.call("GET", "/onboardings", params={
            **params, "top": "1", **({"continuationToken": token} if token else {})}).json()
        found.update({item["requestId"]: item["operation"] for item in page["items"]})
        token = page["continuationToken"]
        if token is None:
            return found
    raise AssertionError("the list did not end within 20 pages")


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


def test_the_list_holds_rotations_and_offboardings_and_the_operation_filter_picks_them(lister: Api,
                                                                                       world: World) -> None:
    to_rotate, to_offboard = onboard(world), onboard(world)
    queued = world.request()
    assert lister.submit(queued).status_code == 202
    rotation = lister.call("POST", f"/rotations/{to_rotate['accountName']}")
    offboarding = lister.call("DELETE", f"/accounts/{to_offboard['accountName']}")
    assert (rotation.status_code, offboarding.status_code) == (202, 202), (rotation.text, offboarding.text)
    rotation_id, offboarding_id = rotation.json()["id"], offboarding.json()["id"]
    onboardings = {body["requestId"]: "onboard" for body in (to_rotate, to_offboard, queued)}

    assert _listed(lister) == {**onboardings, rotation_id: "rotate", offboarding_id: "offboard"}
    assert _listed(lister, operation="onboarding") == onboardings == _listed(lister, operation="onboard")
    assert _listed(lister, operation="rotation") == {rotation_id: "rotate"} == _listed(lister, operation="rotate")
    assert _listed(lister, operation="offboarding") == {offboarding_id: "offboard"}
    assert _listed(lister, operation="offboard") == {offboarding_id: "offboard"}
    # With the status filter: both must hold.
    assert _listed(lister, operation="onboarding", status="queued") == {queued["requestId"]: "onboard"}
    assert _listed(lister, operation="rotation", status="queued") == {rotation_id: "rotate"}
    assert _listed(lister, operation="rotation", status="succeeded") == {}


def test_an_unknown_operation_is_a_400_naming_the_parameter_and_the_values_it_takes(lister: Api) -> None:
    for value in ("rotations", "ONBOARDING", "renewApiKey", ""):
        response = lister.call("GET", "/onboardings", params={"operation": value})

        assert response.status_code == 400, (value, response.text)
        errors = response.json()["errors"]
        assert [error["path"] for error in errors] == ["operation"], value
        assert all(name in errors[0]["message"] for name in ("'onboarding'", "'rotation'", "'offboarding'"))
        assert "operation" in response.json()["detail"]
