"""The tenant limits rotation meets in real tenants, on the stack's identity stand-in.

Driven as rotation drives them: our ``GraphClient`` with ``DefaultAzureCredential`` (the stack's
managed identity), ``azure-identity``'s ``ClientSecretCredential`` with its default settings to
prove a secret works, and raw ``requests`` only where the client hides the wire (headers, the
error's ``details``). Each test puts the stand-in's settings back as it found them.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential, DefaultAzureCredential

from devstack.identity.models import DEFAULT_APP_MANAGEMENT_POLICY_ID
from devstack.stack import DEVSTACK_TENANT_ID
from shared.clients.graph import GraphClient
from shared.clients.http import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devstack.stack import Stack

# Null puts the write windows' figures back to the real ones.
DEFAULTS = {"propagationDelaySeconds": 0, "passwordCap": None, "passwordLifetimeMaxDays": None,
            "graphRequestsPerSecond": 0, "graphWriteLimits": False, "graphAppWriteLimit": None,
            "graphAppWriteWindowSeconds": None, "graphTenantWriteLimit": None, "graphTenantWriteWindowSeconds": None}
USAGE = "x-ms-throttle-limit-percentage"


class Identity:
    """The stack's identity stand-in: admin calls, raw Graph calls with the managed identity's token."""

    def __init__(self, stack: Stack) -> None:
        self.settings = stack.settings
        self.base = stack.settings["GRAPH_ENDPOINT"]
        self.verify = stack.settings["REQUESTS_CA_BUNDLE"]
        self.credential = DefaultAzureCredential()

    def configure(self, **settings: Any) -> dict[str, Any]:
        response = requests.post(f"{self.base}/_devstack/config", json=settings, verify=self.verify, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def register(self) -> str:
        app_id = str(uuid.uuid4())
        response = requests.post(f"{self.base}/_devstack/applications",
                                 json={"appId": app_id, "tenantId": DEVSTACK_TENANT_ID}, verify=self.verify,
                                 timeout=10)
        assert response.status_code == 201, response.text
        return app_id

    def graph(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> requests.Response:
        """A raw Graph call with the managed identity's token, or ``token`` (another caller's)."""
        token = token or self.credential.get_token(self.settings["GRAPH_SCOPE"]).token
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.base}/v1.0{path}", headers=headers, verify=self.verify, timeout=10,
                                **kwargs)

    def client(self, **kwargs: Any) -> GraphClient:
        return GraphClient(self.base, self.credential, scope=self.settings["GRAPH_SCOPE"], **kwargs)

    def app_token(self, app_id: str) -> str:
        """A Graph token for ``app_id`` itself (a second caller in the tenant), from a new secret."""
        with self.client() as graph:
            secret = graph.add_password(app_id, display_name="second caller", end=in_days(5)).secret_text
        credential = ClientSecretCredential(DEVSTACK_TENANT_ID, app_id, secret.get_secret_value(),
                                            authority=self.settings["AZURE_AUTHORITY_HOST"])
        try:
            return credential.get_token(self.settings["GRAPH_SCOPE"]).token
        finally:
            credential.close()

    def secret_works(self, app_id: str, secret: str) -> str | None:
        """``None`` when the secret gets a token as rotation asks for one, else Entra's refusal."""
        credential = ClientSecretCredential(DEVSTACK_TENANT_ID, app_id, secret,
                                            authority=self.settings["AZURE_AUTHORITY_HOST"])
        try:
            credential.get_token(f"{self.settings['GRAPH_ENDPOINT']}/.default")
        except ClientAuthenticationError as error:
            return str(error.message)
        finally:
            credential.close()
        return None


@pytest.fixture
def identity(stack: Stack) -> Iterator[Identity]:
    stand_in = Identity(stack)
    stand_in.configure(**DEFAULTS)
    try:
        yield stand_in
    finally:
        stand_in.configure(**DEFAULTS)
        stand_in.credential.close()


def in_days(days: float, *, start: dt.datetime | None = None) -> dt.datetime:
    return (start or dt.datetime.now(dt.UTC)).replace(microsecond=0) + dt.timedelta(days=days)


# -- the application credential lifetime policy ----------------------------------------------------


def test_a_password_longer_than_the_policy_allows_is_refused_as_graph_refuses_it(identity: Identity) -> None:
    app_id = identity.register()
    assert identity.configure(passwordLifetimeMaxDays=30)["passwordLifetimeMaxDays"] == 30

    with identity.client() as graph:
        with pytest.raises(HttpResponseError) as caught:
            graph.add_password(app_id, display_name="too long", end=in_days(31))
        error = caught.value
        assert error.status_code == 400
        assert error.error is not None and error.error.code == "CredentialInvalidLifetimeAsPerAppPolicy"
        message = ("Credential lifetime exceeds the max value allowed as per assigned policy "
                   f"'{DEFAULT_APP_MANAGEMENT_POLICY_ID}'.")
        assert message in str(error)

        start = in_days(10)
        with pytest.raises(HttpResponseError):
            graph.add_password(app_id, display_name="late and long", start=start, end=in_days(31, start=start))
        assert graph.get_application(app_id).passwords == ()

        graph.add_password(app_id, display_name="just inside", end=in_days(30) - dt.timedelta(minutes=1))
        graph.add_password(app_id, display_name="late, inside", start=start, end=in_days(30, start=start))
        assert len(graph.get_application(app_id).passwords) == 2

    raw = identity.graph("POST", f"/applications(appId='{app_id}')/addPassword",
                         json={"passwordCredential": {"displayName": "Graph's default lifetime is two years"}})
    assert raw.status_code == 400
    body = raw.json()["error"]
    assert (body["code"], body["message"]) == ("CredentialInvalidLifetimeAsPerAppPolicy", message)
    assert body["details"] == [{"code": "InvalidKeyEndDate", "message": message, "target": "EndDate"}]

    # The message names the policy; the policy says the limit.
    policy = identity.graph("GET", "/policies/defaultAppManagementPolicy")
    assert policy.status_code == 200
    assert policy.json()["id"] == DEFAULT_APP_MANAGEMENT_POLICY_ID and policy.json()["isEnabled"] is True
    assert policy.json()["applicationRestrictions"]["passwordCredentials"] == [{
        "restrictionType": "passwordLifetime", "state": "enabled", "maxLifetime": "P30D",
        "restrictForAppsCreatedAfterDateTime": None}]

    identity.configure(passwordLifetimeMaxDays=None)
    assert identity.graph("GET", "/policies/defaultAppManagementPolicy").json()["isEnabled"] is False
    with identity.client() as graph:
        graph.add_password(app_id, display_name="no policy", end=in_days(400))


def test_lifetime_and_throttling_settings_are_checked(identity: Identity) -> None:
    for bad in ({"passwordLifetimeMaxDays": 0}, {"passwordLifetimeMaxDays": 1.5}, {"passwordLifetimeMaxDays": "30"},
                {"passwordLifetimeMaxDays": True}, {"graphRequestsPerSecond": -1}, {"graphRequestsPerSecond": 5e-324},
                {"graphRequestsPerSecond": "fast"}, {"graphRequestsPerSecond": float("inf")},
                {"passwordLifetime": 30}, {"graphWriteLimits": "yes"}, {"graphWriteLimits": 1},
                {"graphAppWriteLimit": 0}, {"graphAppWriteLimit": 1.5}, {"graphAppWriteLimit": True},
                {"graphTenantWriteLimit": -1}, {"graphTenantWriteLimit": 10**7}, {"graphAppWriteWindowSeconds": 0},
                {"graphAppWriteWindowSeconds": "150"}, {"graphTenantWriteWindowSeconds": float("nan")},
                {"graphTenantWriteWindowSeconds": 3601}):
        response = requests.post(f"{identity.base}/_devstack/config", data=_json(bad), verify=identity.verify,
                                 headers={"Content-Type": "application/json"}, timeout=10)
        assert response.status_code == 400, (bad, response.text)
        assert "Traceback" not in response.text and response.json()["error"]["message"]
    assert identity.configure(graphRequestsPerSecond=None)["graphRequestsPerSecond"] == 0
    small = identity.configure(graphWriteLimits=True, graphAppWriteLimit=30, graphAppWriteWindowSeconds=3,
                               graphTenantWriteLimit=60, graphTenantWriteWindowSeconds=6.5)
    assert {key: small[key] for key in DEFAULTS if key.startswith("graphW") or "Write" in key} == {
        "graphWriteLimits": True, "graphAppWriteLimit": 30, "graphAppWriteWindowSeconds": 3,
        "graphTenantWriteLimit": 60, "graphTenantWriteWindowSeconds": 6.5}
    real = identity.configure(graphWriteLimits=None, graphAppWriteLimit=None, graphAppWriteWindowSeconds=None,
                              graphTenantWriteLimit=None, graphTenantWriteWindowSeconds=None)
    assert (real["graphWriteLimits"], real["graphAppWriteLimit"], real["graphAppWriteWindowSeconds"],
            real["graphTenantWriteLimit"], real["graphTenantWriteWindowSeconds"]) == (False, 3000, 150, 18000, 300)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)  # float("inf") becomes Infinity, which the stand-in must refuse too


# -- the password cap and removing what is not there ---------------------------------------------------


def test_too_many_passwords_is_too_many_app_passwords(identity: Identity) -> None:
    app_id = identity.register()
    identity.configure(passwordCap=2)
    with identity.client() as graph:
        first = graph.add_password(app_id, display_name="one", end=in_days(10))
        graph.add_password(app_id, display_name="two", end=in_days(10))
        with pytest.raises(HttpResponseError) as caught:
            graph.add_password(app_id, display_name="three", end=in_days(10))
        assert caught.value.status_code == 400
        assert caught.value.error is not None and caught.value.error.code == "TooManyAppPasswords"
        assert "Not allowed to add 3 passwords. You can only add a maximum of 2 passwords." in str(caught.value)
        raw = identity.graph("POST", f"/applications(appId='{app_id}')/addPassword", json={"passwordCredential": {
            "endDateTime": in_days(5).isoformat()}})
        assert raw.json()["error"]["details"] == [{"target": "passwordCredentials", "code": "TooManyAppPasswords"}]
        graph.remove_password(app_id, first.key_id)
        graph.add_password(app_id, display_name="room again", end=in_days(10))


def test_removing_a_key_id_the_app_does_not_hold(identity: Identity) -> None:
    app_id = identity.register()
    missing = str(uuid.uuid4())
    raw = identity.graph("POST", f"/applications(appId='{app_id}')/removePassword", json={"keyId": missing})
    assert raw.status_code == 404
    error = raw.json()["error"]
    assert error["code"] == "Request_ResourceNotFound"
    assert error["message"] == (f"Resource '{missing}' does not exist or one of its queried reference-property "
                                "objects are not present.")
    with identity.client() as graph:
        graph.remove_password(app_id, missing)  # our client counts it as removed: it is not there


# -- throttling ---------------------------------------------------------------------------------------


def test_graph_calls_past_the_rate_get_429_with_retry_after(identity: Identity) -> None:
    app_id = identity.register()
    identity.configure(graphRequestsPerSecond=1)
    path = f"/applications(appId='{app_id}')"
    assert identity.graph("GET", path).status_code == 200
    throttled = identity.graph("GET", path, headers={"client-request-id": "throttle-probe"})
    assert throttled.status_code == 429
    retry_after = int(throttled.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    error = throttled.json()["error"]
    assert (error["code"], error["message"]) == ("TooManyRequests", "Please retry again later.")
    assert error["innerError"]["status"] == "429" and error["innerError"]["client-request-id"] == "throttle-probe"
    assert throttled.headers["x-ms-throttle-scope"].startswith("Tenant_Application/ReadWrite/")
    assert throttled.headers["x-ms-throttle-scope"].endswith(f"/{DEVSTACK_TENANT_ID}")

    # Token endpoints and the admin surface are not Graph: never throttled.
    secret_app = identity.register()
    identity.configure(graphRequestsPerSecond=0)
    with identity.client() as graph:
        secret = graph.add_password(secret_app, display_name="token probe", end=in_days(5)).secret_text
    identity.configure(graphRequestsPerSecond=1)
    assert all(identity.secret_works(secret_app, secret.get_secret_value()) is None for _ in range(4))

    time.sleep(retry_after)
    assert identity.graph("GET", path).status_code == 200


def test_graph_client_waits_out_retry_after(identity: Identity, stack: Stack) -> None:
    app_id = identity.register()
    identity.configure(graphRequestsPerSecond=1)
    assert stack.identity_https is not None
    seen = len(stack.identity_https.requests)
    with identity.client(retry=RetryPolicy(initial_delay=0.01, max_delay=0.05)) as graph:
        began = time.monotonic()
        for _ in range(3):
            graph.get_application(app_id)
        elapsed = time.monotonic() - began
    statuses = [r.status for r in stack.identity_https.requests[seen:] if r.path.startswith("/v1.0/")]
    assert 429 in statuses and statuses[-1] == 200
    assert elapsed >= 1.0  # two throttled calls, each waited out for Retry-After, not the 50 ms backoff


# -- Graph's write windows -----------------------------------------------------------------------------


def _add_password(identity: Identity, app_id: str, **kwargs: Any) -> requests.Response:
    return identity.graph("POST", f"/applications(appId='{app_id}')/addPassword",
                          json={"passwordCredential": {"displayName": "window probe",
                                                       "endDateTime": in_days(5).isoformat()}}, **kwargs)


def test_past_80_percent_of_the_write_window_every_answer_says_how_much_is_used(identity: Identity,
                                                                                 stack: Stack) -> None:
    app_id = identity.register()
    identity.configure(graphWriteLimits=True, graphAppWriteLimit=10, graphAppWriteWindowSeconds=60)
    first_sent = time.monotonic()
    shares = []
    for _ in range(10):
        response = _add_password(identity, app_id)
        assert response.status_code == 200
        shares.append(response.headers.get(USAGE))
    assert shares == [None] * 8 + ["0.90", "1.00"]

    # Reads are told the share but do not use it; so are answers that are errors.
    read = identity.graph("GET", f"/applications(appId='{app_id}')")
    assert (read.status_code, read.headers[USAGE]) == (200, "1.00")
    missing = identity.graph("GET", f"/applications(appId='{uuid.uuid4()}')")
    assert (missing.status_code, missing.headers[USAGE]) == (404, "1.00")

    refused = _add_password(identity, app_id, headers={"client-request-id": "window-probe"})
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 60 - (time.monotonic() - first_sent) - 1 <= retry_after <= 60  # when the oldest write leaves
    assert refused.headers[USAGE] == "1.10"
    caller = stack.managed_identity_client_id
    assert refused.headers["x-ms-throttle-scope"] == f"Tenant_Application/Write/{caller}/{DEVSTACK_TENANT_ID}"
    assert refused.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    error = refused.json()["error"]
    assert error["code"] == "TooManyRequests" and error["innerError"]["client-request-id"] == "window-probe"
    assert identity.graph("GET", f"/applications(appId='{app_id}')").status_code == 200  # reads go on
    with identity.client() as graph:
        assert len(graph.get_application(app_id).passwords) == 10  # the refused write did nothing

    # The window is per caller: another app of the tenant writes freely, with nothing to report.
    other = identity.register()
    identity.configure(graphWriteLimits=False)
    token = identity.app_token(other)
    identity.configure(graphWriteLimits=True, graphAppWriteLimit=1, graphAppWriteWindowSeconds=60)
    assert _add_password(identity, app_id).headers[USAGE] == "1.00"
    alone = _add_password(identity, other, token=token)
    assert alone.status_code == 200 and alone.headers[USAGE] == "1.00"
    assert _add_password(identity, app_id).status_code == 429


def test_the_write_window_slides_and_retry_after_is_when_it_has_room(identity: Identity) -> None:
    app_id = identity.register()
    identity.configure(graphWriteLimits=True, graphAppWriteLimit=10, graphAppWriteWindowSeconds=6)
    for _ in range(5):
        assert _add_password(identity, app_id).status_code == 200
    time.sleep(3)
    assert [_add_password(identity, app_id).headers.get(USAGE) for _ in range(5)] == [None] * 3 + ["0.90", "1.00"]
    refused = _add_password(identity, app_id)
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 3  # the first five leave six seconds after they came, three of which passed

    time.sleep(retry_after)
    # The first five have left; the last five still count: the window slides, it does not restart.
    again = _add_password(identity, app_id)
    assert again.status_code == 200 and USAGE not in again.headers
    assert [_add_password(identity, app_id).headers.get(USAGE) for _ in range(3)] == [None, None, "0.90"]


def test_the_tenant_write_window_counts_every_app_of_the_tenant(identity: Identity, stack: Stack) -> None:
    app_id, other = identity.register(), identity.register()
    token = identity.app_token(other)
    identity.configure(graphWriteLimits=True, graphTenantWriteLimit=6, graphTenantWriteWindowSeconds=60)
    assert [_add_password(identity, app_id).headers.get(USAGE) for _ in range(5)] == [None] * 4 + ["0.83"]
    # Every caller of the tenant is told the tenant's share, and spends it.
    read = identity.graph("GET", f"/applications(appId='{other}')", token=token)
    assert read.status_code == 200 and read.headers[USAGE] == "0.83"
    assert _add_password(identity, other, token=token).headers[USAGE] == "1.00"

    refused = _add_password(identity, app_id)
    assert refused.status_code == 429 and 50 <= int(refused.headers["Retry-After"]) <= 60
    caller = stack.managed_identity_client_id
    assert refused.headers["x-ms-throttle-scope"] == f"Tenant/Write/{caller}/{DEVSTACK_TENANT_ID}"
    assert refused.headers[USAGE] == "1.17"
    assert _add_password(identity, other, token=token).status_code == 429

    # New figures start the windows afresh.
    identity.configure(graphTenantWriteLimit=7)
    assert _add_password(identity, app_id).status_code == 200


def test_the_write_windows_on_a_hand_driven_clock() -> None:
    """Retry-After is exact to the second, reads cost nothing, and a full tenant window stays cheap."""
    from devstack.identity.models import WriteLimits, WriteWindows

    now = [1000.0]
    windows = WriteWindows(lambda: now[0])
    limits = WriteLimits(app_limit=3, app_window_seconds=10, tenant_limit=5, tenant_window_seconds=20)

    def write(caller: str = "app-1", tenant: str = "tenant-a") -> tuple[int | None, float | None, str]:
        verdict = windows.take(tenant, caller, write=True, limits=limits)
        return verdict.retry_after, verdict.reported_usage, verdict.scope

    assert write() == (None, None, "Tenant_Application")
    now[0] += 2.5
    assert write() == (None, None, "Tenant_Application")
    assert write()[:2] == (None, 1.0)
    assert windows.take("tenant-a", "app-1", write=False, limits=limits).reported_usage == 1.0  # not counted
    now[0] += 0.25
    assert write() == (8, 4 / 3, "Tenant_Application")  # the first leaves at 1010: 7.25 s, rounded up
    now[0] += 7.0
    assert write()[0] == 1  # a quarter of a second to go is still a second
    now[0] += 0.25
    assert write()[0] is None  # the first write left; the refused ones never counted

    # The tenant's window (20 s) still holds all four; app-2's write fills it, its next is refused.
    assert write("app-2")[0] is None
    assert write("app-2") == (10, 1.2, "Tenant")  # the tenant's first write leaves at 1020
    assert write("app-1", "tenant-b")[0] is None  # another tenant has its own window
    windows.reset()
    assert write()[0] is None

    # Graph's real figures: 18,000 writes pass in 5 minutes, the next waits for the oldest to leave.
    real = WriteLimits(app_limit=3000, app_window_seconds=150, tenant_limit=18000, tenant_window_seconds=300)
    began = time.perf_counter()
    for n in range(18000):  # 64 a second, from six apps: under each app's 3,000 per 150 s
        now[0] += 1 / 64
        assert windows.take("big", f"app-{n % 6}", write=True, limits=real).retry_after is None
    now[0] += 1 / 64
    refused = windows.take("big", "app-7", write=True, limits=real)
    assert (refused.retry_after, refused.scope) == (19, "Tenant")  # the first came 281.25 s ago
    assert time.perf_counter() - began < 5  # constant work per request, not a scan of the window


# -- proving a secret works, as rotation does --------------------------------------------------------


def test_client_secret_credential_with_default_settings(identity: Identity) -> None:
    """Exactly rotation's call: no ``disable_instance_discovery``, no ``connection_verify``."""
    app_id = identity.register()
    with identity.client() as graph:
        first = graph.add_password(app_id, display_name="first", end=in_days(30))
        assert identity.secret_works(app_id, first.secret_text.get_secret_value()) is None

        identity.configure(propagationDelaySeconds=600)
        second = graph.add_password(app_id, display_name="second", end=in_days(30))
        refused = identity.secret_works(app_id, second.secret_text.get_secret_value())
        assert refused is not None and "AADSTS7000215" in refused
        identity.configure(propagationDelaySeconds=0)
        assert identity.secret_works(app_id, second.secret_text.get_secret_value()) is None

        graph.remove_password(app_id, first.key_id)
        removed = identity.secret_works(app_id, first.secret_text.get_secret_value())
        assert removed is not None and "AADSTS7000215" in removed
        assert identity.secret_works(app_id, second.secret_text.get_secret_value()) is None


def test_the_discovery_proxy_answers_for_its_host_only(identity: Identity) -> None:
    """Other tunnels pass through as if there were no proxy (``.invalid`` never resolves: 502)."""
    with pytest.raises(requests.exceptions.ProxyError, match="502"):
        requests.get("https://registry.invalid/", timeout=10)
    not_a_tunnel = requests.get("http://plain.invalid/", proxies={"http": identity.settings["HTTPS_PROXY"]},
                                timeout=10)
    assert not_a_tunnel.status_code == 403
    unknown = requests.get("https://login.microsoftonline.com/common/discovery/instance",
                           params={"api-version": "1.1",
                                   "authorization_endpoint": "https://login.example.net/t/oauth2/v2.0/authorize"},
                           verify=identity.verify, timeout=10)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_instance" and unknown.json()["error_codes"] == [50049]
    other = requests.get("https://login.microsoftonline.com/common/oauth2/v2.0/token", verify=identity.verify,
                         timeout=10)
    assert other.status_code == 404


def test_the_throttle_is_a_bucket_per_caller_and_tenant() -> None:
    """The rule itself, on a hand-driven clock: a burst of max(1, R), then Retry-After until refilled."""
    from devstack.identity.models import RequestThrottle

    now = [100.0]
    throttle = RequestThrottle(lambda: now[0])
    caller, other = ("tenant-a", "app-1"), ("tenant-a", "app-2")
    assert [throttle.take(caller, 2) for _ in range(3)] == [None, None, 1]
    assert throttle.take(other, 2) is None  # another caller has its own bucket
    assert throttle.take(caller, 0) is None  # 0 is off
    now[0] += 0.5  # one request back at 2 a second
    assert throttle.take(caller, 2) is None and throttle.take(caller, 2) == 1
    assert throttle.take(("t", "slow"), 0.25) is None and throttle.take(("t", "slow"), 0.25) == 4
    throttle.reset()
    assert throttle.take(caller, 2) is None
