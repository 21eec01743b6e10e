"""Cold start: the time and memory to index the app, and the first onboarding in a fresh host
process over a warm one.

Index time: in fresh processes (median of ``--index-runs``), the time to ``import function_app``
and run ``app.get_functions()`` (what the worker does at indexing), the peak RSS, and, for
comparison, the cost of importing the heavy SDKs the app defers to first use; then what the local
host adds on top: Microsoft's worker started in the process and the app indexed through its
protocol messages (the Functions host's own start is not on this machine).

First invocation: the Palette, Key Vault and Entra ID/Graph stand-ins (and the managed-identity
endpoint) add ``--latency-ms`` (50) to every request. ``--runs`` times, a fresh host process
(``python -m devstack run``) is started; once it serves, one onboarding with every option is put on
the queue and timed from the enqueue to the moment an independent subscriber receives its
``validated`` event; then a second one in the same, now warm, host, timed the same way. Prints
``first invocation ratio`` (median first over median warm; target at most 1.5), the two medians,
and where the extra time goes: the calls the stand-ins recorded for the first onboarding and not
for the warm one (tokens fetched once per process, say), and the time from the enqueue to the first
recorded call and to the ``requested`` event of each (imports, client set-up and the first
event link before the app calls anything).

    .venv/bin/python -m bench cold-start [--runs 3] [--index-runs 5] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import ROOT, BenchStack, Bodies, Subscriber, describe, figure, median, say

INDEX = """
import time, resource, json
t = time.perf_counter()
import function_app
n = len(function_app.app.get_functions())
ms = (time.perf_counter() - t) * 1000
print(json.dumps({"ms": ms, "functions": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WORKER = """
import time, resource, json
import function_app
from devstack.runner import APP_DIRECTORY
from devstack.worker import Worker
t = time.perf_counter()
n = len(Worker.get().index(function_app.app, APP_DIRECTORY))
ms = (time.perf_counter() - t) * 1000
print(json.dumps({"ms": ms, "functions": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DEFERRED = """
import time, resource, json
t = time.perf_counter()
import azure.identity, azure.keyvault.secrets, azure.servicebus, azure.data.tables, requests, pydantic
ms = (time.perf_counter() - t) * 1000
print(json.dumps({"ms": ms, "functions": 0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

#: Seconds between two timed onboardings: the app's Palette pacing refills after the first's calls.
PAUSE_SECONDS = 2.0


def measure(code: str, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "median_ms": statistics.median(s["ms"] for s in samples),
        "max_ms": max(s["ms"] for s in samples),
        "peak_rss_mb": statistics.median(s["rss_mb"] for s in samples),
        "functions": samples[0]["functions"],
    }


def index_figures(runs: int) -> None:
    say(f"indexing function_app in {runs} fresh processes ...")
    index = measure(INDEX, runs)
    say(f"starting Microsoft's worker and indexing through it in {runs} fresh processes ...")
    worker = measure(WORKER, runs)
    say(f"importing the deferred SDKs in {runs} fresh processes ...")
    deferred = measure(DEFERRED, runs)
    figure("index time, median", index["median_ms"], "ms", "none", digits=1)
    figure("index time, slowest", index["max_ms"], "ms", "none", digits=1)
    figure("functions indexed", index["functions"], "", "none")
    figure("peak RSS at indexing", index["peak_rss_mb"], "MB", "none", digits=1)
    figure("local host: the worker started and the app indexed through it, median", worker["median_ms"], "ms",
           "none", digits=1)
    figure("functions the worker indexed", worker["functions"], "", str(index["functions"]))
    figure("deferred SDK imports, median", deferred["median_ms"], "ms", "none", digits=1)
    figure("peak RSS with the deferred SDKs imported", deferred["peak_rss_mb"], "MB", "none", digits=1)


def _timed_onboarding(bench: BenchStack, subscriber: Subscriber, body: dict[str, Any],
                      timeout: float) -> dict[str, Any] | None:
    """Enqueue ``body`` and wait for its ``validated`` event: the seconds taken, the app's calls in
    between (by service, the stand-ins' own sign-ins left out) and when its ``requested`` event (the
    first the app publishes, before its first call) arrived; None when it did not validate."""
    bench.clear_requests()
    began = bench.enqueue([body])
    event = subscriber.wait_for({body["requestId"]}, timeout=timeout).get(body["requestId"])
    if event is None or event.type != "validated":
        say(f"{body['requestId']}: no validated event ({event.type if event else 'nothing'} within {timeout:g} s)")
        return None
    calls = [{**call, "service": service} for service, listed in bench.calls().items() for call in listed
             if began <= call["started"] <= event.received]
    calls.sort(key=lambda call: call["started"])
    requested = min((e.received for e in subscriber.snapshot()
                     if e.request_id == body["requestId"] and e.type == "requested"), default=float("nan"))
    return {"seconds": event.received - began, "calls": calls, "to_requested": requested - began,
            "to_first_call": calls[0]["started"] - began if calls else float("nan"),
            "after_last_call": event.received - max(call["time"] for call in calls) if calls else float("nan")}


def _kinds(calls: list[dict[str, Any]]) -> Counter[str]:
    return Counter(f"{call['service']} {describe(call)}" for call in calls)


def first_invocation_figures(runs: int, latency_ms: int, timeout: float, *, warm_up: bool = True) -> None:
    """With ``warm_up`` the host runs the app's warmup trigger before it serves, as an instance
    added on scale-out does; without, the first onboarding warms the worker (a restart)."""
    mode = "" if warm_up else " without the warmup trigger"
    firsts: list[dict[str, Any]] = []
    warms: list[dict[str, Any]] = []
    with BenchStack() as bench, Subscriber(bench.settings) as subscriber:
        bodies = Bodies()
        apps = bench.register_apps(2 * runs)
        bench.set_latency(latency_ms)
        for run in range(runs):
            host = bench.host(f"host-{run}{'' if warm_up else '-cold'}",
                              extra_args=None if warm_up else ["--no-warm-up"])
            host.start()
            host.wait_serving()
            say(f"run {run + 1}: fresh host (pid {host.pid}) serving; the first onboarding ...")
            first = _timed_onboarding(bench, subscriber, bodies.one(apps[2 * run], 2 * run), timeout)
            time.sleep(PAUSE_SECONDS)
            say(f"run {run + 1}: the second onboarding, same host ...")
            warm = _timed_onboarding(bench, subscriber, bodies.one(apps[2 * run + 1], 2 * run + 1), timeout)
            host.stop()
            if first is None or warm is None:
                continue
            firsts.append(first)
            warms.append(warm)
            extra = _kinds(first["calls"]) - _kinds(warm["calls"])
            fewer = _kinds(warm["calls"]) - _kinds(first["calls"])
            for label, timed in (("first", first), ("warm", warm)):
                say(f"run {run + 1}: {label} {timed['seconds'] * 1000:.0f} ms, {len(timed['calls'])} calls; "
                    f"requested event +{timed['to_requested'] * 1000:.0f} ms, "
                    f"first call +{timed['to_first_call'] * 1000:.0f} ms")
            say(f"run {run + 1}: only on the first: {dict(extra) or 'none'}; only on the warm: {dict(fewer) or 'none'}")
            for label, timed in (("first", first), ("warm", warm)):
                steps = " ".join(f"+{(call['started'] - timed['calls'][0]['started']) * 1000:.0f}"
                                 f" {call['service']} {describe(call)}" for call in timed["calls"])
                say(f"run {run + 1}: {label} calls, ms after the first call: {steps}")

    def put(name: str, *args: Any, **kwargs: Any) -> None:
        figure(name + mode, *args, **kwargs)

    first_ms = median(f["seconds"] for f in firsts) * 1000
    warm_ms = median(w["seconds"] for w in warms) * 1000
    figure(f"first invocation ratio{mode}", first_ms / warm_ms if warms else float("nan"), "",
           "<= 1.5" if warm_up else "none (a restart: see bench/README.md)")
    put("first onboarding in a fresh host, enqueue to validated, median", first_ms, "ms", "none", digits=0)
    put("warm onboarding, enqueue to validated, median", warm_ms, "ms", "none", digits=0)
    put("extra time on the first onboarding, median", median(f["seconds"] - w["seconds"]
                                                                for f, w in zip(firsts, warms, strict=True)) * 1000,
           "ms", "none", digits=0)
    put("first onboarding, enqueue to its requested event, median", median(f["to_requested"] for f in firsts) * 1000,
           "ms", "none", digits=0)
    put("warm onboarding, enqueue to its requested event, median", median(w["to_requested"] for w in warms) * 1000,
           "ms", "none", digits=0)
    put("first onboarding, enqueue to its first call, median", median(f["to_first_call"] for f in firsts) * 1000,
           "ms", "none", digits=0)
    put("warm onboarding, enqueue to its first call, median", median(w["to_first_call"] for w in warms) * 1000,
           "ms", "none", digits=0)
    put("first onboarding, last call to validated, median", median(f["after_last_call"] for f in firsts) * 1000,
           "ms", "none", digits=0)
    put("warm onboarding, last call to validated, median", median(w["after_last_call"] for w in warms) * 1000,
           "ms", "none", digits=0)
    put("calls on the first onboarding, median", median(len(f["calls"]) for f in firsts), "calls", "none",
           digits=0)
    put("calls on the warm onboarding, median", median(len(w["calls"]) for w in warms), "calls", "none",
           digits=0)
    extras = [_kinds(f["calls"]) - _kinds(w["calls"]) for f, w in zip(firsts, warms, strict=True)]
    put("extra calls on the first onboarding, median", median(sum(e.values()) for e in extras), "calls", "none",
           digits=0)
    for kind in sorted(set().union(*extras)):
        put(f"extra calls on the first onboarding, {kind}, median", median(e[kind] for e in extras), "calls",
            "none", digits=1)
    put("runs timed", len(firsts), "", str(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cold-start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh host processes, each a first and a warm onboarding")
    parser.add_argument("--index-runs", type=int, default=5, help="fresh processes for the index-time figures")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    index_figures(args.index_runs)
    first_invocation_figures(args.runs, args.latency_ms, args.timeout)
    first_invocation_figures(args.runs, args.latency_ms, args.timeout, warm_up=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
