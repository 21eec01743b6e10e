"""Throughput under Palette's rate limit: 200 onboardings, three app hosts, 2,000 accounts in Palette.

The Palette stand-in enforces its documented limit (10 requests/s per resource prefix, burst 5) and
holds 2,000 Azure accounts of another team's, so a lookup by name that listed them all would show.
200 onboardings (every option, a given SSH public key: RSA generation is CPU, not Palette's limit)
go on the queue at once and three host processes of the real app (``python -m devstack run``, as
three Flex instances would be) consume them together. An independent subscriber counts the events.

The floor is what Palette's limit allows: the calls one onboarding needs at its busiest prefix
(``/v1/users``: the API key's user, the SSH key name check, the upload, the read-back: 4; see
bench/README.md; ``/v1/cloudaccounts`` has 4 too) x 200 / 10 per second. The tenant's resource
limits are raised first (2,000 accounts are already more than Palette's default of 200). Prints
``throughput ratio`` (enqueue to the last ``validated`` event, over the floor; target at most
1.15), failed onboardings, duplicate events, lost events, and the share of Palette calls answered
429 (target under 1 %).

With ``--faults`` (``python -m bench faults``) the same run has 20 % of the app's calls to every
stand-in failing (429 with ``Retry-After``, 503 after the work was done, a connection dropped before
the request is read and one dropped after it was carried out) and one host SIGKILLed twice during
the run (started again each time). It runs the fault-free pass first, then the faulty one, and
prints finished / duplicates / lost and the time over the fault-free pass's (target: 100 %
finished, 0 duplicates, 0 lost, ratio at most 2).

    .venv/bin/python -m bench throughput [--n 200] [--hosts 3] [--seed-accounts 2000]
    .venv/bin/python -m bench faults [--n 200] [--share 0.2] [--kills 2]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import BenchStack, Bodies, Subscriber, figure, rate_prefix, say

if TYPE_CHECKING:
    from devstack.hostproc import HostProcess

#: Palette calls one onboarding with these options needs at each prefix (bench/README.md).
MINIMUM_PER_PREFIX = {"/v1/users": 4, "/v1/cloudaccounts": 4, "/v1/apiKeys": 3, "/v1/clouds": 1,
                      "/v1/dashboard": 1, "/v1/overlords": 1, "/v1/tenants": 1}
BUSIEST = max(MINIMUM_PER_PREFIX, key=lambda prefix: MINIMUM_PER_PREFIX[prefix])
PALETTE_RATE = 10.0


def main(argv: list[str] | None = None, *, faults: bool = False) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench {'faults' if faults else 'throughput'}",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="onboardings (default 200)")
    parser.add_argument("--hosts", type=int, default=3, help="app host processes (default 3)")
    parser.add_argument("--seed-accounts", type=int, default=2000, help="other accounts in Palette (default 2000)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every onboarding")
    parser.add_argument("--faults", action="store_true", default=faults, help="the fault run (bench faults)")
    parser.add_argument("--share", type=float, default=0.2, help="share of calls that fail with --faults")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of one host with --faults")
    args = parser.parse_args(argv)
    floor = MINIMUM_PER_PREFIX[BUSIEST] * args.n / PALETTE_RATE

    with BenchStack(palette_rate_per_second=PALETTE_RATE, palette_burst=5) as bench, \
            Subscriber(bench.settings) as subscriber:
        say(f"seeding {args.seed_accounts} accounts and {2 * args.n if args.faults else args.n} app registrations ...")
        if args.seed_accounts:
            bench.seed_accounts(args.seed_accounts)
        hosts = [bench.host(f"host-{i}") for i in range(args.hosts)]
        for host in hosts:
            host.start()
        for host in hosts:
            host.wait_serving(timeout=60)
        bodies = Bodies()
        clean = _run(bench, subscriber, hosts, bodies, args, floor, faults=False)
        _report("throughput", clean, args.n, floor, "<= 1.15")
        if args.faults:
            faulty = _run(bench, subscriber, hosts, bodies, args, floor, faults=True, first=args.n)
            _report("faults", faulty, args.n, floor, "<= 2", baseline=clean.took)
    return 0


@dataclass
class _Pass:
    took: float
    finished: int
    failed: int
    duplicates: int
    lost: int
    palette: list[dict[str, Any]]


def _run(bench: BenchStack, subscriber: Subscriber, hosts: list[HostProcess], bodies: Bodies,
         args: argparse.Namespace, floor: float, *, faults: bool, first: int = 0) -> _Pass:
    apps = bench.register_apps(args.n)
    requests = [bodies.one(apps[i], first + i, generate_ssh_key=False) for i in range(args.n)]
    bench.clear_requests()
    if faults:
        bench.add_faults(args.share)
    say(f"{args.n} onboardings on the queue{' with faults' if faults else ''}, {len(hosts)} hosts consuming ...")
    began = bench.enqueue(requests)
    killer = None
    if faults and args.kills:
        killer = threading.Thread(target=_kill_now_and_then, args=(hosts[0], args.kills, floor), daemon=True)
        killer.start()
    wanted = {r["requestId"] for r in requests}
    events = subscriber.wait_for(wanted, timeout=args.timeout)
    ended = max((e.received for e in events.values()), default=time.time())
    if killer is not None:
        killer.join(timeout=120)
    if faults:
        bench.clear_faults()
        time.sleep(5)  # re-sends after the kills arrive, so a duplicate would be counted
    palette = bench.requests("palette")
    finished, duplicates, lost = subscriber.tally(wanted)
    failed = sum(1 for e in events.values() if e.type == "failed")
    say(f"... {finished} finished in {ended - began:.1f} s")
    return _Pass(ended - began, finished, failed, duplicates, lost, palette)


def _report(name: str, run: _Pass, n: int, floor: float, target: str, *, baseline: float | None = None) -> None:
    statuses = Counter(r["status"] for r in run.palette)
    prefixes = Counter(rate_prefix(r["path"]) for r in run.palette)
    if baseline is None:
        figure(f"{name} ratio", run.took / floor, "", target)
    else:
        figure(f"{name} time ratio against the fault-free run", run.took / baseline, "", target)
    figure(f"{name}: enqueue to the last validated event", run.took, "s", "none", digits=1)
    figure(f"{name}: floor", floor, "s", f"{MINIMUM_PER_PREFIX[BUSIEST]} calls at {BUSIEST} x {n} / "
           f"{PALETTE_RATE:g} per s", digits=0)
    figure(f"{name}: onboardings finished", run.finished, "", str(n))
    figure(f"{name}: onboardings failed", run.failed, "", "0")
    figure(f"{name}: duplicate events", run.duplicates, "", "0")
    figure(f"{name}: lost events", run.lost, "", "0")
    share_429 = 100 * statuses.get(429, 0) / max(len(run.palette), 1)
    figure(f"{name}: Palette answers 429", share_429, "%", "none (injected)" if baseline else "< 1")
    figure(f"{name}: onboardings per minute", 60 * run.finished / run.took if run.took > 0 else float("nan"),
           "/min", "none", digits=1)
    for prefix in sorted(MINIMUM_PER_PREFIX):
        figure(f"{name}: Palette calls per onboarding at {prefix}", prefixes.get(prefix, 0) / n, "calls",
               f"minimum {MINIMUM_PER_PREFIX[prefix]}")


def _kill_now_and_then(host: HostProcess, kills: int, floor: float) -> None:
    """SIGKILL ``host`` ``kills`` times, spread over the expected run; start it again each time."""
    for number in range(1, kills + 1):
        time.sleep(floor / (kills + 1))
        say(f"SIGKILL {number} of {kills}")
        host.kill()
        host.start()
        host.wait_serving(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
