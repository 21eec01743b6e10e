"""The local host in a process of its own, so tests and benchmarks can kill it as production does.

``python -m devstack run`` in a child process against a running stack's settings; :meth:`kill`
sends SIGKILL (no ``finally``, no lease released, no message settled: the broker gets the locks
back only when they expire), :meth:`start` brings up a fresh one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

ROOT = Path(__file__).resolve().parent.parent
_SERVING = b"function app hosted locally"


class HostProcess:
    """One ``devstack run`` child at a time, its output appended to ``workdir/host.log``."""

    def __init__(self, workdir: Path, settings: Mapping[str, str], *, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.extra_args = list(extra_args or [])
        workdir.mkdir(parents=True, exist_ok=True)
        settings_path = workdir / "settings.json"
        settings_path.write_text(json.dumps(dict(settings)))
        settings_path.chmod(0o600)
        self.log_path = workdir / "host.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("the host is already running")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "devstack", "run", "--workdir", str(self.workdir), "--port", "0",
                 *self.extra_args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the host and wait until it is gone."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)
        self.kills += 1

    def stop(self, timeout: float = 20) -> None:
        """Stop it the polite way (SIGTERM, as Ctrl-C), falling back to SIGKILL."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def pid(self) -> int | None:
        """The running host's process id (None when it is not running)."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def wait_serving(self, timeout: float = 30) -> None:
        """Until the latest host says it serves, so a kill hits a working host."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the host exited early; see {self.log_path}")
            if self.log_path.exists() and self.log_path.read_bytes().count(_SERVING) >= self.starts:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the host did not start within {timeout:.0f} s; see {self.log_path}")
