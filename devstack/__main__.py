"""Command line of the local stack.

    python -m devstack up [--detach]   start every stand-in; write .devstack/settings.json
    python -m devstack down            stop a stack started with --detach
    python -m devstack run             host the function app against the running stack (HTTPS,
                                       function keys; writes .devstack/app.json)
    python -m devstack events          follow the stack's events, one line each (--json, --request ID,
                                       --once, --timeout SECONDS); Ctrl-C stops
    python -m devstack demo            start the stack and the app, submit the examples, show results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devstack.stack import DEFAULT_WORKDIR, Stack, StackOptions

PID_FILE = "stack.pid"
SETTINGS_FILE = "settings.json"
APP_FILE = "app.json"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "01-plain.json"


def _print(message: str) -> None:
    print(message, flush=True)


#: How long stopping may take once asked (Ctrl-C or SIGTERM) before the process leaves anyway.
STOP_GRACE_SECONDS = 30.0


def _wait_for_signal() -> None:
    """Return on the first Ctrl-C or SIGTERM. A second one, or a stop that takes longer than
    STOP_GRACE_SECONDS (a client's close waiting on a service that went away), ends the process
    at once: what it leaves is what a killed process leaves, which the product is built to take."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass

    def leave(*_: object) -> None:
        print("stop asked again, or stopping took too long: leaving now", flush=True)
        os._exit(1)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)
    watchdog = threading.Timer(STOP_GRACE_SECONDS, leave)
    watchdog.daemon = True
    watchdog.start()


def running_stack(workdir: Path) -> int | None:
    """The pid of the stack ``up`` started in ``workdir`` when it still runs, else None."""
    try:
        pid = int((workdir / PID_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def cmd_up(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    pid = running_stack(workdir)
    if pid is not None:
        _print(f"a local stack is already running (pid {pid}, settings {workdir / SETTINGS_FILE}); use it, or stop "
               "it first with: python -m devstack down")
        return 1
    if args.detach:
        return _up_detached(workdir)
    options = StackOptions(workdir=workdir, propagation_delay_seconds=args.propagation_delay)
    stack = Stack(options)
    settings_path = workdir / SETTINGS_FILE
    settings_path.unlink(missing_ok=True)
    try:
        stack.start()
        stack.write_settings(settings_path)
        (workdir / PID_FILE).write_text(str(os.getpid()))
        _print(f"local stack up in {stack.startup_seconds:.2f} s")
        for name, url in stack.describe().items():
            _print(f"  {name:16} {url}")
        _print("seeded for examples/ (more app registrations: POST /_devstack/applications on the identity "
               "stand-in; see the README):")
        for line in stack.seeded:
            _print(f"  {line}")
        _print(f"settings: {settings_path}")
        _print("press Ctrl-C to stop")
        _wait_for_signal()
    finally:
        stack.stop()
        (workdir / PID_FILE).unlink(missing_ok=True)
        settings_path.unlink(missing_ok=True)
        _print("local stack stopped")
    return 0


def _up_detached(workdir: Path, timeout_seconds: float = 60) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    settings_path = workdir / SETTINGS_FILE
    settings_path.unlink(missing_ok=True)
    log = (workdir / "stack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", "--workdir", str(workdir)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if settings_path.exists():
            _print(f"local stack up (pid {process.pid}); settings: {settings_path}")
            return 0
        if process.poll() is not None:
            _print(f"the stack failed to start; see {workdir / 'stack.log'}")
            return 1
        time.sleep(0.1)
    process.terminate()
    _print(f"the stack did not start within {timeout_seconds:.0f} s; see {workdir / 'stack.log'}")
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    pid_path: Path = args.workdir / PID_FILE
    if not pid_path.exists():
        _print("no stack is running (no pid file)")
        return 0
    pid = int(pid_path.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_path.unlink(missing_ok=True)
        _print("the stack was not running")
        return 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _print("local stack stopped")
            return 0
        time.sleep(0.1)
    _print(f"the stack (pid {pid}) did not stop within 15 s")
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    settings = load_settings(workdir)
    if not _port_free(args.port):
        _print(f"port {args.port} is in use (another devstack run?); stop that, or pick another: "
               "python -m devstack run --port 0 (any free port)")
        return 1
    os.environ.update(settings)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import function_app
    from devstack.runner import LocalHost
    from devstack.tls import certificate_beside

    # The runner says once that the broker went away; the SDK's own per-connection warnings about it
    # would only repeat that.
    logging.getLogger("azure.servicebus._pyamqp").setLevel(logging.ERROR)
    ca_path = Path(settings["REQUESTS_CA_BUNDLE"])
    host = LocalHost(function_app.app, settings, http_port=args.port,
                     tls=certificate_beside(ca_path), function_key=args.function_key,
                     warm_up=not args.no_warm_up,
                     **({"host_json": args.host_json} if args.host_json else {}))
    host.start()
    app_path = workdir / APP_FILE
    app_path.write_text(json.dumps({"baseUrl": host.http_url, "functionKey": host.function_key}, indent=2) + "\n")
    app_path.chmod(0o600)
    try:
        for line in describe_run(host.http_url, host.function_key, ca_path, app_path):
            _print(line)
        _wait_for_signal()
        _print("stopping: calls in flight are left to their message locks (Service Bus redelivers them)")
    finally:
        app_path.unlink(missing_ok=True)
        host.stop(wait_for_calls=False)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        # A call still in flight runs on pool threads the interpreter would wait for at exit; the
        # message it works on is redelivered anyway, so leave now, as a stopped host does.
        sys.stdout.flush()
        logging.shutdown()
        os._exit(0)
    return 0


def _port_free(port: int) -> bool:
    """Whether the API port can be bound (0, any free port, always can)."""
    import socket

    if port == 0:
        return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to paste)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def describe_run(base_url: str, function_key: str, ca_path: Path, app_path: Path) -> list[str]:
    """What ``run`` prints: where it serves and ready commands to call it."""
    curl = f"curl --cacert {_shown(ca_path)} -H 'x-functions-key: {function_key}'"
    return [
        "function app hosted locally (a development tool: production runs on Azure Functions)",
        f"  HTTP API      {base_url}   (OpenAPI document: {base_url}/openapi.json)",
        f"  function key  {function_key}   (also in {_shown(app_path)}; health and openapi.json need none)",
        "  submit an example, then read its state:",
        f"    {curl} -H 'Content-Type: application/json' --data @{_shown(EXAMPLE)} {base_url}/onboardings",
        f"    {curl} {base_url}/onboardings/{json.loads(EXAMPLE.read_text())['requestId']}",
        "each finished onboarding is logged below; press Ctrl-C to stop",
    ]


def cmd_events(args: argparse.Namespace) -> int:
    from devstack.events import run as follow_events

    return follow_events(args.workdir, as_json=args.json, request_id=args.request, once=args.once,
                         timeout=args.timeout)


def cmd_demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo

    return run_demo(timeout_seconds=args.timeout)


def load_settings(workdir: Path) -> dict[str, str]:
    path = workdir / SETTINGS_FILE
    if not path.exists():
        raise SystemExit(f"{path} not found: start the stack first with `python -m devstack up --detach`")
    settings: dict[str, str] = json.loads(path.read_text())
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack")
    up.add_argument("--detach", action="store_true", help="start in the background and return")
    up.add_argument("--propagation-delay", type=float, default=0.0,
                    help="seconds a new client secret is rejected by the token endpoint (real: 4-18)")
    down = sub.add_parser("down", help="stop a stack started with --detach")
    run = sub.add_parser("run", help="host the function app against the running stack")
    run.add_argument("--port", type=int, default=7071, help="HTTPS port of the API (0: any free port)")
    run.add_argument("--function-key", default=None,
                     help="the function key routes require (default: a new random key each start)")
    run.add_argument("--no-warm-up", action="store_true",
                     help="skip the app's warmup trigger (as a restart does; a scale-out runs it)")
    run.add_argument("--host-json", type=Path, default=None,
                     help="a host.json to read instead of the app's (another maxConcurrentCalls, say)")
    events = sub.add_parser("events", help="follow the running stack's events, one line each; Ctrl-C stops")
    events.add_argument("--json", action="store_true", help="print each CloudEvent's JSON, one per line")
    events.add_argument("--request", metavar="ID", default=None, help="only the events of this requestId")
    events.add_argument("--once", action="store_true", help="print the events published so far and leave")
    events.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                        help="stop following after this many seconds")
    demo = sub.add_parser("demo", help="start everything, submit examples/, show events and results")
    demo.add_argument("--timeout", type=float, default=180, help="seconds to wait for every request")
    for command in (up, down, run, events):
        command.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    quiet = logging.ERROR if args.command == "demo" else logging.WARNING  # the demo shows events instead
    logging.basicConfig(level=logging.DEBUG if args.verbose else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "run" and not args.verbose:
        # One line per HTTP call and per finished onboarding (the queue trigger's outcome line).
        for name in ("devstack.runner", "functions.queue"):
            logging.getLogger(name).setLevel(logging.INFO)
    handlers = {"up": cmd_up, "down": cmd_down, "run": cmd_run, "events": cmd_events, "demo": cmd_demo}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
