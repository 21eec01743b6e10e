"""Fixtures shared by the client tests that run against the Palette stand-in."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.httpbase import RunningServer


@pytest.fixture
def admin(palette: RunningServer) -> Iterator[requests.Session]:
    """The stand-in's /_devstack surface; the stand-in is reset around every test. ``palette`` is
    the module's own server (each module starts the stand-in with the validator it needs)."""
    session = requests.Session()
    session.post(f"{palette.url}/_devstack/reset", timeout=5).raise_for_status()
    yield session
    session.post(f"{palette.url}/_devstack/reset", timeout=5).raise_for_status()
    session.close()
