"""URL facts shared by the clients and the triggers."""

from __future__ import annotations

import pytest

from shared.net import is_loopback_url


@pytest.mark.parametrize(("url", "loopback"), [
    ("https://127.0.0.1:8443", True), ("https://127.5.6.7", True), ("https://[::1]:9000/", True),
    ("https://LOCALHOST:1234", True), ("https://myvault.vault.azure.net", False),
    ("https://myvault.vault.usgovcloudapi.net/", False), ("https://10.0.0.4", False),
])
def test_loopback_urls_are_this_machine_only(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
