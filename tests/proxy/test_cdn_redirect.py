"""Blobs an upstream serves by redirecting to a CDN on another host, as Docker Hub does
(307 to a signed URL): dockyard follows the redirect, verifies and stores the bytes,
and never sends the upstream's token to the other host."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3

from tests.proxy.conftest import proxy_dockyard
from tests.support.processes import free_port
from tests.support.registry_client import RegistryClient
from tests.support.upstream import Pusher, TokenServer, UpstreamRegistry

CDN_HOST = "127.0.0.2"  # another host than the upstream's 127.0.0.1, still loopback


class _Server:
    def __init__(self, host: str, handler: type[BaseHTTPRequestHandler]) -> None:
        self.url = f"http://{host}:{free_port()}"
        host, port = self.url[7:].split(":")
        self._server = ThreadingHTTPServer((host, int(port)), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Hub:
    """A registry front that answers blob GETs with 307 to `cdn`, and a CDN that serves
    the bytes from the upstream; the CDN records the Authorization headers it got."""

    def __init__(self, upstream: str, cdn_token: str) -> None:
        http = urllib3.PoolManager(retries=False, timeout=30)
        self.redirected = 0
        self.cdn_authorizations: list[str | None] = []
        hub = self

        class Cdn(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub.cdn_authorizations.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0].removeprefix("/cdn")
                r = http.request("GET", upstream + path,
                                 headers={"Authorization": f"Bearer {cdn_token}"})
                self.send_response(r.status)
                self.send_header("Content-Length", str(len(r.data)))
                self.end_headers()
                self.wfile.write(r.data)

        class Front(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                if self.command == "GET" and "/blobs/sha256:" in self.path:
                    hub.redirected += 1
                    self.send_response(307)
                    self.send_header("Location", f"{hub.cdn.url}/cdn{self.path}?sig=x")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length")}
                r = http.request(self.command, upstream + self.path, headers=headers,
                                 redirect=False)
                self.send_response(r.status)
                for k, v in r.headers.items():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.data)

            do_GET = do_HEAD = _any

        self.cdn = _Server(CDN_HOST, Cdn)
        self.front = _Server("127.0.0.1", Front)

    def stop(self) -> None:
        self.front.stop()
        self.cdn.stop()


@pytest.fixture
def token_upstream(tmp_path: Any) -> Iterator[tuple[UpstreamRegistry, TokenServer]]:
    tokens = TokenServer(tmp_path / "tokens").start()
    upstream = UpstreamRegistry(tmp_path / "upstream", tokens=tokens).start()
    yield upstream, tokens
    upstream.stop()
    tokens.stop()


def test_blobs_redirected_to_a_cdn_are_fetched_verified_and_stored(
        tmp_path: Any, token_upstream: tuple[UpstreamRegistry, TokenServer]) -> None:
    upstream, tokens = token_upstream
    name = f"team/app-{uuid.uuid4().hex[:8]}"
    scope = f"repository:{name}:pull,push"
    image = Pusher(upstream.url, tokens.token("admin", scope)).image(
        name, "v1", layers=[b"l" * 70_000])
    hub = Hub(upstream.url, tokens.token("cdn", scope))
    server = proxy_dockyard(tmp_path / "dy", [{"prefix": "hub", "url": hub.front.url}]).start()
    try:
        client = RegistryClient(server.url)
        assert client.get_manifest(f"hub/{name}", "v1").status == 200
        for digest, data in image["blobs"].items():
            for _ in range(2):
                r = client.request("GET", f"/v2/hub/{name}/blobs/{digest}")
                assert r.status == 200 and r.data == data, (r.status, r.data[:200])
        # Fetched once through the CDN, then served from the cache.
        assert hub.redirected == len(image["blobs"])
        assert r.headers["Cache-Status"] == "dockyard; hit"
        # The upstream needed a token; the CDN never saw it.
        assert hub.cdn_authorizations == [None] * len(image["blobs"])
    finally:
        server.stop()
        hub.stop()
