"""Memory: the peak RSS of one host process at 1, 8 and 32 concurrent onboardings.

For each level, a fresh host process (``python -m devstack run``, which hosts the real app in that
same process) is started with a copy of the app's host.json whose
``extensions.serviceBus.maxConcurrentCalls`` is the level. Once it serves, twice the level's
onboardings go on the queue at once, so every slot stays busy; when an independent subscriber has
received their ``validated`` events, the host's peak resident set (``VmHWM`` in
``/proc/<pid>/status``) is read, and the host is stopped. The stand-ins run in the benchmark's own
process, so the figure is the app's alone.

The onboardings have every option but a generated SSH key: they upload a given public key
instead, so that RSA key generation (CPU, not memory) does not set the pace. Prints ``peak RSS at
N`` for each level (target at 32: under 150 MB), and the peak at start-up, before any onboarding.

    .venv/bin/python -m bench memory [--levels 1,8,32] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import ROOT, BenchStack, Bodies, Subscriber, figure, median, say

#: Targets by level (concurrent onboardings); none at the others.
TARGETS = {32: "< 150"}


def host_json_with(concurrency: int, path: Path) -> Path:
    """A copy of the app's host.json with ``maxConcurrentCalls`` set to ``concurrency``."""
    config = json.loads((ROOT / "host.json").read_text())
    config["extensions"]["serviceBus"]["maxConcurrentCalls"] = concurrency
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def status_mb(pid: int, field: str) -> float:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no {field} in /proc/{pid}/status")


def app_process(pid: int) -> int:
    """The process that runs the app: the host child itself unless it started children of its own."""
    spawned = children(pid)
    if not spawned:
        return pid
    say(f"the host process {pid} has children {spawned}; measuring the one with the largest peak")
    return max(spawned, key=lambda child: status_mb(child, "VmHWM"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32", help="concurrent onboardings (default 1,8,32)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each level's onboardings")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]

    peaks: dict[int, float] = {}
    validated: dict[int, int] = {}
    at_start: list[float] = []
    with BenchStack() as bench, Subscriber(bench.settings) as subscriber:
        bodies = Bodies()
        apps = bench.register_apps(sum(2 * level for level in levels))
        number = 0
        for level in levels:
            host_json = host_json_with(level, bench.workdir / f"host-{level}.json")
            host = bench.host(f"memory-{level}", extra_args=["--host-json", str(host_json)])
            host.start()
            host.wait_serving()
            assert host.pid is not None
            pid = app_process(host.pid)
            at_start.append(status_mb(pid, "VmHWM"))
            batch = [bodies.one(apps[number + i], number + i, generate_ssh_key=False) for i in range(2 * level)]
            number += len(batch)
            say(f"{level} concurrent: host pid {pid} serving (peak {at_start[-1]:.1f} MB so far); "
                f"{len(batch)} onboardings on the queue, a given SSH public key (no RSA key generation) ...")
            bench.enqueue(batch)
            events = subscriber.wait_for({body["requestId"] for body in batch}, timeout=args.timeout)
            validated[level] = sum(1 for event in events.values() if event.type == "validated")
            peaks[level] = status_mb(pid, "VmHWM")
            say(f"{level} concurrent: {validated[level]}/{len(batch)} validated; peak RSS {peaks[level]:.1f} MB, "
                f"RSS now {status_mb(pid, 'VmRSS'):.1f} MB")
            host.stop()

    for level in levels:
        figure(f"peak RSS at {level}", peaks[level], "MB", TARGETS.get(level, "none"), digits=1)
    figure("peak RSS at start-up, before any onboarding, median", median(at_start), "MB", "none", digits=1)
    for level in levels:
        figure(f"onboardings validated at {level}", validated[level], "", str(2 * level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
