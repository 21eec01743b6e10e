"""A new user's path through the README, as processes: ``devstack up --detach``, ``devstack run``,
calls with the printed key and CA bundle, an example onboarded, then ``devstack down`` under the
running ``run`` and Ctrl-C.

Everything runs in a work folder of its own, with its own stack, so the session's stack is not
touched. Only the outcomes a user sees are checked: files written, what is printed, HTTP answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.api_contract import conforms
from tests.onboarding.conftest import wait_for
from tests.test_stack import CONTRACT_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = json.loads((ROOT / "examples" / "01-plain.json").read_text())


def _devstack(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False, **kwargs)


@pytest.fixture
def env() -> dict[str, str]:
    """The environment of a fresh shell: none of the stack's settings set."""
    clean = {k: v for k, v in os.environ.items() if k not in CONTRACT_SETTINGS}
    clean["PYTHONPATH"] = str(ROOT)
    return clean


@pytest.fixture
def stack_up(tmp_path: Path, env: dict[str, str]) -> Iterator[Path]:
    up = _devstack("up", "--detach", "--workdir", str(tmp_path), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield tmp_path
    finally:
        _devstack("down", "--workdir", str(tmp_path), env=env)


def test_up_run_curl_an_example_then_down_under_run_and_ctrl_c(stack_up: Path, env: dict[str, str]) -> None:
    workdir = stack_up
    log = (workdir / "stack.log").read_text()
    assert f"app registration {EXAMPLE['azure']['clientId']} (01-plain.json)" in log
    assert "Key Vault secret wrong-secret-demo" in log

    out, err = (workdir / "run.out").open("w+"), (workdir / "run.err").open("w+")
    run = subprocess.Popen([sys.executable, "-m", "devstack", "run", "--workdir", str(workdir), "--port", "0"],
                           cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        app = wait_for(lambda: (workdir / "app.json").exists() and json.loads((workdir / "app.json").read_text()),
                       "run to write app.json", timeout=30)
        base, key = app["baseUrl"], app["functionKey"]
        ca = json.loads((workdir / "settings.json").read_text())["REQUESTS_CA_BUNDLE"]
        assert base.startswith("https://127.0.0.1:") and base.endswith("/api")
        printed = wait_for(lambda: "curl --cacert" in (s := (workdir / "run.out").read_text()) and s,
                           "run to print how to call it", timeout=10)
        assert f"-H 'x-functions-key: {key}'" in printed
        assert f"{base}/onboardings" in printed

        # As the host: no key or a wrong one is a 401, the header or the code parameter pass.
        assert requests.get(f"{base}/onboardings", verify=ca, timeout=10).status_code == 401
        assert requests.get(f"{base}/onboardings", verify=ca, timeout=10,
                            headers={"x-functions-key": key + "x"}).status_code == 401
        assert conforms(requests.get(f"{base}/onboardings", params={"code": key}, verify=ca, timeout=10)).ok
        assert conforms(requests.get(f"{base}/health", verify=ca, timeout=30)).ok

        # The README's curl line, with the seeded example: onboarded as in the demo.
        headers = {"x-functions-key": key, "Content-Type": "application/json"}
        accepted = conforms(requests.post(f"{base}/onboardings", data=json.dumps(EXAMPLE), headers=headers,
                                          verify=ca, timeout=30))
        assert accepted.status_code == 202, accepted.text

        def finished() -> dict[str, Any] | None:
            state: dict[str, Any] = conforms(requests.get(accepted.headers["Location"], headers=headers, verify=ca,
                                                          timeout=10)).json()
            return state if state["status"] in {"succeeded", "failed"} else None

        assert wait_for(finished, "the example to finish", timeout=90)["status"] == "succeeded"
        wait_for(lambda: f"request {EXAMPLE['requestId']}: succeeded in" in (workdir / "run.err").read_text(),
                 "the onboarding's outcome line", timeout=10)

        # The stack goes away under the running host: said once, retried quietly.
        down = _devstack("down", "--workdir", str(workdir), env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        time.sleep(12)
        logged = (workdir / "run.err").read_text()
        assert logged.count("the Service Bus broker cannot be reached") == 1, logged
        assert "Traceback" not in logged, logged
        assert run.poll() is None

        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 0  # a clean stop, not the grace period's exit (1)
        assert not (workdir / "app.json").exists()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        out.close()
        err.close()


def test_a_second_up_refuses_naming_the_running_stack(stack_up: Path, env: dict[str, str]) -> None:
    pid = (stack_up / "stack.pid").read_text().strip()
    again = _devstack("up", "--detach", "--workdir", str(stack_up), env=env)

    assert again.returncode == 1
    assert f"already running (pid {pid}" in again.stdout and "devstack down" in again.stdout
    assert (stack_up / "stack.pid").read_text().strip() == pid  # the running one is untouched


def test_run_on_a_busy_port_says_so_in_one_line_before_any_warm_up(stack_up: Path, env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _devstack("run", "--workdir", str(stack_up), "--port", str(port), env=env)

    assert run.returncode == 1
    assert run.stdout.strip().splitlines() == [run.stdout.strip()]
    assert f"port {port} is in use" in run.stdout and "--port 0" in run.stdout
    assert "warmup" not in run.stdout + run.stderr


def test_a_stop_that_hangs_leaves_after_the_grace_period(env: dict[str, str]) -> None:
    """``up`` and ``run`` stop on Ctrl-C or SIGTERM; a stop that hangs (here: one that never ends)
    does not keep the process, and the ports, forever."""
    script = ("import os, signal, threading, time\n"
              "import devstack.__main__ as cli\n"
              "cli.STOP_GRACE_SECONDS = 0.5\n"
              "threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
              "cli._wait_for_signal()\n"
              "print('stopping', flush=True)\n"
              "time.sleep(60)  # a stop that hangs\n")
    hung = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30, check=False)

    assert hung.returncode == 1
    assert hung.stdout.splitlines() == ["stopping", "stop asked again, or stopping took too long: leaving now"]
