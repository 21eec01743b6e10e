"""The Table proxy: the real ``azure-data-tables`` client works through it unchanged (the shared-key
signature covers the path, not the host), and its faults reach the client as Azure's would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ServiceRequestError, ServiceResponseError
from azure.data.tables import TableClient, UpdateMode

from devstack.httpbase import Fault, RunningServer
from devstack.stack import Stack
from devstack.tableproxy import connection_string, start_table_proxy

STALE_ETAG = 'W/"datetime\'2000-01-01T00%3A00%3A00Z\'"'


@pytest.fixture
def proxy(stack: Stack) -> Iterator[RunningServer]:
    endpoint = next(part.split("=", 1)[1] for part in stack.settings["AzureWebJobsStorage"].split(";")
                    if part.startswith("TableEndpoint="))
    running = start_table_proxy(endpoint)
    yield running
    running.stop()


@pytest.fixture
def table(proxy: RunningServer) -> Iterator[TableClient]:
    client = TableClient.from_connection_string(connection_string(proxy), table_name=f"proxy{uuid.uuid4().hex[:8]}",
                                                retry_total=0)
    client.create_table()
    yield client
    client.delete_table()
    client.close()


def test_entities_go_through_unchanged(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "Value": "a b/c?d'e"})
    entity = table.get_entity("p", "r")
    assert entity["Value"] == "a b/c?d'e"
    assert [e["RowKey"] for e in table.query_entities("Value eq @v", parameters={"v": "a b/c?d'e"})] == ["r"]
    with pytest.raises(ResourceModifiedError):
        table.update_entity({"PartitionKey": "p", "RowKey": "r", "Value": "x"}, mode=UpdateMode.REPLACE,
                            etag=STALE_ETAG, match_condition=MatchConditions.IfNotModified)
    table.update_entity({"PartitionKey": "p", "RowKey": "r", "Value": "x"}, mode=UpdateMode.REPLACE,
                        etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    assert table.get_entity("p", "r")["Value"] == "x"


def test_a_fault_reaches_the_client_as_the_service_would_send_it(proxy: RunningServer, table: TableClient) -> None:
    proxy.add_fault(Fault(method="PUT", path_regex=".", status=503, times=1))
    with pytest.raises(HttpResponseError) as raised:
        table.upsert_entity({"PartitionKey": "p", "RowKey": "busy"}, mode=UpdateMode.REPLACE)
    assert raised.value.status_code == 503
    table.upsert_entity({"PartitionKey": "p", "RowKey": "busy"}, mode=UpdateMode.REPLACE)  # once only
    proxy.add_fault(Fault(method="GET", path_regex=".", drop=True, times=1))
    with pytest.raises((ServiceRequestError, ServiceResponseError)):  # a kept-alive connection: the answer is lost
        table.get_entity("p", "busy")
