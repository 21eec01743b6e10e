"""Latency against the critical path: one onboarding with every option, 50 ms on every stand-in call.

The Palette, Key Vault and Entra ID/Graph stand-ins (and the managed-identity endpoint) add
``--latency-ms`` to every request. The real app runs in a host process of its own (``python -m
devstack run``), warmed by one onboarding first. Then, ``--runs`` times, one onboarding with every
option (generated secret, generated SSH key, API key, Private Cloud Gateway, tenant name,
properties off) is put on the queue and timed from the enqueue to the moment an independent
subscriber receives its ``validated`` event.

The floor is the calls on the longest chain that must happen one after another, times the latency
(derived in bench/README.md): the check's two rounds (the project, then the SSH key in it), Graph's
``addPassword``, Palette's validation and Palette's own sign-in to Entra inside it, the account's
creation and Palette's sign-in inside that, and one round of read-backs: 8 calls, 400 ms. The
chain is checked against what the stand-ins recorded: the longest run of calls each of which began
once the one before had waited its latency. Prints ``latency ratio`` (median over the runs; target
at most 1.25: the fences before each create and the one write per step result that make a crash
provably safe cost a few milliseconds each) and the figures behind it.

    .venv/bin/python -m bench latency [--runs 11] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import BenchStack, Bodies, Subscriber, critical_chain, describe, figure, median, say

#: The chain every onboarding with these options waits for, one call after another (bench/README.md).
FLOOR_CHAIN = (
    ("palette", "GET /v1/dashboard/projects/metadata"),  # check, round 1: the project
    ("palette", "GET /v1/users/assets/sshkeys"),  # check, round 2: the SSH key name in the project
    ("identity", "POST /v1.0/applications(...)/addPassword"),  # Graph
    ("palette", "POST /v1/clouds/azure/account/validate"),
    ("identity", "POST /{tenant}/oauth2/v2.0/token"),  # Palette signs in to Azure to validate
    ("palette", "POST /v1/cloudaccounts/azure"),
    ("identity", "POST /{tenant}/oauth2/v2.0/token"),  # ... and again to create the account
    ("palette", "GET /v1/cloudaccounts/azure"),  # verify: the read-backs, all at once (the account listed)
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    latency = args.latency_ms / 1000
    floor = len(FLOOR_CHAIN) * latency

    with BenchStack() as bench, Subscriber(bench.settings) as subscriber:
        bodies = Bodies()
        apps = bench.register_apps(args.runs + 1)
        bench.warm_host(subscriber, bodies.one(apps[0], 0), timeout=args.timeout)
        bench.set_latency(args.latency_ms)
        time.sleep(2.0)  # the client's rate limiter refills after the warm-up's calls
        seconds: list[float] = []
        chains: list[int] = []
        calls: list[int] = []
        missing: set[str] = set()
        for run in range(1, args.runs + 1):
            body = bodies.one(apps[run], run)
            bench.clear_requests()
            began = bench.enqueue([body])
            event = subscriber.wait_for({body["requestId"]}, timeout=args.timeout).get(body["requestId"])
            if event is None or event.type != "validated":
                say(f"run {run}: no validated event ({event.type if event else 'nothing'} within {args.timeout:g} s)")
                continue
            seconds.append(event.received - began)
            recorded = [{**r, "service": "palette"} for r in bench.requests("palette")]
            recorded += [{**r, "service": "keyvault"} for r in bench.requests("keyvault")]
            recorded += [{**r, "service": "identity"} for r in bench.requests("identity")]
            recorded = [r for r in recorded if r["started"] <= event.received]
            chain = critical_chain(recorded, latency)
            chains.append(len(chain))
            calls.append(len(recorded))
            seen = {(r["service"], describe(r)) for r in recorded}
            missing |= {f"{service} {call}" for service, call in FLOOR_CHAIN if (service, call) not in seen}
            steps, last = [], began
            for call in chain:
                steps.append(f"+{(call['started'] - last) * 1000:.0f} {call['service']} {describe(call)} "
                             f"({(call['time'] - call['started']) * 1000:.0f})")
                last = call["time"]
            say(f"run {run}: {seconds[-1] * 1000:.0f} ms; recorded chain of {len(chain)} (ms waited before each, "
                f"and its own): " + " -> ".join(steps) + f" -> +{(event.received - last) * 1000:.0f} validated")
            time.sleep(1.5)
    figure("latency ratio", median(seconds) / floor, "", "<= 1.25")
    figure("enqueue to validated, median", median(seconds) * 1000, "ms", f"<= {floor * 1250:.0f}", digits=0)
    figure("enqueue to validated, slowest", max(seconds, default=float("nan")) * 1000, "ms", "none", digits=0)
    figure("floor", floor * 1000, "ms", f"{len(FLOOR_CHAIN)} calls one after another x {args.latency_ms} ms",
           digits=0)
    figure("calls on the longest recorded chain, median", median(chains), "calls", str(len(FLOOR_CHAIN)), digits=0)
    figure("floor chain calls not recorded", len(missing), "", "0")
    figure("calls per onboarding, median", median(calls), "calls", "none", digits=0)
    figure("runs timed", len(seconds), "", str(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
