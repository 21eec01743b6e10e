"""Calls per onboarding: per service and per Palette prefix, against the minimum the steps need.

One host process of the real app, warmed by one onboarding; then ``--n`` onboardings with every
option (generated secret and SSH key, API key, Private Cloud Gateway), one after another, each
counted from the stand-ins' records. The minimum per onboarding (derived in bench/README.md):

- Palette, 15: ``/v1/dashboard`` 1 (the project), ``/v1/overlords`` 1 (the gateway), ``/v1/users`` 4
  (the API key's user, the project's SSH keys: the name check and the count against the limit,
  the upload, the read-back), ``/v1/apiKeys`` 3 (the name check, which also counts the user's keys
  against the limit; the create, the read-back), ``/v1/cloudaccounts`` 4 (the name check, the
  count of the tenant's accounts against the limit, the create, "the account is listed"),
  ``/v1/tenants`` 1 (the tenant's resource limits), ``/v1/clouds`` 1 (the validation); the tenant's
  uid (``/v1/users/info``) is asked once per process, by the warm-up;
- Graph, 2: read the app registration (the evidence the identity may add a password), ``addPassword``;
- Key Vault, 9: for each of the three secret names, "is one soft-deleted?" and "what versions?"
  (6), then one write each (3);
- Entra tokens, 0: a warm worker holds its managed-identity tokens (Palette's own sign-ins to Azure
  when it validates are Palette's calls and are not counted).

With ``--permissions`` each request also asks for ``azure.permissions`` (IaaS, dynamic placement,
one resource group where the principal holds Palette's published role): Graph 1 more (the app's
service principal), Resource Manager 3 (the principal's role assignments at the scope, the one
role's definition, the deny assignments there).

Prints, per service and per prefix, ``calls per onboarding`` with the minimum as the target, the
ratio of the total to the minimum, and any call kind above its minimum.

    .venv/bin/python -m bench calls [--n 5] [--permissions]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.common import BenchStack, Bodies, Subscriber, describe, figure, rate_prefix, say

MINIMUM_PALETTE = {"/v1/dashboard": 1, "/v1/overlords": 1, "/v1/users": 4, "/v1/apiKeys": 3,
                   "/v1/cloudaccounts": 4, "/v1/tenants": 1, "/v1/clouds": 1}
MINIMUM = {"palette": sum(MINIMUM_PALETTE.values()), "graph": 2, "keyvault": 9, "entra": 0}
#: What ``azure.permissions`` at one scope adds (the service principal; assignments, role, denies).
MINIMUM_PERMISSIONS = {"graph": 1, "arm": 3}
SUBSCRIPTION_ID = "6d7e8f90-0000-4000-8000-0000000bea01"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5, help="onboardings counted (default 5)")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--permissions", action="store_true",
                        help="each request asks for azure.permissions at one resource group")
    args = parser.parse_args(argv)
    minimum = dict(MINIMUM)
    if args.permissions:
        for service, extra in MINIMUM_PERMISSIONS.items():
            minimum[service] = minimum.get(service, 0) + extra

    per_service: Counter[str] = Counter()
    per_prefix: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    counted = 0
    with BenchStack() as bench, Subscriber(bench.settings) as subscriber:
        bodies = Bodies()
        apps = bench.register_apps(args.n + 1)

        def body_for(number: int) -> dict[str, Any]:
            body = bodies.one(apps[number], number)
            if args.permissions:
                body["azure"]["permissions"] = _granted_scope(bench, apps[number], number)
            return body

        bench.warm_host(subscriber, body_for(0), timeout=args.timeout)
        for number in range(1, args.n + 1):
            time.sleep(1.0)  # the previous onboarding's last writes are done
            bench.clear_requests()
            body = body_for(number)
            bench.enqueue([body])
            event = subscriber.wait_for({body["requestId"]}, timeout=args.timeout).get(body["requestId"])
            if event is None or event.type != "validated":
                say(f"onboarding {number}: no validated event")
                continue
            time.sleep(0.5)
            counted += 1
            for service, calls in bench.calls().items():
                per_service[service] += len(calls)
                for call in calls:
                    kinds[f"{service} {describe(call)}"] += 1
                    if service == "palette":
                        per_prefix[rate_prefix(call["path"])] += 1
            say(f"onboarding {number}: {sum(len(c) for c in bench.calls().values())} calls")
    runs = max(counted, 1)
    total = sum(per_service.values()) / runs
    floor = sum(minimum.values())
    figure("calls per onboarding, all services", total, "calls", f"minimum {floor}", digits=1)
    figure("calls ratio", total / floor, "", "1.00")
    for service, least in minimum.items():
        figure(f"{service} calls per onboarding", per_service[service] / runs, "calls", f"minimum {least}", digits=1)
    for prefix, least in MINIMUM_PALETTE.items():
        figure(f"palette calls per onboarding at {prefix}", per_prefix[prefix] / runs, "calls", f"minimum {least}",
               digits=1)
    for kind, count in sorted(kinds.items()):
        figure(f"calls per onboarding, {kind}", count / runs, "calls", "none", digits=1)
    figure("onboardings counted", counted, "", str(args.n))
    return 0


def _granted_scope(bench: BenchStack, client_id: str, number: int) -> dict[str, Any]:
    """A resource group where the app's service principal holds Palette's published role for IaaS
    with dynamic placement; the request's ``azure.permissions`` for it."""
    from devstack.stack import DEVSTACK_TENANT_ID
    from shared.permissions.catalog import published_role

    # Registering an app again answers with it as it is, its service principal's object id too.
    principal = bench.admin("identity", "POST", "applications",
                            {"appId": client_id, "tenantId": DEVSTACK_TENANT_ID})["servicePrincipalId"]
    scope = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-bench-{number:04d}"
    role = published_role("azure-iaas-dynamic-rg-sub-role")
    bench.admin("arm", "POST", "roleAssignments", {"scope": scope, "principalId": principal, "roleDefinition": {
        "roleName": f"{role.role_name} {number:04d}", "actions": list(role.actions)}})
    return {"profile": "iaas", "placement": "dynamic", "scopes": [scope]}


if __name__ == "__main__":
    sys.exit(main())
