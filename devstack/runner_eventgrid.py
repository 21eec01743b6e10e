"""Event Grid triggers in the local runner, as the Functions host's Event Grid extension runs them.

The host serves one webhook, ``POST /runtime/webhooks/eventgrid?functionName=<name>`` on its HTTP
port, and an Event Grid subscription delivers to it:

* ``aeg-event-type: SubscriptionValidation``: answered with 200 ``{"validationResponse": code}``
  (the code of the array's first event), without calling the function;
* ``aeg-event-type: Notification``: the body is an array of events (or one event); the worker is
  handed each event as the host hands it (JSON), once per event; 202 when every call returned,
  500 when one failed, so Event Grid delivers again;
* ``Unsubscribe``: 202; any other ``aeg-event-type``: 400; an unknown ``functionName``: 404.

Differences from the host, on purpose: calls run one after the other (the host runs them at once);
a failed call's 500 says which function failed, not the exception's text (no secret can leak
through it); a body that is not JSON, or an event the worker cannot read, is a 400 here (the host
fails it with a 500), and no function is called for any of its events. Like ``func
start``, it does not ask for the ``eventgrid_extension`` system key (``code=``) Azure requires.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from devstack import hostdata

if TYPE_CHECKING:
    from devstack.runner import _Function, _Invoker

logger = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/runtime/webhooks/eventgrid"
#: An answer: status, content type, body.
Answer = tuple[int, str, bytes]


def webhook_url(host_url: str, function_name: str) -> str:
    """The URL to subscribe for ``function_name``, from the host's base URL (scheme, host, port)."""
    return f"{host_url.rstrip('/')}{WEBHOOK_PATH}?functionName={function_name}"


def _text(status: int, text: str) -> Answer:
    return status, "text/plain; charset=utf-8", text.encode()


class EventGridWebhook:
    """The Event Grid functions of one app and the webhook that feeds them, through ``invoker``
    (the local host's: the worker, within the function timeout)."""

    def __init__(self, invoker: _Invoker) -> None:
        self._invoker = invoker
        self._functions: dict[str, _Function] = {}

    def __bool__(self) -> bool:
        return bool(self._functions)

    def add(self, function: _Function) -> None:
        self._functions[function.name] = function

    @staticmethod
    def handles(path: str) -> bool:
        return path.rstrip("/") == WEBHOOK_PATH

    def handle(self, method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> Answer:
        name = params.get("functionName", "")
        target = self._functions.get(name)
        if target is None:
            return _text(404, f"cannot find function: '{name}'")
        if method.upper() != "POST":
            return _text(405, "The Event Grid webhook takes POST only.")
        kind = next((v for k, v in headers.items() if k.lower() == "aeg-event-type"), "")
        try:
            payload = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            payload = None
        if kind.lower() == "subscriptionvalidation":
            return self._validate(payload)
        if kind.lower() == "notification":
            return self._notify(target, payload)
        if kind.lower() == "unsubscribe":
            return 202, "", b""
        return _text(400, "The aeg-event-type header must be SubscriptionValidation, Notification or Unsubscribe.")

    @staticmethod
    def _validate(payload: Any) -> Answer:
        first = payload[0] if isinstance(payload, list) and payload else payload
        data = first.get("data") if isinstance(first, dict) else None
        code = data.get("validationCode") if isinstance(data, dict) else None
        if not isinstance(code, str):
            return _text(400, "A SubscriptionValidation request carries an event whose data has a validationCode.")
        return 200, "application/json", json.dumps({"validationResponse": code}).encode()

    def _notify(self, target: _Function, payload: Any) -> Answer:
        events = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else None
        if events is None or not all(isinstance(event, dict) for event in events):
            return _text(400, "A Notification body is a JSON array of events (or one event object).")
        for index, event in enumerate(events):
            try:  # the library's own converter, which the worker uses on each event
                EventGridEventInConverter.decode(Datum(value=json.dumps(event), type="json"), trigger_metadata=None)
            except (ValueError, TypeError):
                return _text(400, f"Event {index} is not an Event Grid event the worker can read (its eventTime "
                                  "must be an ISO 8601 date-time).")
        for event in events:
            try:
                self._invoker.call(target, hostdata.event_grid_event(self._invoker.worker, event))
            except (RuntimeError, TimeoutError) as exc:  # the function failed, or ran past the timeout
                logger.error("runner: Event Grid function %s failed on event %s: %s", target.name, event.get("id"),
                             exc)
                return _text(500, f"function '{target.name}' failed; Event Grid delivers the events again")
        return 202, "", b""
