"""The one public name the local stack answers for: Entra's instance discovery host.

MSAL (inside azure-identity) trusts an authority it does not know only after asking
``https://login.microsoftonline.com/common/discovery/instance`` about it, unless the credential is
built with ``disable_instance_discovery=True``. The stack's authority, ``https://127.0.0.1:<port>``,
is such an authority, so ``ClientSecretCredential(tenant, client, secret, authority=...)`` with its
default settings would call out to the internet, which these machines cannot reach.

This module is an HTTP proxy (``HTTPS_PROXY``, with ``NO_PROXY`` for the loopback stand-ins) that
accepts exactly one tunnel, ``CONNECT login.microsoftonline.com:443``, terminates TLS there with a
certificate from the stack's own CA (trusted through ``REQUESTS_CA_BUNDLE`` like every other
stand-in) and answers ``GET /common/discovery/instance`` as Entra does for a cloud it knows, for
the stack's authority only: MSAL sends ``authorization_endpoint=https://<host>/<tenant>/oauth2/
v2.0/authorize`` (host without its port) and gets back the authority's own metadata URL, with the
port. Any other authority is ``invalid_instance`` (AADSTS50049), as Entra answers for a made-up
one. Every other tunnel is passed through untouched, so the child processes that inherit the
variables (npm installing Azurite, scripts) see no difference; a request that is not a tunnel is
refused with 403.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import socketserver
import ssl
import threading
from typing import TYPE_CHECKING, BinaryIO, Final
from urllib.parse import parse_qs, urlsplit

from devstack.httpbase import HttpError, Request, Response
from devstack.identity.errors import EntraError

if TYPE_CHECKING:
    from io import BufferedIOBase

    from devstack.identity.routes import IdentityApp

logger = logging.getLogger(__name__)

DISCOVERY_HOST: Final = "login.microsoftonline.com"
_TUNNEL_TARGET: Final = f"{DISCOVERY_HOST}:443"
_MAX_HEAD_BYTES: Final = 16 * 1024
_DISCOVERY_PATH: Final = "/common/discovery/instance"
_AUTHORIZE_ENDPOINT = re.compile(r"https://(?P<host>[A-Za-z0-9.\-]{1,253})/(?P<tenant>[A-Za-z0-9_.\-]{1,128})"
                                 r"/oauth2/(?:v2\.0/)?authorize")
# The public cloud's instance aliases, as Entra's discovery lists them.
_PUBLIC_CLOUD_ALIASES: Final = frozenset({DISCOVERY_HOST, "login.windows.net", "login.microsoft.com",
                                          "sts.windows.net"})


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: _ProxyServer
    timeout = 30

    def handle(self) -> None:
        try:
            head = self._head(self.rfile)
        except (OSError, ValueError):
            return
        if not head:
            return
        method, _, rest = head[0].partition(" ")
        target = rest.rpartition(" ")[0]
        if method.upper() != "CONNECT":
            self._plain(403, f"This proxy only opens tunnels (CONNECT), not {method} {target}.")
            return
        if target.lower() != _TUNNEL_TARGET:
            self._pass_through(target)
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        try:
            tunnel = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            logger.debug("discovery proxy: TLS handshake failed", exc_info=True)
            return
        try:
            self._serve_tunnel(tunnel)
        except (ssl.SSLError, OSError):
            logger.debug("discovery proxy: tunnel closed early", exc_info=True)
        except Exception:
            logger.exception("discovery proxy: failed inside the tunnel")
        finally:
            try:
                tunnel.close()
            except OSError:
                logger.debug("discovery proxy: close failed", exc_info=True)

    @staticmethod
    def _head(stream: BufferedIOBase | BinaryIO) -> list[str]:
        """The request line and header lines, decoded; ``[]`` when the peer sent nothing."""
        lines: list[str] = []
        size = 0
        while True:
            line = stream.readline(_MAX_HEAD_BYTES + 1)
            size += len(line)
            if size > _MAX_HEAD_BYTES:
                raise ValueError("request head too large")
            if not line:
                return lines
            if line in (b"\r\n", b"\n"):
                return lines
            lines.append(line.decode("latin-1").rstrip("\r\n"))

    def _pass_through(self, target: str) -> None:
        """Any other tunnel goes where it would have gone without this proxy, untouched.

        The variables are inherited by child processes (npm, pip, scripts), which must see no
        difference.
        """
        host, _, port_text = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port_text)), timeout=30)
        except (OSError, ValueError) as exc:
            self._plain(502, f"Could not reach {target}: {exc}")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        sockets = [self.connection, upstream]
        try:
            with selectors.DefaultSelector() as selector:
                for sock in sockets:
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ)
                while True:
                    events = selector.select(timeout=300)
                    if not events:
                        return  # idle for five minutes: close
                    for key, _ in events:
                        source = upstream if key.fileobj is upstream else self.connection
                        sink = self.connection if source is upstream else upstream
                        data = source.recv(65536)
                        if not data:
                            return
                        sink.setblocking(True)
                        sink.sendall(data)
                        sink.setblocking(False)
        except OSError:
            logger.debug("discovery proxy: pass-through to %s ended", target, exc_info=True)
        finally:
            upstream.close()

    def _plain(self, status: int, text: str) -> None:
        body = text.encode()
        reason = {403: "Forbidden", 404: "Not Found", 400: "Bad Request", 502: "Bad Gateway"}.get(status, "Error")
        self.wfile.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        self.wfile.flush()

    def _serve_tunnel(self, tunnel: ssl.SSLSocket) -> None:
        """One request inside the tunnel, answered by the identity app, then the tunnel closes."""
        reader = tunnel.makefile("rb")
        try:
            head = self._head(reader)
        finally:
            reader.close()
        if not head:
            return
        parts = head[0].split(" ")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        app = self.server.app
        if len(parts) != 3:
            response = app.error_response(HttpError(400, "BadRequest", "Malformed request line."))
        else:
            split = urlsplit(parts[1])
            request = Request(parts[0].upper(), split.path or "/",
                              parse_qs(split.query, keep_blank_values=True), headers, b"")
            response = self._answer(request)
        status_line = f"HTTP/1.1 {response.status} {'OK' if response.status < 400 else 'Error'}\r\n"
        head_out = "".join(f"{name}: {value}\r\n" for name, value in response.headers.items())
        tunnel.sendall((status_line + head_out + f"Content-Length: {len(response.body)}\r\n"
                        "Connection: close\r\n\r\n").encode("latin-1") + response.body)

    def _answer(self, request: Request) -> Response:
        app = self.server.app
        try:
            if request.method != "GET" or request.path != _DISCOVERY_PATH:
                raise HttpError(404, "NotFound", f"The local stack answers only GET {_DISCOVERY_PATH} on "
                                                 f"{DISCOVERY_HOST}.")
            return self._discovery(request)
        except HttpError as error:
            return app.error_response(error)

    def _discovery(self, request: Request) -> Response:
        """Entra's answer for a known cloud; the stack's authority is one, beside the public cloud.

        MSAL asks twice: about the authority it was given (``https://<host>/<tenant>/oauth2/v2.0/
        authorize``, the host without its port), and, after a failed token request, about the
        public cloud (``https://login.microsoftonline.com/common/oauth2/authorize``) to look for
        aliases of the authority. Both get the metadata of both clouds.
        """
        authority = urlsplit(self.server.authority)
        local_host = (authority.hostname or "").lower()
        endpoint = request.query_value("authorization_endpoint") or ""
        match = _AUTHORIZE_ENDPOINT.fullmatch(endpoint)
        host = match.group("host").lower() if match is not None else ""
        if match is None or (host != local_host and host not in _PUBLIC_CLOUD_ALIASES):
            raise EntraError(400, "invalid_instance", 50049, "Unknown or invalid instance.",
                             base_url=f"https://{DISCOVERY_HOST}",
                             correlation_id=request.header("client-request-id"))
        base = self.server.authority.rstrip("/") if host == local_host else f"https://{DISCOVERY_HOST}"
        return Response.json(200, {
            "tenant_discovery_endpoint": f"{base}/{match.group('tenant')}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [
                {"preferred_network": DISCOVERY_HOST, "preferred_cache": "login.windows.net",
                 "aliases": sorted(_PUBLIC_CLOUD_ALIASES)},
                {"preferred_network": authority.netloc, "preferred_cache": authority.netloc,
                 "aliases": [authority.netloc]},
            ],
        })


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: IdentityApp, tls: ssl.SSLContext, authority: str) -> None:
        super().__init__(address, _ProxyHandler)
        self.app = app
        self.tls = tls
        self.authority = authority


class DiscoveryProxy:
    """The proxy on a loopback port; ``url`` goes into ``HTTPS_PROXY``.

    ``authority`` is the identity stand-in's HTTPS address (``AZURE_AUTHORITY_HOST``); ``app`` renders
    errors in Entra's format; ``tls`` serves the discovery host's certificate.
    """

    def __init__(self, app: IdentityApp, tls: ssl.SSLContext, *, authority: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._server = _ProxyServer((host, port), app, tls, authority)
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="devstack-discovery-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def proxy_settings(proxy: DiscoveryProxy) -> dict[str, str]:
    """The environment that sends only the discovery host through the proxy."""
    return {"HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1,localhost,::1"}


__all__ = ["DISCOVERY_HOST", "DiscoveryProxy", "proxy_settings"]
