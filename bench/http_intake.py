"""HTTP intake throughput: ``POST /api/onboardings`` through the local runner, on a fresh local stack.

The real app's HTTP routes are hosted by ``devstack.runner.LocalHost`` over HTTPS with a function
key, as ``python -m devstack run`` hosts them, but without the queue trigger: each request is the
intake alone (validation, a state-table read and insert, one queue send), and the pipeline does not
compete for the CPU. For 1, 8 and 32 concurrent clients (each on its own kept-alive connection,
sending new requests back to back) it prints requests per second and latency p50/p99, then compares
the rate at 8 clients with the rate at which the pipeline finishes onboardings (``--pipeline-rate``,
onboardings per minute; default: the last figure of ``python -m bench throughput``, see
bench/README.md). Asserts nothing.

    .venv/bin/python -m bench intake [--seconds 10] [--clients 1,8,32] [--pipeline-rate 134.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import ROOT, figure, percentile, say

#: Onboardings per minute the app finished in ``python -m bench throughput`` (three hosts, at
#: Palette's rate limit).
PIPELINE_RATE_PER_MINUTE = 134.5
HTTP_ROUTES = ("submit_onboarding", "list_onboardings", "get_onboarding", "health")


def _body(run: str, client: int, number: int) -> dict[str, Any]:
    from devstack.stack import DEVSTACK_TENANT_ID

    tag = f"{run}-{client:02d}-{number:05d}"
    return {"requestId": f"INTAKE-{tag}", "accountName": f"intake-{tag}",
            "azure": {"tenantId": DEVSTACK_TENANT_ID, "clientId": str(uuid.uuid4())}}


def measure(base_url: str, key: str, ca: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads, each posting new requests back to back for ``seconds``."""
    import requests

    run = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    stop_at = [0.0]
    # The clock starts when every client has connected: the barrier's action sets the deadline
    # before any client is let go.
    start = threading.Barrier(clients + 1, action=lambda: stop_at.__setitem__(0, time.monotonic() + seconds))

    def client(index: int) -> None:
        with requests.Session() as session:
            session.verify = ca
            session.headers.update({"x-functions-key": key})
            session.get(f"{base_url}/health", timeout=30)  # connect before the clock starts
            start.wait()
            number = 0
            while time.monotonic() < stop_at[0]:
                body = json.dumps(_body(run, index, number))
                began = time.monotonic()
                response = session.post(f"{base_url}/onboardings", data=body, timeout=60,
                                        headers={"Content-Type": "application/json"})
                elapsed = time.monotonic() - began
                with lock:
                    if response.status_code == 202:
                        latencies.append(elapsed)
                    else:
                        failures.append(response.status_code)
                number += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = stop_at[0] - seconds
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    return {"clients": clients, "accepted": len(latencies), "failed": len(failures),
            "failed_statuses": sorted(set(failures)), "wall_s": wall, "per_second": len(latencies) / wall,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench intake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per concurrency level (default 10)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--pipeline-rate", type=float, default=PIPELINE_RATE_PER_MINUTE,
                        help="onboardings/min the pipeline finishes, to compare with (default %(default)s)")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.clients.split(",")]

    import function_app
    from devstack.runner import LocalHost
    from devstack.stack import Stack, StackOptions

    with tempfile.TemporaryDirectory(prefix="bench-intake-") as workdir:
        stack = Stack(StackOptions(workdir=Path(workdir), tools_dir=ROOT / ".devstack" / "tools"))
        settings = stack.start()
        os.environ.update(settings)
        assert stack.certificate is not None
        host = LocalHost(function_app.app, settings, tls=stack.certificate, only=HTTP_ROUTES)
        host.start()
        results = []
        try:
            say(f"HTTP intake (POST /api/onboardings: validation, state row, queue send) through the local "
                f"runner over HTTPS, {args.seconds:g} s per level")
            for clients in levels:
                result = measure(host.http_url, host.function_key, settings["REQUESTS_CA_BUNDLE"], clients,
                                 args.seconds)
                results.append(result)
                failed = f"; {result['failed']} failed {result['failed_statuses']}" if result["failed"] else ""
                say(f"{clients:3d} clients  {result['per_second']:7.1f} requests/s   "
                    f"p50 {result['p50_ms']:6.1f} ms   p99 {result['p99_ms']:6.1f} ms   "
                    f"({result['accepted']} accepted{failed})")
        finally:
            host.stop()
            stack.stop()
    for result in results:
        clients = result["clients"]
        figure(f"intake at {clients} clients", result["per_second"], "requests/s", "none", digits=1)
        figure(f"intake latency p50 at {clients} clients", result["p50_ms"], "ms", "none", digits=1)
        figure(f"intake latency p99 at {clients} clients", result["p99_ms"], "ms", "none", digits=1)
        figure(f"requests accepted at {clients} clients", result["accepted"], "", "none")
        figure(f"requests failed at {clients} clients", result["failed"], "", "0")
    pipeline_per_second = args.pipeline_rate / 60
    at_eight = next((r for r in results if r["clients"] == 8), None)
    if at_eight is not None and pipeline_per_second > 0:
        say(f"at 8 clients the intake takes {at_eight['per_second']:.1f} requests/s; the pipeline finishes "
            f"{pipeline_per_second:.2f} onboardings/s ({args.pipeline_rate:g}/min)")
        figure("intake at 8 clients over the pipeline's rate", at_eight["per_second"] / pipeline_per_second, "x",
               ">= 5", digits=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
