"""The HTTP half of scripts/offboard-all.sh (which resolves the API, the token and the function key
and says how to call it): list every account the app manages, and offboard them with --apply.

Standard library only, so it runs on the deploying machine's python3 without .venv. Reads its
settings from the environment the shell script passes it (OFFBOARD_*), never from arguments, so
the token and the function key stay out of the process list. Nothing it prints carries either.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

# Statuses of a request that is not finished (GET /api/onboardings?status=...).
IN_FLIGHT = ("queued", "running", "waiting")
FINISHED = ("succeeded", "failed")
# Answers worth asking again: throttled, or the app (or a dependency of it) briefly unavailable.
TRANSIENT = {429, 500, 502, 503, 504}


class ApiError(Exception):
    """The API refused a call for good, or could not be reached: the message says which and why."""


@dataclass(frozen=True)
class Options:
    base: str
    token: str
    function_key: str
    cafile: str
    apply: bool
    remove_ssh_keys: bool
    remove_api_keys: bool
    timeout_seconds: float
    poll_seconds: float
    page_size: int

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> Options:
        base = env["OFFBOARD_API"].rstrip("/")
        if not base.endswith("/api"):
            base += "/api"
        return cls(base=base, token=env.get("OFFBOARD_TOKEN", ""), function_key=env.get("OFFBOARD_FUNCTION_KEY", ""),
                   cafile=env.get("OFFBOARD_CACERT", ""), apply=env.get("OFFBOARD_APPLY") == "true",
                   remove_ssh_keys=env.get("OFFBOARD_REMOVE_SSH_KEYS") == "true",
                   remove_api_keys=env.get("OFFBOARD_REMOVE_API_KEYS", "true") == "true",
                   timeout_seconds=float(env.get("OFFBOARD_TIMEOUT_SECONDS", "3600")),
                   poll_seconds=float(env.get("OFFBOARD_POLL_SECONDS", "5")),
                   page_size=int(env.get("OFFBOARD_PAGE_SIZE", "200")))


@dataclass
class Api:
    """The app's HTTP API with the caller's credentials; retries what is transient, a few times."""

    options: Options
    context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context()
        if self.options.cafile:
            self.context.load_verify_locations(cafile=self.options.cafile)

    def call(self, method: str, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
        url = self.options.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if self.options.function_key:
            headers["x-functions-key"] = self.options.function_key
        if self.options.token:
            headers["Authorization"] = "Bearer " + self.options.token
        for attempt in range(5):
            request = urllib.request.Request(url, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
                    return response.status, _json(response.read())
            except urllib.error.HTTPError as refused:
                status, body, wait = refused.code, _json(refused.read()), refused.headers.get("Retry-After", "")
            except (urllib.error.URLError, OSError) as unreachable:
                reason = getattr(unreachable, "reason", unreachable)
                status, body, wait = 0, None, ""
                if attempt == 4:
                    raise ApiError(f"{method} {url} did not answer: {reason}") from None
            if status and status not in TRANSIENT:
                return status, body
            time.sleep(float(wait) if wait.isdigit() else 2.0 * (attempt + 1))
        return status, body

    def pages(self, path: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a paged list, following continuationToken until it is null."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page_query = {**query, "top": str(self.options.page_size)}
            if token:
                page_query["continuationToken"] = token
            status, body = self.call("GET", path, page_query)
            if status != 200:
                raise ApiError(refusal("GET", path, status, body))
            items.extend(body["items"])
            token = body.get("continuationToken")
            if not token:
                return items


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def refusal(method: str, path: str, status: int, body: Any) -> str:
    """Why a call was refused, in words an operator can act on (the problem's detail, no secret)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    hints = {
        401: "the API did not accept the caller: check the function key, and that the token is for the API's app "
             "registration (or pass --no-sign-in for the local host)",
        403: "the caller lacks the app role this needs (Onboarding.Admin to offboard; any role to list)",
        404: "no such route: is the URL the app's (SERVICE_API_URI), and is the app deployed?",
    }
    return f"{method} /api{path} answered {status}: {detail or hints.get(status, 'see the app logs')}"


def offboard_all(options: Options, out: Any = sys.stdout) -> int:
    """List, then (with ``apply``) offboard each managed account and report every outcome."""
    api = Api(options)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    accounts = api.pages("/accounts", {})
    managed = [a for a in accounts if a.get("status") == "managed"]
    offboarded = [a for a in accounts if a.get("status") == "offboarded"]
    under_way = {a["offboarding"]["id"] for a in managed if a.get("offboarding")}
    in_flight = [r for status in IN_FLIGHT for r in api.pages("/onboardings", {"status": status})
                 if r.get("requestId") not in under_way]
    mode = "apply" if options.apply else "plan"
    say(f"offboard-all ({mode}): {options.base}: {len(managed)} managed account(s), "
        f"{len(offboarded)} offboarded already")
    for request in in_flight:
        what = request.get("operation") or "request"
        say(f"in flight: {request.get('requestId')} ({what} of account {request.get('accountName')}, "
            f"{request.get('status')}): an onboarding that finishes after this run leaves its account behind; let it "
            "finish, then run this again")
    flags = {"removeSshKey": str(options.remove_ssh_keys).lower(), "removeApiKey": str(options.remove_api_keys).lower()}
    if not options.apply:
        for account in managed:
            name = account["accountName"]
            under = account.get("offboarding")
            running = f" (its offboarding {under['id']} is under way)" if under else ""
            say(f"would offboard: {name}: DELETE /api/accounts/{name}?{urllib.parse.urlencode(flags)}{running}")
        if managed:
            say("plan only: run again with --apply to offboard these")
        else:
            say("nothing to offboard")
        return 0

    started: dict[str, str] = {}
    failed = 0
    for account in managed:
        name = account["accountName"]
        status, body = api.call("DELETE", "/accounts/" + urllib.parse.quote(name, safe=""), flags)
        if status in (200, 202):
            started[name] = body["id"]
            say(f"offboarding: {name} ({body['id']})")
        elif status == 404:
            say(f"gone: {name} is no longer managed (offboarded meanwhile)")
        else:
            failed += 1
            say(f"failed: {name}: {refusal('DELETE', '/accounts/' + name, status, body)}")

    done = 0
    deadline = time.monotonic() + options.timeout_seconds
    pending = dict(started)
    while pending:
        for name, offboarding in list(pending.items()):
            status, state = api.call("GET", "/onboardings/" + urllib.parse.quote(offboarding, safe=""))
            if status != 200 or state.get("status") not in FINISHED:
                continue
            del pending[name]
            removed, left = state.get("removed") or [], state.get("left") or []
            if state["status"] == "succeeded":
                done += 1
                say(f"offboarded: {name} ({offboarding}): removed {len(removed)}, left {len(left)}")
            else:
                failed += 1
                error = state.get("error") or {}
                say(f"failed: {name} ({offboarding}): {error.get('reason')}: {error.get('message')}")
            for item in removed:
                say(f"    removed: {item}")
            for item in left:
                say(f"    left: {item}")
        if pending and time.monotonic() > deadline:
            break
        if pending:
            time.sleep(options.poll_seconds)
    for name, offboarding in pending.items():
        say(f"still running: {name} ({offboarding}): follow GET /api/onboardings/{offboarding}, or run this again")
    say(f"summary: {done} offboarded, {failed} failed, {len(pending)} still running")
    return 0 if not failed and not pending else 1


def main() -> int:
    try:
        return offboard_all(Options.from_environment(dict(os.environ)))
    except ApiError as exc:
        print(f"offboard-all: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
