"""Azurite, the real Azure Storage emulator, installed from npm at a pinned version and started on
free loopback ports.

3.35.0 is the newest release that runs on Node 20 (3.36+ needs Node 21/22).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devstack.ports import free_port, wait_for_port

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

AZURITE_VERSION = "3.35.0"
ACCOUNT_NAME = "devstoreaccount1"
# The well-known development storage key, published in Azure's documentation; not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite could not be installed or started; the message says what to check."""


def install_azurite(tools_dir: Path) -> Path:
    """Install the pinned Azurite under ``tools_dir`` once and return its launcher script."""
    prefix = tools_dir / f"azurite-{AZURITE_VERSION}"
    launcher = prefix / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"
    if launcher.exists():
        return launcher
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteError("npm was not found on PATH; install Node.js 20 and npm to run Azurite.")
    prefix.mkdir(parents=True, exist_ok=True)
    logger.info("installing azurite@%s into %s", AZURITE_VERSION, prefix)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--no-save",
         "--prefix", str(prefix), f"azurite@{AZURITE_VERSION}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not launcher.exists():
        raise AzuriteError(f"npm install azurite@{AZURITE_VERSION} failed:\n{result.stderr[-2000:]}")
    return launcher


@dataclass
class RunningAzurite:
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    host: str = "127.0.0.1"
    log_path: Path | None = None
    timeout_seconds: float = 20

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_seconds
        for port in (self.blob_port, self.queue_port, self.table_port):
            if not wait_for_port(self.host, port, deadline=deadline, alive=lambda: self.process.poll() is None):
                self.stop()
                raise AzuriteError(f"Azurite did not start; see {self.log_path}")

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT_NAME};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT_NAME};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT_NAME};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_azurite(tools_dir: Path, workdir: Path, *, host: str = "127.0.0.1",
                  timeout_seconds: float = 20) -> RunningAzurite:
    """Start Azurite (blob, queue, table) in memory on free ports; :meth:`RunningAzurite.wait_ready`
    waits until it answers, so the caller can start other servers meanwhile."""
    launcher = install_azurite(tools_dir)
    node = shutil.which("node")
    if node is None:
        raise AzuriteError("node was not found on PATH; install Node.js 20 to run Azurite.")
    ports = [free_port(host) for _ in range(3)]
    log = (workdir / "azurite.log").open("wb")
    process = subprocess.Popen(
        [node, str(launcher), "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry",
         "--loose",
         "--blobHost", host, "--blobPort", str(ports[0]),
         "--queueHost", host, "--queuePort", str(ports[1]),
         "--tableHost", host, "--tablePort", str(ports[2])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    return RunningAzurite(process, blob_port=ports[0], queue_port=ports[1], table_port=ports[2], host=host,
                          log_path=workdir / "azurite.log", timeout_seconds=timeout_seconds)
