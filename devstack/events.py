"""Reading the local stack's events: the CloudEvents the app publishes on the events topic.

``python -m devstack events`` follows the stack's events subscription (``EVENTS_SUBSCRIPTION`` in
the settings ``up`` writes) and prints one line per event, or each event's JSON; the demo prints
its events with the same lines, and the benchmarks read the subscription through
:func:`subscription_receiver`. Everything goes through the real ``azure-servicebus`` SDK with the
app's own Service Bus settings: the connection string, or the identity form
(``ServiceBusConnection__fullyQualifiedNamespace`` and the managed identity), with the stack's CA.

Following *browses* the subscription (peek): it takes nothing off it, so several readers can
follow at once, a reader that takes events (as a ticketing system does) is not disturbed, and a
reader started late still sees every event published before it (unless such a reader took it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiver

#: The app setting (and binding connection) the app reaches Service Bus through.
CONNECTION = "ServiceBusConnection"
EVENT_PREFIX = "palette.onboarding."
#: How often an idle follower asks again: short enough that a line appears as its step finishes.
POLL_SECONDS = 0.25
PEEK_BATCH = 100
START_HINT = "start it with `python -m devstack up --detach`, then the app with `python -m devstack run`"


class StackNotRunningError(Exception):
    """No local stack answers where the settings say; the message says how to start one."""


@contextmanager
def subscription_receiver(settings: Mapping[str, str], **options: Any) -> Iterator[ServiceBusReceiver]:
    """A receiver on the events subscription, built as the app builds its Service Bus clients
    (:func:`devstack.runner.service_bus_client`); ``options`` go to ``get_subscription_receiver``.
    Identity-based settings need the stack's managed-identity settings in the environment."""
    from devstack.runner import service_bus_client

    with service_bus_client(CONNECTION, settings) as client, \
            client.get_subscription_receiver(settings.get("EVENTS_TOPIC") or "events", settings["EVENTS_SUBSCRIPTION"],
                                             **options) as receiver:
        yield receiver


def decode(message: ServiceBusReceivedMessage) -> dict[str, Any]:
    """The CloudEvent (structured JSON) a message carries."""
    body = message.body
    raw = body if isinstance(body, bytes | bytearray) else b"".join(body)
    document: dict[str, Any] = json.loads(raw)
    return document


def _data(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def request_id_of(event: Mapping[str, Any]) -> str:
    return str(_data(event).get("requestId", ""))


def browse(settings: Mapping[str, str], *, follow: bool = True, timeout: float | None = None,
           request_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every event on the subscription, in the order they were published, then, with ``follow``, each new one as it
    arrives, for ``timeout`` seconds (None: until the caller stops iterating). ``request_id`` keeps
    only that request's events. Raises the SDK's ``ServiceBusError`` when the broker goes away."""
    deadline = None if timeout is None else time.monotonic() + timeout
    next_sequence = 1
    with subscription_receiver(settings) as receiver:
        while True:
            batch = receiver.peek_messages(max_message_count=PEEK_BATCH, sequence_number=next_sequence)
            for message in batch:
                next_sequence = max(next_sequence, (message.sequence_number or 0) + 1)
                event = decode(message)
                if request_id is None or request_id_of(event) == request_id:
                    yield event
            if batch:
                continue  # more may be waiting already
            left = None if deadline is None else deadline - time.monotonic()
            if not follow or (left is not None and left <= 0):
                return
            time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))


def _fact(short_type: str, data: Mapping[str, Any]) -> str:
    """What a reader of the line wants to know first: the step and its outcome, and for a failure
    its reason, for a drift its kind, for the final check how many passed."""
    step, outcome = str(data.get("step") or ""), str(data.get("outcome") or "")
    parts = [f"{step}: {outcome}" if step and outcome else step or outcome]
    parts += [str(data[key]) for key in ("reason", "kind") if data.get(key)]
    parts += [f"{len(data[key])} {key}" for key in ("removed", "left", "holders")
              if isinstance(data.get(key), list) and data[key]]
    fact = ", ".join(part for part in parts if part)
    if data.get("field"):
        fact += f" (field {data['field']})"
    checks = data.get("checks")
    if short_type == "validated" and isinstance(checks, list):
        failing = [str(c.get("check")) for c in checks if isinstance(c, dict) and not c.get("ok")]
        fact += f" ({len(checks) - len(failing)} of {len(checks)} checks passed"
        fact += f"; failing: {', '.join(failing)})" if failing else ")"
    return fact


def line(event: Mapping[str, Any]) -> str:
    """One readable line: time (UTC), short type, requestId, account, and the key fact."""
    data = _data(event)
    short = str(event.get("type", "")).removeprefix(EVENT_PREFIX)
    moment = str(event.get("time", ""))[11:23] or "-"
    request_id = str(data.get("requestId") or "-")
    account = str(event.get("subject") or "-")
    return f"{moment:12}  {short:20} {request_id:28} {account:22} {_fact(short, data)}".rstrip()


def details(event: Mapping[str, Any]) -> list[str]:
    """What the demo prints under an event's line: each check of the final validation, the
    message of a failure."""
    data = _data(event)
    short = str(event.get("type", "")).removeprefix(EVENT_PREFIX)
    if short == "validated":
        return [f"{'pass' if check.get('ok') else 'FAIL'}  {check.get('check')}: {check.get('detail')}"
                for check in data.get("checks", []) if isinstance(check, dict)]
    if short.endswith("failed") and data.get("message"):
        return [str(data["message"])]
    return []


def load_running(workdir: Path) -> dict[str, str]:
    """The settings of the stack running from ``workdir``.

    Raises
    ------
    StackNotRunningError
        No settings there, or nothing answers at the Service Bus address they name (a stack that
        was stopped, or killed, and left its settings behind).
    """
    path = workdir / "settings.json"
    try:
        settings: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise StackNotRunningError(f"no local stack is running (no {path}): {START_HINT}") from None
    host, port = _broker_address(settings)
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError:
        raise StackNotRunningError(f"no local stack is running (nothing answers at {host}:{port}, the Service Bus "
                                   f"of {path}): {START_HINT}") from None
    return settings


def _broker_address(settings: Mapping[str, str]) -> tuple[str, int]:
    """Where the SDK will connect: the connection string's endpoint, or the namespace over TLS."""
    from azure.servicebus import parse_connection_string

    connection = settings.get(CONNECTION)
    if connection:
        properties = parse_connection_string(connection)
        namespace = properties.fully_qualified_namespace
        default_port = 5672 if "usedevelopmentemulator=true" in connection.lower() else 5671
    else:
        namespace = settings.get(f"{CONNECTION}__fullyQualifiedNamespace", "")
        default_port = 5671
    host, _, port = namespace.partition(":")
    return host, int(port) if port.isdigit() else default_port


def run(workdir: Path, *, as_json: bool = False, request_id: str | None = None, once: bool = False,
        timeout: float | None = None) -> int:
    """``python -m devstack events``: print the stack's events until Ctrl-C (or ``timeout``);
    ``once`` prints those on the subscription now and returns. Exit code 1 when no stack runs."""
    from azure.servicebus.exceptions import ServiceBusError

    try:
        settings = load_running(workdir)
    except StackNotRunningError as exc:
        print(exc, flush=True)
        return 1
    # The managed-identity settings (identity form) are read from the environment, as in the app.
    os.environ.update(settings)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # A broker that goes away is said once below; the SDK's retry warnings and traceback would
        # only repeat it.
        logging.getLogger("azure.servicebus").setLevel(logging.CRITICAL)
    if not once:
        hosted = "" if (workdir / "app.json").exists() else "; the app is not hosted yet: python -m devstack run"
        print(f"following events on {settings.get('EVENTS_TOPIC') or 'events'}/{settings['EVENTS_SUBSCRIPTION']} "
              f"(Ctrl-C stops){hosted}", file=sys.stderr, flush=True)
    try:
        for event in browse(settings, follow=not once, timeout=timeout, request_id=request_id):
            print(json.dumps(event, ensure_ascii=False, separators=(",", ":")) if as_json else line(event), flush=True)
    except KeyboardInterrupt:
        return 0
    except ServiceBusError as exc:
        print(f"lost the local stack's Service Bus ({type(exc).__name__}); if the stack stopped, {START_HINT}",
              flush=True)
        return 1
    except BrokenPipeError:  # the reader of a pipe left (``| head``): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
