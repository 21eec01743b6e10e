"""``python -m devstack events``, as a user runs it beside the app: the events an onboarding
publishes appear as lines (or as CloudEvent JSON), ``--request`` keeps one request's, following
shows new ones until Ctrl-C, and without a running stack it says how to start one.

The command runs as a process against the session's stack, whose settings are written to a work
folder of the test's own (as ``devstack up`` writes them); the onboardings run through the app's
own pipeline, which publishes to the events topic.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shared.engine import OutcomeKind
from tests.onboarding.conftest import deps, wait_for, world
from tests.test_devstack_cli import env

if TYPE_CHECKING:
    from devstack.stack import Stack
    from tests.onboarding.conftest import World

__all__ = ["deps", "env", "world"]  # fixtures shared with tests/onboarding and test_devstack_cli

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "palette.onboarding."


@pytest.fixture
def workdir(stack: Stack, tmp_path: Path) -> Path:
    stack.write_settings(tmp_path / "settings.json")
    return tmp_path


def _events(workdir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", "events", "--workdir", str(workdir), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def _onboarded(world: World, **overrides: Any) -> dict[str, Any]:
    body = world.request(**overrides)
    world.run(body)
    return body


def test_the_events_of_an_onboarding_appear_as_one_line_each(world: World, workdir: Path,
                                                             env: dict[str, str]) -> None:
    good = _onboarded(world)
    bad = _onboarded(world, palette={"project": "no-such-project"})

    shown = _events(workdir, "--once", env=env)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    good_lines = [line for line in lines if good["requestId"] in line]
    assert all(good["accountName"] in line for line in good_lines)
    types = [line.split()[1] for line in good_lines]
    assert types[0] == "requested" and "secret.stored" in types and "account.registered" in types
    validated = next(line for line in good_lines if line.split()[1] == "validated")
    assert "verify: passed" in validated and "checks passed" in validated
    failed = [line for line in lines if bad["requestId"] in line and line.split()[1] == "failed"]
    assert len(failed) == 1 and "check: failed" in failed[0] and "field palette.project" in failed[0], lines
    assert len(lines) == len(good_lines) + sum(bad["requestId"] in line for line in lines)


def test_request_keeps_one_requests_events_and_json_prints_each_cloudevent(world: World, workdir: Path,
                                                                           env: dict[str, str]) -> None:
    first, second = _onboarded(world), _onboarded(world)

    only_first = _events(workdir, "--once", "--request", first["requestId"], env=env)
    as_json = _events(workdir, "--once", "--json", env=env)
    first_as_json = _events(workdir, "--once", "--json", "--request", first["requestId"], env=env)

    assert only_first.returncode == as_json.returncode == first_as_json.returncode == 0
    assert only_first.stdout and all(first["requestId"] in line for line in only_first.stdout.splitlines())
    assert second["requestId"] not in only_first.stdout
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {e["data"]["requestId"] for e in events} == {first["requestId"], second["requestId"]}
    assert all(e["specversion"] == "1.0" and e["type"].startswith(PREFIX) for e in events)
    assert len({e["id"] for e in events}) == len(events)  # each event once
    of_first = [json.loads(line) for line in first_as_json.stdout.splitlines()]
    assert of_first == [e for e in events if e["data"]["requestId"] == first["requestId"]]
    assert len(of_first) == len(only_first.stdout.splitlines())
    assert {e["type"] for e in of_first} >= {PREFIX + "requested", PREFIX + "validated"}


def test_it_follows_new_events_until_ctrl_c(world: World, workdir: Path, env: dict[str, str]) -> None:
    body = world.request()
    out = (workdir / "events.out").open("w+")
    following = subprocess.Popen([sys.executable, "-m", "devstack", "events", "--workdir", str(workdir),
                                  "--request", body["requestId"]], cwd=ROOT, env=env, stdout=out,
                                 stderr=subprocess.PIPE, text=True)
    try:
        assert world.run(body).kind is OutcomeKind.SUCCEEDED
        shown = wait_for(lambda: " validated " in (text := (workdir / "events.out").read_text()) and text,
                         "the validated event's line", timeout=30)
        assert following.poll() is None  # still following
        following.send_signal(signal.SIGINT)
        assert following.wait(timeout=30) == 0
        assert shown.splitlines()[0].split()[1] == "requested"
        assert "Ctrl-C" in following.communicate()[1]
    finally:
        if following.poll() is None:
            following.kill()
            following.wait()
        out.close()


def test_the_identity_form_of_the_settings_reads_the_same_events(world: World, stack: Stack, tmp_path: Path,
                                                                 env: dict[str, str]) -> None:
    """As the app reaches Service Bus in Azure: the namespace and the managed identity, no
    connection string."""
    body = _onboarded(world)
    (tmp_path / "settings.json").write_text(json.dumps(stack.identity_settings()))

    shown = _events(tmp_path, "--once", "--request", body["requestId"], env=env)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.splitlines()[0].split()[1] == "requested"
    assert " validated " in shown.stdout


def test_without_a_running_stack_it_says_how_to_start_one(stack: Stack, tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    nothing = _events(tmp_path, env=env)
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "settings.json").write_text(json.dumps({
        **stack.settings, "ServiceBusConnection": stack.settings["ServiceBusConnection"].replace(
            f":{stack.broker.port if stack.broker else 0}", f":{closed}")}))
    stopped = _events(stale, "--once", env=env)

    for answer in (nothing, stopped):
        assert answer.returncode == 1
        assert len(answer.stdout.strip().splitlines()) == 1, answer.stdout
        assert "no local stack is running" in answer.stdout and "python -m devstack up" in answer.stdout
        assert "Traceback" not in answer.stderr
    assert f"127.0.0.1:{closed}" in stopped.stdout
