"""GraphClient against the identity stand-in, over HTTPS with the stand-in's loopback CA."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from devstack.httpbase import RunningServer
from devstack.identity import create_app
from devstack.tls import LoopbackCertificate, make_loopback_certificate
from shared.clients.graph import Application, GraphClient, NewPassword
from shared.clients.http import RetryPolicy
from tests.credentials import StandInCredential

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

GRAPH = "https://graph.microsoft.com"
SCOPE = f"{GRAPH}/.default"
TENANT = str(uuid.uuid4())
MI_CLIENT = str(uuid.uuid4())


class GraphCredential(StandInCredential):
    """Graph tokens for the app's identity; ``first_token`` is handed out first (a cached token
    Graph no longer accepts)."""

    def __init__(self, *, lifetime_seconds: int = 3600, first_token: str | None = None) -> None:
        super().__init__(tenant=TENANT, subject=MI_CLIENT, audience=GRAPH, lifetime_seconds=lifetime_seconds)
        self.first_token = first_token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        issued = super().get_token(*scopes, **kwargs)
        if self.first_token is not None and len(self.asks) == 1:
            return AccessToken(self.first_token, issued.expires_on)
        return issued


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return make_loopback_certificate(tmp_path_factory.mktemp("graph-tls"))


@pytest.fixture(scope="module")
def ca_path(certificate: LoopbackCertificate) -> Path:
    return certificate.ca_path


@pytest.fixture(scope="module")
def identity(certificate: LoopbackCertificate) -> Iterator[RunningServer]:
    app = create_app(identity_header="test-header", managed_identity_tenant_id=TENANT,
                     managed_identity_client_id=MI_CLIENT)
    server = RunningServer(app, tls=certificate.server_context())
    yield server
    server.stop()


@pytest.fixture
def admin(identity: RunningServer, ca_path: Path) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats session.verify
    session.verify = str(ca_path)
    session.post(f"{identity.url}/_devstack/reset", timeout=5).raise_for_status()
    yield session
    session.post(f"{identity.url}/_devstack/reset", timeout=5).raise_for_status()
    session.close()


@pytest.fixture
def app_id(identity: RunningServer, admin: requests.Session) -> str:
    app = str(uuid.uuid4())
    response = admin.post(f"{identity.url}/_devstack/applications",
                          json={"appId": app, "tenantId": TENANT, "displayName": "onboarding-sp"}, timeout=5)
    response.raise_for_status()
    return app


def make_client(identity: RunningServer, ca_path: Path, credential: StandInCredential | None = None,
                **kwargs: Any) -> GraphClient:
    session = requests.Session()
    session.verify = str(ca_path)
    return GraphClient(identity.url, credential or GraphCredential(), scope=SCOPE, session=session,
                       retry=RetryPolicy(initial_delay=0.01, max_delay=0.05), **kwargs)


@pytest.fixture
def graph(identity: RunningServer, ca_path: Path, admin: requests.Session) -> Iterator[GraphClient]:
    client = make_client(identity, ca_path)
    with client:
        yield client
    client._session.close()


def in_days(days: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=days)


def test_get_application(graph: GraphClient, app_id: str) -> None:
    app = graph.get_application(app_id)
    assert isinstance(app, Application)
    assert app.app_id == app_id
    assert uuid.UUID(app.object_id)
    assert app.display_name == "onboarding-sp"
    assert app.passwords == ()


def test_service_principal_id_is_the_object_id_role_assignments_name(graph: GraphClient, identity: RunningServer,
                                                                      admin: requests.Session) -> None:
    app_id, sp_id = str(uuid.uuid4()), str(uuid.uuid4())
    admin.post(f"{identity.url}/_devstack/applications",
               json={"appId": app_id, "tenantId": TENANT, "servicePrincipalId": sp_id}, timeout=5).raise_for_status()
    assert graph.service_principal_id(app_id) == sp_id
    assert graph.service_principal_id(app_id) != graph.get_application(app_id).object_id
    sp_calls = [r for r in identity.requests if r.path.startswith("/v1.0/servicePrincipals")]
    assert sp_calls and all(r.query.get("$select") == ["id,appId"] for r in sp_calls)
    with pytest.raises(ResourceNotFoundError) as caught:
        graph.service_principal_id(str(uuid.uuid4()))
    assert caught.value.error is not None and caught.value.error.code == "Request_ResourceNotFound"
    assert caught.value.service == "Graph"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="app_id"):
        graph.service_principal_id("")


def test_add_and_remove_password_round_trip(graph: GraphClient, app_id: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    end = in_days(180)
    new = graph.add_password(app_id, display_name="palette-2026-01", end=end)
    assert isinstance(new, NewPassword)
    secret = new.secret_text.get_secret_value()
    assert len(secret) == 40
    assert new.end == end
    assert new.hint == secret[:3]
    assert secret not in repr(new)

    listed = graph.get_application(app_id).passwords
    assert [(p.key_id, p.display_name, p.end, p.hint) for p in listed] == [
        (new.key_id, "palette-2026-01", end, new.hint)]

    graph.remove_password(app_id, new.key_id)
    assert graph.get_application(app_id).passwords == ()
    assert secret not in caplog.text


def test_remove_password_is_idempotent(graph: GraphClient, app_id: str) -> None:
    new = graph.add_password(app_id, display_name="gone-soon", end=in_days(1))
    graph.remove_password(app_id, new.key_id)
    graph.remove_password(app_id, new.key_id)  # already gone: success
    graph.remove_password(app_id, str(uuid.uuid4()))  # never existed: success


def test_remove_password_keeps_other_passwords(graph: GraphClient, app_id: str) -> None:
    keep = graph.add_password(app_id, display_name="keep", end=in_days(30))
    drop = graph.add_password(app_id, display_name="drop", end=in_days(30), start=in_days(0))
    graph.remove_password(app_id, drop.key_id)
    assert [p.key_id for p in graph.get_application(app_id).passwords] == [keep.key_id]


@pytest.mark.parametrize("operation", ["get", "add", "remove"])
def test_unknown_application_is_not_found(graph: GraphClient, operation: str) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(ResourceNotFoundError) as caught:
        if operation == "get":
            graph.get_application(unknown)
        elif operation == "add":
            graph.add_password(unknown, display_name="x", end=in_days(1))
        else:
            graph.remove_password(unknown, str(uuid.uuid4()))
    assert caught.value.status_code == 404
    assert caught.value.error is not None and caught.value.error.code == "Request_ResourceNotFound"
    assert caught.value.request_id  # type: ignore[attr-defined]


def test_password_cap_surfaces_graphs_message(graph: GraphClient, app_id: str, identity: RunningServer,
                                              admin: requests.Session) -> None:
    admin.post(f"{identity.url}/_devstack/config", json={"passwordCap": 1}, timeout=5).raise_for_status()
    graph.add_password(app_id, display_name="first", end=in_days(10))
    with pytest.raises(HttpResponseError) as caught:
        graph.add_password(app_id, display_name="second", end=in_days(10))
    error = caught.value
    assert error.status_code == 400
    assert error.error is not None and error.error.code == "TooManyAppPasswords"
    assert "You can only add a maximum of 1 passwords" in str(error)
    assert len(graph.get_application(app_id).passwords) == 1


def test_end_in_the_past_is_a_400_with_graphs_message(graph: GraphClient, app_id: str) -> None:
    with pytest.raises(HttpResponseError) as caught:
        graph.add_password(app_id, display_name="late", end=in_days(-1))
    assert caught.value.status_code == 400
    assert "endDateTime" in str(caught.value)


def test_naive_datetimes_are_refused_before_any_call(graph: GraphClient, app_id: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        graph.add_password(app_id, display_name="naive", end=dt.datetime(2030, 1, 1))


def test_token_is_cached(identity: RunningServer, ca_path: Path, app_id: str) -> None:
    credential = GraphCredential()
    with make_client(identity, ca_path, credential) as client:
        for _ in range(3):
            client.get_application(app_id)
    assert credential.scopes == [(SCOPE,)]


def test_token_within_five_minutes_of_expiry_is_renewed(identity: RunningServer, ca_path: Path,
                                                        app_id: str) -> None:
    credential = GraphCredential(lifetime_seconds=240)
    with make_client(identity, ca_path, credential) as client:
        client.get_application(app_id)
        client.get_application(app_id)
    assert len(credential.scopes) == 2


def test_rejected_cached_token_is_replaced_once(identity: RunningServer, ca_path: Path, app_id: str) -> None:
    credential = GraphCredential(first_token="not.a-valid.token")
    with make_client(identity, ca_path, credential) as client:
        assert client.get_application(app_id).app_id == app_id
    assert len(credential.scopes) == 2


def test_persistently_rejected_token_is_an_authentication_error(identity: RunningServer, ca_path: Path,
                                                                app_id: str) -> None:
    class Wrong(GraphCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            super().get_token(*scopes)
            return AccessToken("garbage", int(dt.datetime.now(dt.UTC).timestamp()) + 3600)

    credential = Wrong()
    with make_client(identity, ca_path, credential) as client, pytest.raises(ClientAuthenticationError) as caught:
        client.get_application(app_id)
    assert caught.value.status_code == 401
    assert "garbage" not in str(caught.value)
    assert len(credential.scopes) == 2


def test_default_scope_follows_the_endpoint() -> None:
    client = GraphClient("https://graph.microsoft.us/", GraphCredential())
    assert client._scope == "https://graph.microsoft.us/.default"
    client.close()


def test_throttled_graph_call_is_retried(graph: GraphClient, app_id: str, identity: RunningServer,
                                         admin: requests.Session) -> None:
    admin.post(f"{identity.url}/_devstack/faults",
               json={"path": "^/v1.0/applications", "method": "GET", "status": 429, "times": 1,
                     "headers": {"Retry-After": "0"}}, timeout=5).raise_for_status()
    assert graph.get_application(app_id).app_id == app_id


def test_session_ca_wins_over_the_environment_bundle(identity: RunningServer, ca_path: Path, app_id: str,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE replace a session's own CA path; the client must not.
    other = make_loopback_certificate(tmp_path / "other")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca_path))
    with make_client(identity, ca_path) as client:
        assert client.get_application(app_id).app_id == app_id


# -- Graph's usage warning and the write pace ----------------------------------------------------------


class Hooks:
    """What the app's pace hears: every ``on_usage`` call and every ``before_write``."""

    def __init__(self) -> None:
        self.usage: list[tuple[str, float]] = []
        self.writes = 0

    def on_usage(self, kind: str, share: float) -> None:
        self.usage.append((kind, share))

    def before_write(self) -> None:
        self.writes += 1


def write_limits(admin: requests.Session, identity: RunningServer, **figures: Any) -> None:
    response = admin.post(f"{identity.url}/_devstack/config", json={"graphWriteLimits": True, **figures}, timeout=5)
    response.raise_for_status()


def test_on_usage_hears_the_share_graph_reports_past_80_percent(identity: RunningServer, ca_path: Path,
                                                                admin: requests.Session, app_id: str) -> None:
    write_limits(admin, identity, graphAppWriteLimit=10, graphAppWriteWindowSeconds=60)
    hooks = Hooks()
    with make_client(identity, ca_path, on_usage=hooks.on_usage, before_write=hooks.before_write) as graph:
        added = [graph.add_password(app_id, display_name=f"p{n}", end=in_days(5)) for n in range(8)]
        assert hooks.usage == [] and hooks.writes == 8  # 80 % is not past 80 %
        graph.get_application(app_id)
        assert hooks.usage == [] and hooks.writes == 8  # a read takes no write slot
        graph.add_password(app_id, display_name="p8", end=in_days(5))
        assert hooks.usage == [("write", 0.9)]
        assert len(graph.get_application(app_id).passwords) == 9
        graph.remove_password(app_id, added[0].key_id)
    assert hooks.usage == [("write", 0.9), ("read", 0.9), ("write", 1.0)]
    assert hooks.writes == 10


def test_retry_after_is_waited_out_and_the_429_is_heard(identity: RunningServer, ca_path: Path,
                                                        admin: requests.Session, app_id: str) -> None:
    write_limits(admin, identity, graphAppWriteLimit=2, graphAppWriteWindowSeconds=2)
    hooks = Hooks()
    # The policy's 50 ms backoff would come back far too early: Retry-After (2 s) is what is waited.
    with make_client(identity, ca_path, on_usage=hooks.on_usage, before_write=hooks.before_write) as graph:
        graph.add_password(app_id, display_name="one", end=in_days(5))
        graph.add_password(app_id, display_name="two", end=in_days(5))
        began = time.monotonic()
        graph.add_password(app_id, display_name="three", end=in_days(5))
        waited = time.monotonic() - began
    assert 1.0 <= waited < 10
    statuses = [r.status for r in identity.requests if r.path.endswith("/addPassword")]
    assert statuses == [200, 200, 429, 200]
    # The 429 said 150 % of the limit was asked for; the retry, once the window had slid, said nothing.
    assert hooks.usage == [("write", 1.0), ("write", 1.5)]
    assert hooks.writes == 4  # the retry took a slot too: it reached Graph


@pytest.mark.parametrize("value", ["abc", "NaN", "inf", "-0.9", "", "0.9 of it"])
def test_a_malformed_usage_header_is_ignored(identity: RunningServer, ca_path: Path, admin: requests.Session,
                                             app_id: str, value: str) -> None:
    for header in (value, "1.25"):  # the well-formed one proves the injected answers are seen at all
        admin.post(f"{identity.url}/_devstack/faults",
                   json={"path": "^/v1.0/applications", "method": "GET", "status": 429, "times": 1,
                         "headers": {"Retry-After": "0", "x-ms-throttle-limit-percentage": header}},
                   timeout=5).raise_for_status()
    hooks = Hooks()
    with make_client(identity, ca_path, on_usage=hooks.on_usage) as client:
        assert client.get_application(app_id).app_id == app_id
    assert hooks.usage == [("read", 1.25)]


def test_a_failing_on_usage_hook_does_not_lose_the_new_secret(identity: RunningServer, ca_path: Path,
                                                              admin: requests.Session, app_id: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    write_limits(admin, identity, graphAppWriteLimit=1, graphAppWriteWindowSeconds=60)

    def broken(kind: str, share: float) -> None:
        raise RuntimeError("pace table unreachable at https://acct.table.core.windows.net?sig=hush")

    with caplog.at_level(logging.WARNING, logger="shared.clients.graph"), \
            make_client(identity, ca_path, on_usage=broken) as graph:
        added = graph.add_password(app_id, display_name="kept", end=in_days(5))
    assert isinstance(added, NewPassword) and added.secret_text.get_secret_value()
    assert "on_usage hook failed (RuntimeError)" in caplog.text and "hush" not in caplog.text


def test_a_failing_before_write_hook_sends_nothing(identity: RunningServer, ca_path: Path,
                                                   admin: requests.Session, app_id: str) -> None:
    def no_slot() -> None:
        raise TimeoutError("no slot")

    with make_client(identity, ca_path, before_write=no_slot) as graph, pytest.raises(TimeoutError):
        graph.add_password(app_id, display_name="never", end=in_days(5))
    assert not [r for r in identity.requests if r.path.endswith("/addPassword")]
