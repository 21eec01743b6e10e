"""``python -m bench`` runs every benchmark, one after another; ``python -m bench NAME [options]``
runs one (``python -m bench NAME --help`` shows its options).

Each benchmark runs in a process of its own with a local stack of its own, prints one line per
figure on stdout (``name: value unit (target: ...)``) and its progress on stderr, and exits 0 even
when a target is missed. The runner prints a header before each and exits 0 unless a benchmark
crashed. What each measures and how its floor is derived: ``bench/README.md``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: name -> (module, one line on what it measures). In the order ``python -m bench`` runs them.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "latency": ("bench.latency", "one onboarding with every option against its critical path, 50 ms per call"),
    "calls": ("bench.calls", "calls per onboarding, per service and Palette prefix, against the minimum"),
    "throughput": ("bench.throughput", "200 onboardings, three hosts, Palette at its rate limit, 2,000 accounts"),
    "faults": ("bench.faults", "the 200 again with 20% of calls failing and the host killed twice"),
    "cold-start": ("bench.cold_start", "index time, and the first onboarding in a fresh process over a warm one"),
    "memory": ("bench.memory", "peak RSS of one host process at 1, 8 and 32 concurrent onboardings"),
    "rotation": ("bench.rotation_sweep", "one sweep over 2,000 managed accounts, 50 due"),
    "intake": ("bench.http_intake", "POST /api/onboardings at 1, 8 and 32 clients"),
    "kill-recovery": ("bench.kill_recovery", "8 onboardings, the host SIGKILLed three times"),
    "stack": ("bench.stack_startup", "start-up time of the local stack"),
    "scale": ("bench.scale", "the sweep at 2,000 to 50,000 accounts, 5,000 due, a drift slice, onboarding beside them"),
}


def _usage() -> str:
    lines = [__doc__.strip(), "", "Benchmarks:"]
    lines += [f"  {name:<14} {about}" for name, (_module, about) in BENCHMARKS.items()]
    return "\n".join(lines)


def _run(name: str, argv: list[str]) -> int:
    module, about = BENCHMARKS[name]
    print(f"== {name}: {about}", flush=True)
    began = time.monotonic()
    code = subprocess.call([sys.executable, "-m", module, *argv], cwd=ROOT)
    print(f"== {name}: {'done' if code == 0 else f'exit code {code}'} in {time.monotonic() - began:.0f} s\n",
          flush=True)
    return code


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv:
        name, rest = argv[0], argv[1:]
        if name not in BENCHMARKS:
            print(f"no benchmark named {name!r}\n\n{_usage()}", file=sys.stderr)
            return 2
        return _run(name, rest)
    failed = [name for name in BENCHMARKS if _run(name, []) != 0]
    if failed:
        print(f"crashed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
