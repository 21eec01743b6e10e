"""Cold start: how long a fresh worker takes to import and index the app, and its memory.

Measures, in fresh processes (median of N), the time to ``import function_app`` and run
``app.get_functions()`` (what the worker does at indexing), the peak RSS, and — for comparison —
the cost of importing the heavy SDKs the app defers to first use. Prints the figures; asserts
nothing.

    .venv/bin/python bench/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INDEX = """
import time, resource, json
t = time.perf_counter()
import function_app
n = len(function_app.app.get_functions())
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


def measure(code: str, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "median_ms": round(statistics.median(s["ms"] for s in samples), 1),
        "max_ms": round(max(s["ms"] for s in samples), 1),
        "peak_rss_mb": round(statistics.median(s["rss_mb"] for s in samples), 1),
        "functions": samples[0]["functions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    index = measure(INDEX, args.runs)
    deferred = measure(DEFERRED, args.runs)
    print(f"index function_app: median {index['median_ms']} ms (max {index['max_ms']} ms), "
          f"{index['functions']} functions, peak RSS {index['peak_rss_mb']} MB")
    print(f"deferred SDK imports (paid on first invocation instead): median {deferred['median_ms']} ms, "
          f"peak RSS {deferred['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
