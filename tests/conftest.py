"""Session fixtures: the local stack, started once on free loopback ports, and the app's clients.

The stack is the same :class:`devstack.stack.Stack` that ``python -m devstack up`` starts. Tests
that change a stand-in's behaviour (faults, config) undo it; ``stack_reset`` empties every stand-in
for tests that count what exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devstack.runner import LocalHost
from devstack.stack import Stack, StackOptions

if TYPE_CHECKING:
    from tests.onboarding.conftest import World
    from tests.test_http_api import Api


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("devstack")
    tools = Path(__file__).resolve().parent.parent / ".devstack" / "tools"
    running = Stack(StackOptions(workdir=workdir, tools_dir=tools))
    settings = running.start()
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield running
    finally:
        running.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def settings(stack: Stack) -> dict[str, str]:
    return dict(stack.settings)


@pytest.fixture(scope="module")
def host(stack: Stack) -> Iterator[LocalHost]:
    """The whole app in the local Functions host (HTTPS, function keys), one per test module."""
    from tests.test_http_api import hosted_app

    with hosted_app(stack) as local:
        yield local


@pytest.fixture
def intake(stack: Stack, world: World) -> Iterator[Api]:
    """The intake routes only (no queue trigger), so what is submitted stays queued."""
    from tests.test_http_api import Api, hosted_app

    with hosted_app(stack, only={"submit_onboarding", "list_onboardings", "get_onboarding"}) as local:
        yield Api(local.http_url, local.function_key)
