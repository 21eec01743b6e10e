"""A loopback proxy in front of Azurite's Table service, with the stand-ins' fault injection.

Azurite is the real emulator and has no faults to inject; putting this proxy between an app and
Azurite gives Table Storage what the other stand-ins have: a status, latency or a dropped
connection on matching requests (``/_devstack/faults``), so a test can make one delivery's writes
fail (its heartbeat, its fences) while another delivery reaches the table directly. Requests pass
through unchanged: the SDK's shared-key signature covers the path, not the host, so the same
account key works through either address.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from devstack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from devstack.httpbase import HttpError, Request, Response, RunningServer, ServiceApp

#: Hop-by-hop headers a proxy does not pass on (RFC 9110, 7.6.1), and those http.client sets.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host",
        "content-length", "date", "server"}


class TableProxy(ServiceApp):
    name = "tables"

    def __init__(self, upstream: str) -> None:
        super().__init__()
        split = urlsplit(upstream)
        self._host, self._port = split.hostname or "127.0.0.1", split.port or 80

    def error_response(self, error: HttpError) -> Response:
        """The Table service's own error body (JSON, ``odata.error``)."""
        return Response.json(error.status, {"odata.error": {"code": error.code, "message": {
            "lang": "en-US", "value": error.message}}}, error.headers)

    def before_request(self, request: Request) -> Response | None:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            headers = {name: value for name, value in request.headers.items() if name not in _HOP}
            connection.request(request.method, request.target, body=request.body or None, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            passed = {name: value for name, value in answer.getheaders() if name.lower() not in _HOP}
            return Response(answer.status, body, passed)
        finally:
            connection.close()


def start_table_proxy(table_endpoint: str) -> RunningServer:
    """A proxy in front of ``table_endpoint`` (``http://127.0.0.1:PORT/devstoreaccount1``)."""
    split = urlsplit(table_endpoint)
    return RunningServer(TableProxy(f"{split.scheme}://{split.netloc}"))


def connection_string(proxy: RunningServer) -> str:
    """A storage connection string whose Table endpoint is the proxy."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={proxy.url}/{ACCOUNT_NAME};")

