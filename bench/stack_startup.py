"""Stack start-up: how long ``devstack.stack.Stack.start()`` takes, whole and piece by piece.

Each run is a fresh Python process (as ``python -m devstack up`` or a pytest session is), so the
figures include importing the stand-ins. A run starts the stack in a new temporary work folder
(the pinned Azurite comes from ``.devstack/tools``, installed once), times it, and stops it.
Pieces are timed by wrapping the factories ``Stack.start`` calls; Azurite is a separate process
that boots while the rest starts, so its "ready wait" is only the part left over at the end.
Prints the figures (median and slowest of each, one line each); asserts nothing.

    .venv/bin/python -m bench stack [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0


def _timed(pieces: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            pieces[name] = pieces.get(name, 0.0) + time.perf_counter() - began
    return wrapper


def child(tools_dir: Path) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    began = time.perf_counter()
    import devstack.identity
    import devstack.keyvault
    import devstack.palette
    import devstack.servicebus
    import devstack.stack
    from devstack.azurite import RunningAzurite

    import_seconds = time.perf_counter() - began
    pieces: dict[str, float] = {}
    for owner, attribute, label in (
        (devstack.stack, "start_azurite", "azurite spawn"),
        (RunningAzurite, "wait_ready", "azurite ready wait"),
        (devstack.stack, "make_loopback_certificate", "tls certificate"),
        (devstack.identity, "create_app", "identity app"),
        (devstack.keyvault, "create_app", "key vault app"),
        (devstack.palette, "create_app", "palette app (spec load)"),
        (devstack.servicebus, "start_broker", "service bus broker"),
        (devstack.stack, "RunningServer", "http servers (4)"),
    ):
        setattr(owner, attribute, _timed(pieces, label, getattr(owner, attribute)))

    with tempfile.TemporaryDirectory(prefix="stack-startup-") as workdir:
        stack = devstack.stack.Stack(devstack.stack.StackOptions(workdir=Path(workdir), tools_dir=tools_dir))
        began = time.perf_counter()
        stack.start()
        start_seconds = time.perf_counter() - began
        began = time.perf_counter()
        stack.stop()
        stop_seconds = time.perf_counter() - began
    return {"import": import_seconds, "start": start_seconds, "stop": stop_seconds, "pieces": pieces}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tools-dir", type=Path, default=ROOT / ".devstack" / "tools")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.tools_dir)))
        return 0
    # Only here, in the parent: the child's import timing must not include the benchmarks' own imports.
    sys.path.insert(0, str(ROOT))
    from bench.common import figure, say

    samples: list[dict[str, Any]] = []
    for run in range(1, args.runs + 1):
        say(f"run {run}/{args.runs}: starting and stopping the stack in a fresh process ...")
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                              "--tools-dir", str(args.tools_dir)],
                             cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
        if out.returncode != 0:
            say(f"a run failed:\n{out.stderr}")
            return 1
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))

    def pair(label: str, values: list[float], slowest_target: str = "none") -> None:
        figure(f"{label}, median", statistics.median(values) * 1000, "ms", "none", digits=0)
        figure(f"{label}, slowest", max(values) * 1000, "ms", slowest_target, digits=0)

    pair("Stack.start()", [s["start"] for s in samples], f"< {TARGET_SECONDS * 1000:.0f}")
    pair("import of the stand-ins", [s["import"] for s in samples])
    pair("import + Stack.start()", [s["import"] + s["start"] for s in samples])
    pair("Stack.stop()", [s["stop"] for s in samples])
    for name in samples[0]["pieces"]:
        pair(f"Stack.start() piece, {name}", [s["pieces"].get(name, 0.0) for s in samples])
    figure("runs", len(samples), "", "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
