"""PaletteClient's Azure backup locations against the Palette stand-in over real HTTP.

A team often points a Palette backup location at the service principal an onboarding registered,
so the location holds the same client secret as the cloud account. These tests make locations the
way the console or another team would (the public ``POST``, or the stand-in's admin seed), then
list, read and re-credential them through the product's client. ``/_devstack/state`` shows each
stored secret's SHA-256, so a test can tell which secret a location holds without reading it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from pydantic import SecretStr

from devstack.httpbase import RunningServer
from devstack.palette import create_app
from shared.clients.http import RetryPolicy
from shared.clients.palette import AzureBackupLocation, AzureCredentials, PaletteClient

if TYPE_CHECKING:
    from collections.abc import Iterator

SPEC_PATH = Path(__file__).resolve().parents[2] / ".." / "shared" / "palette-api" / "palette-apis-spec.json"
ADMIN_KEY = "admin-key-" + uuid.uuid4().hex
OLD_SECRET = "Old~Secret-" + uuid.uuid4().hex
NEW_SECRET = "New~Secret-" + uuid.uuid4().hex
OTHER_TEAM_SECRET = "Team-B~Secret-" + uuid.uuid4().hex
TENANT_ID = str(uuid.uuid4())
CLIENT_ID = str(uuid.uuid4())
SUBSCRIPTION_ID = str(uuid.uuid4())
MASK = "********"

pytestmark = pytest.mark.skipif(not SPEC_PATH.exists(), reason=f"Palette spec not found at {SPEC_PATH}")


@pytest.fixture(scope="module")
def palette() -> Iterator[RunningServer]:
    # A validator that refuses everything: a location's create and PUT must not consult it.
    app = create_app(spec_path=SPEC_PATH, api_key=ADMIN_KEY, credential_validator=lambda *_: "refused",
                     rate_per_second=0)
    server = RunningServer(app)
    yield server
    server.stop()


@pytest.fixture
def client(palette: RunningServer, admin: requests.Session) -> Iterator[PaletteClient]:
    retry = RetryPolicy(initial_delay=0.01, max_delay=0.1, budget_seconds=30)
    with PaletteClient(palette.url, SecretStr(ADMIN_KEY), retry=retry, timeout=10) as c:
        yield c


@pytest.fixture
def console(palette: RunningServer, admin: requests.Session) -> Iterator[requests.Session]:
    """Palette's public API with the admin key, as the console (or Terraform) would call it."""
    session = requests.Session()
    session.headers["ApiKey"] = ADMIN_KEY
    yield session
    session.close()


def creds(secret: str = NEW_SECRET, **overrides: Any) -> AzureCredentials:
    values: dict[str, Any] = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "client_secret": SecretStr(secret)}
    values.update(overrides)
    return AzureCredentials(**values)


def location_body(name: str, *, secret: str = OLD_SECRET, annotations: dict[str, str] | None = None,
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What Terraform's ``spectrocloud_backup_storage_location`` sends for an Azure location."""
    metadata: dict[str, Any] = {"name": name}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata, "spec": {
        "config": {"containerName": "velero", "storageName": "contosobackups", "resourceGroup": "backups-rg",
                   "sku": "Standard_LRS",
                   "credentials": {"tenantId": TENANT_ID, "clientId": CLIENT_ID, "clientSecret": secret,
                                   "subscriptionId": SUBSCRIPTION_ID, "clientCloud": "public"}},
        "isDefault": True, "type": "azure"}}


def create_location(console: requests.Session, palette: RunningServer, body: dict[str, Any],
                    project_uid: str | None = None) -> str:
    headers = {"ProjectUid": project_uid} if project_uid else {}
    response = console.post(f"{palette.url}/v1/users/assets/locations/azure", json=body, headers=headers, timeout=5)
    assert response.status_code == 201, response.text
    uid: str = response.json()["uid"]
    return uid


def seed_location(admin: requests.Session, palette: RunningServer, **fields: Any) -> str:
    response = admin.post(f"{palette.url}/_devstack/locations/azure", json=fields, timeout=5)
    assert response.status_code == 201, response.text
    uid: str = response.json()["uid"]
    return uid


def stored(admin: requests.Session, palette: RunningServer) -> dict[str, dict[str, Any]]:
    """The stand-in's locations by uid (secrets masked, with their SHA-256)."""
    state = admin.get(f"{palette.url}/_devstack/state", timeout=5)
    state.raise_for_status()
    return {loc["uid"]: loc for loc in state.json()["backupLocations"]}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def project_uid(client: PaletteClient, name: str = "Default") -> str:
    project = client.get_project(name)
    assert project is not None
    return project.uid


def recorded(admin: requests.Session, palette: RunningServer) -> list[dict[str, Any]]:
    response = admin.get(f"{palette.url}/_devstack/requests", timeout=5)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- reading ----------------------------------------------------------------------------------------


def test_list_and_get_read_every_field_but_the_secret(client: PaletteClient, console: requests.Session,
                                                      palette: RunningServer) -> None:
    project = project_uid(client)
    uid = create_location(console, palette, location_body(
        "contoso-backups", annotations={"onboarding.example/id": "ob-1"}, labels={"team": "platform"}),
        project_uid=project)

    location = client.get_azure_backup_location(uid, project_uid=project)
    assert location == AzureBackupLocation(
        uid=uid, name="contoso-backups", scope="project", tenant_id=TENANT_ID, client_id=CLIENT_ID,
        subscription_id=SUBSCRIPTION_ID, client_cloud="public", resource_group="backups-rg",
        storage_name="contosobackups", container_name="velero", sku="Standard_LRS", is_default=True,
        location_type="azure")
    assert dict(location.annotations) == {"onboarding.example/id": "ob-1", "scope": "project",
                                          "projectUid": project}
    assert dict(location.labels) == {"team": "platform"}
    assert OLD_SECRET not in repr(location) and not hasattr(location, "client_secret")
    assert client.list_azure_backup_locations(project_uid=project) == [location]

    # On the wire Palette answers the secret masked, and the location's body has no uid.
    raw = console.get(f"{palette.url}/v1/users/assets/locations/azure/{uid}", headers={"ProjectUid": project},
                      timeout=5).json()
    assert raw["spec"]["config"]["credentials"]["clientSecret"] == MASK
    assert "uid" not in raw["metadata"]


def test_scopes_are_separate(client: PaletteClient, admin: requests.Session, palette: RunningServer) -> None:
    project = project_uid(client)
    in_tenant = seed_location(admin, palette, name="tenant-backups", tenantId=TENANT_ID, clientId=CLIENT_ID,
                              clientSecret=OLD_SECRET)
    in_project = seed_location(admin, palette, name="project-backups", tenantId=TENANT_ID, clientId=CLIENT_ID,
                               clientSecret=OLD_SECRET, projectUid=project)

    assert [loc.uid for loc in client.list_azure_backup_locations(project_uid=None)] == [in_tenant]
    assert [loc.uid for loc in client.list_azure_backup_locations(project_uid=project)] == [in_project]
    assert client.list_azure_backup_locations(project_uid=project_uid(client, "Team-A")) == []
    with pytest.raises(ResourceNotFoundError):
        client.get_azure_backup_location(in_tenant, project_uid=project)
    assert client.get_azure_backup_location(in_tenant, project_uid=None).scope == "tenant"


def test_another_teams_location_with_the_same_client_is_listed_as_it_is(
        client: PaletteClient, admin: requests.Session, palette: RunningServer) -> None:
    ours = seed_location(admin, palette, name="ours", tenantId=TENANT_ID, clientId=CLIENT_ID, clientSecret=OLD_SECRET,
                         annotations={"onboarding.example/id": "ob-1"})
    theirs = seed_location(admin, palette, name="team-b-velero", tenantId=TENANT_ID, clientId=CLIENT_ID,
                           clientSecret=OTHER_TEAM_SECRET, subscriptionId=SUBSCRIPTION_ID, sku="Premium_LRS")
    by_uid = {loc.uid: loc for loc in client.list_azure_backup_locations(project_uid=None)}
    assert set(by_uid) == {ours, theirs}
    assert by_uid[theirs].client_id == by_uid[ours].client_id == CLIENT_ID
    assert dict(by_uid[theirs].annotations) == {"scope": "tenant"}  # nothing of the product's
    assert by_uid[theirs].sku == "Premium_LRS" and by_uid[ours].sku is None
    assert stored(admin, palette)[theirs]["clientSecretSha256"] == sha256(OTHER_TEAM_SECRET)


def test_list_is_empty_not_none(client: PaletteClient) -> None:
    assert client.list_azure_backup_locations(project_uid=None) == []


def test_a_location_deleted_in_palette_is_gone(client: PaletteClient, console: requests.Session,
                                               palette: RunningServer) -> None:
    uid = create_location(console, palette, location_body("short-lived"))
    assert console.delete(f"{palette.url}/v1/users/assets/locations/{uid}", timeout=5).status_code == 204
    with pytest.raises(ResourceNotFoundError):
        client.get_azure_backup_location(uid, project_uid=None)
    assert client.list_azure_backup_locations(project_uid=None) == []


# -- re-credentialing -------------------------------------------------------------------------------


def test_update_replaces_only_the_credentials(client: PaletteClient, console: requests.Session,
                                              admin: requests.Session, palette: RunningServer) -> None:
    project = project_uid(client)
    uid = create_location(console, palette, location_body(
        "contoso-backups", annotations={"onboarding.example/id": "ob-1"}, labels={"team": "platform"}),
        project_uid=project)
    other = seed_location(admin, palette, name="team-b", tenantId=TENANT_ID, clientId=CLIENT_ID,
                          clientSecret=OTHER_TEAM_SECRET, projectUid=project)
    before = stored(admin, palette)
    assert before[uid]["clientSecretSha256"] == sha256(OLD_SECRET)

    location = client.get_azure_backup_location(uid, project_uid=project)
    client.update_azure_backup_location(uid, location, creds(NEW_SECRET), project_uid=project)

    after = stored(admin, palette)
    assert after[uid]["clientSecretSha256"] == sha256(NEW_SECRET)
    assert {**after[uid], "clientSecretSha256": None} == {**before[uid], "clientSecretSha256": None}
    assert after[other] == before[other]
    reread = client.get_azure_backup_location(uid, project_uid=project)
    assert reread == location
    assert (reread.annotations, reread.labels) == (location.annotations, location.labels)

    put = next(r for r in recorded(admin, palette) if r["method"] == "PUT")
    assert put["path"] == f"/v1/users/assets/locations/azure/{uid}" and put["status"] == 204
    assert put["headers"]["projectuid"] == project
    assert "uid" not in put["body"]["metadata"]  # the spec's v1ObjectMetaInputEntity has none
    assert put["body"]["spec"]["config"]["credentials"]["clientSecret"] == MASK  # the record hides it


def test_update_can_move_the_location_to_another_principal(client: PaletteClient, admin: requests.Session,
                                                           palette: RunningServer) -> None:
    uid = seed_location(admin, palette, name="loc", tenantId=TENANT_ID, clientId=CLIENT_ID, clientSecret=OLD_SECRET)
    location = client.get_azure_backup_location(uid, project_uid=None)
    new_client = str(uuid.uuid4())
    client.update_azure_backup_location(uid, location, creds(client_id=new_client), project_uid=None)
    assert client.get_azure_backup_location(uid, project_uid=None).client_id == new_client
    assert stored(admin, palette)[uid]["clientSecretSha256"] == sha256(NEW_SECRET)


def test_update_refuses_a_location_of_another_uid_or_scope_without_a_call(
        client: PaletteClient, admin: requests.Session, palette: RunningServer) -> None:
    uid = seed_location(admin, palette, name="loc", tenantId=TENANT_ID, clientId=CLIENT_ID, clientSecret=OLD_SECRET)
    location = client.get_azure_backup_location(uid, project_uid=None)
    calls = len(recorded(admin, palette))
    with pytest.raises(ValueError, match="not"):
        client.update_azure_backup_location("0" * 24, location, creds(), project_uid=None)
    with pytest.raises(ValueError, match="tenant scope"):
        client.update_azure_backup_location(uid, location, creds(), project_uid=project_uid(client))
    assert [r["path"] for r in recorded(admin, palette)[calls:]] == ["/v1/dashboard/projects/metadata"]
    assert stored(admin, palette)[uid]["clientSecretSha256"] == sha256(OLD_SECRET)


def test_update_of_a_deleted_location_is_not_found(client: PaletteClient, admin: requests.Session,
                                                   palette: RunningServer, console: requests.Session) -> None:
    uid = seed_location(admin, palette, name="loc", tenantId=TENANT_ID, clientId=CLIENT_ID, clientSecret=OLD_SECRET)
    location = client.get_azure_backup_location(uid, project_uid=None)
    console.delete(f"{palette.url}/v1/users/assets/locations/{uid}", timeout=5).raise_for_status()
    with pytest.raises(ResourceNotFoundError):
        client.update_azure_backup_location(uid, location, creds(), project_uid=None)


def test_no_secret_in_errors_or_logs(client: PaletteClient, admin: requests.Session, palette: RunningServer,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    uid = seed_location(admin, palette, name="loc", tenantId=TENANT_ID, clientId=CLIENT_ID, clientSecret=OLD_SECRET)
    location = client.get_azure_backup_location(uid, project_uid=None)
    # A service that echoes the secret back in its error message.
    admin.post(f"{palette.url}/_devstack/faults", timeout=5, json={
        "path": "^/v1/users/assets/locations/azure/", "method": "PUT", "status": 400, "times": 1,
        "body": {"code": "InvalidCredentials", "message": f"secret {NEW_SECRET} rejected", "details": {},
                 "ref": "r"}}).raise_for_status()
    with pytest.raises(HttpResponseError) as caught:
        client.update_azure_backup_location(uid, location, creds(NEW_SECRET), project_uid=None)
    assert caught.value.status_code == 400
    for secret in (NEW_SECRET, OLD_SECRET, ADMIN_KEY):
        assert secret not in str(caught.value) and secret not in repr(caught.value)
        assert secret not in caplog.text
        assert secret not in repr(location)
    assert stored(admin, palette)[uid]["clientSecretSha256"] == sha256(OLD_SECRET)


# -- what the spec refuses --------------------------------------------------------------------------


def test_bodies_the_spec_refuses_are_refused(console: requests.Session, admin: requests.Session,
                                             palette: RunningServer) -> None:
    base = f"{palette.url}/v1/users/assets/locations/azure"
    missing = location_body("no-storage")
    del missing["spec"]["config"]["storageName"]
    unknown = location_body("typo")
    unknown["spec"]["config"]["credentials"]["clientSecrets"] = "x"
    bad_cloud = location_body("moon")
    bad_cloud["spec"]["config"]["credentials"]["clientCloud"] = "AzurePublicCloud"  # an account's enum, not this
    for body, path in ((missing, "spec.config.storageName"), (unknown, "spec.config.credentials.clientSecrets"),
                       (bad_cloud, "spec.config.credentials.clientCloud")):
        response = console.post(base, json=body, timeout=5)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "InvalidRequest"
        assert path in {v["path"] for v in response.json()["details"]["violations"]}

    uid = create_location(console, palette, location_body("loc"))
    with_uid = location_body("loc")
    with_uid["metadata"]["uid"] = uid  # what a PUT of a cloud account needs, and this schema lacks
    response = console.put(f"{base}/{uid}", json=with_uid, timeout=5)
    assert response.status_code == 400 and response.json()["details"]["violations"][0]["path"] == "metadata.uid"
    assert stored(admin, palette)[uid]["clientSecretSha256"] == sha256(OLD_SECRET)
