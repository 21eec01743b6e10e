"""Free loopback ports and waiting for a server to listen."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free now (for servers that cannot bind port 0 themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, *, deadline: float,
                  alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll until ``host:port`` accepts a connection; False at the deadline or if ``alive()`` fails."""
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
