"""An upstream that is down, slow, rate-limiting, or needs a token."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from tests.proxy.conftest import proxy_dockyard
from tests.support.processes import free_port
from tests.support.registry_client import RegistryClient, error_code
from tests.support.upstream import Front, Pusher, TokenServer, UpstreamRegistry

STALE = "dockyard; hit; detail=upstream-unavailable"


def _name() -> str:
    return f"team/app-{uuid.uuid4().hex[:8]}"


def test_upstream_stopped_the_cached_copy_is_served_and_said_so(
        tmp_path, backend: dict[str, str]) -> None:
    upstream = UpstreamRegistry(tmp_path / "upstream").start()
    server = proxy_dockyard(tmp_path / "dy", [{"prefix": "up", "url": upstream.url,
                                               "tag_ttl": 0}], timeout=2,
                            env=backend).start()
    try:
        client = RegistryClient(server.url)
        name = _name()
        image = Pusher(upstream.url).image(name, "v1")
        uncached = _name()
        Pusher(upstream.url).image(uncached, "v1")
        assert client.get_manifest(f"up/{name}", "v1").status == 200
        for digest in image["blobs"]:
            assert client.request("GET", f"/v2/up/{name}/blobs/{digest}").status == 200
        upstream.stop()

        r = client.get_manifest(f"up/{name}", "v1")
        assert r.status == 200 and r.data == image["manifest"]
        assert r.headers["Cache-Status"] == STALE
        for digest, data in image["blobs"].items():
            r = client.request("GET", f"/v2/up/{name}/blobs/{digest}")
            assert r.status == 200 and r.data == data
        assert "serving the cached" in server.log_text()

        # Never cached: a clear 503, at once (the connection is refused).
        started = time.monotonic()
        status, headers, body = client.json("GET", f"/v2/up/{uncached}/manifests/v1")
        assert status == 503 and error_code(body) == "UNAVAILABLE"
        assert "Retry-After" in headers
        assert "not cached" in body["errors"][0]["message"]
        assert time.monotonic() - started < 2
    finally:
        server.stop()
        upstream.stop()


def test_an_upstream_that_never_answers_fails_within_the_timeout(tmp_path) -> None:
    # A socket that listens but never accepts: connections succeed, answers never come.
    silent = socket.socket()
    silent.bind(("127.0.0.1", free_port()))
    silent.listen(64)
    port = silent.getsockname()[1]
    server = proxy_dockyard(tmp_path / "dy", [{"prefix": "up",
                                               "url": f"http://127.0.0.1:{port}"}],
                            timeout=1).start()
    try:
        client = RegistryClient(server.url, timeout=30)
        for path in (f"/v2/up/{_name()}/manifests/v1",
                     f"/v2/up/{_name()}/blobs/sha256:{'a' * 64}"):
            started = time.monotonic()
            status, _, body = client.json("GET", path)
            elapsed = time.monotonic() - started
            assert status == 503 and error_code(body) == "UNAVAILABLE", body
            assert elapsed < 5, elapsed
    finally:
        server.stop()
        silent.close()


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limited_or_failing_upstream_serves_the_cached_copy(tmp_path, status) -> None:
    upstream = UpstreamRegistry(tmp_path / "upstream").start()
    front = Front(upstream.url).start()
    server = proxy_dockyard(tmp_path / "dy", [{"prefix": "up", "url": front.url,
                                               "tag_ttl": 0}]).start()
    try:
        client = RegistryClient(server.url)
        name = _name()
        image = Pusher(upstream.url).image(name, "v1")
        assert client.get_manifest(f"up/{name}", "v1").status == 200
        front.fail_status = status
        r = client.get_manifest(f"up/{name}", "v1")
        assert r.status == 200 and r.data == image["manifest"]
        assert r.headers["Cache-Status"] == STALE
        front.fail_status = 0
        r = client.get_manifest(f"up/{name}", "v1")
        assert r.status == 200 and r.headers["Cache-Status"] != STALE
    finally:
        server.stop()
        front.stop()
        upstream.stop()


def test_token_authenticated_upstream_with_credentials(tmp_path) -> None:
    tokens = TokenServer(tmp_path / "tokens", users={"puller": "s3cret"}).start()
    upstream = UpstreamRegistry(tmp_path / "upstream", tokens=tokens).start()
    name = _name()
    push_token = tokens.token("admin", f"repository:{name}:pull,push")
    image = Pusher(upstream.url, push_token).image(name, "v1", layers=[b"x" * 5000,
                                                                        b"y" * 7000])
    server = proxy_dockyard(tmp_path / "dy", [
        {"prefix": "auth", "url": upstream.url, "username": "_env:UP_USER",
         "password": "_env:UP_PASSWORD", "tag_ttl": 0},
        {"prefix": "anon", "url": upstream.url},
    ])
    server.env = {"UP_USER": "puller", "UP_PASSWORD": "s3cret"}
    server.start()
    try:
        client = RegistryClient(server.url)
        for _ in range(3):
            r = client.get_manifest(f"auth/{name}", "v1")
            assert r.status == 200 and r.data == image["manifest"]
        for digest, data in image["blobs"].items():
            r = client.request("GET", f"/v2/auth/{name}/blobs/{digest}")
            assert r.status == 200 and r.data == data
        # One token for the repository's pull scope, reused until it expires.
        assert tokens.issued == 1
        # Anonymous: the upstream refuses, and so the manifest is unknown here.
        status, _, body = client.json("GET", f"/v2/anon/{name}/manifests/v1")
        assert status == 404 and error_code(body) == "MANIFEST_UNKNOWN"
    finally:
        server.stop()
        upstream.stop()
        tokens.stop()


def test_refused_credentials_do_not_take_cached_images_away(tmp_path) -> None:
    # Tokens that live 1 s: dockyard asks for a new one for every request.
    tokens = TokenServer(tmp_path / "tokens", users={"puller": "s3cret"}).start()
    upstream = UpstreamRegistry(tmp_path / "upstream", tokens=tokens).start()
    name = _name()
    image = Pusher(upstream.url, tokens.token("admin", f"repository:{name}:pull,push")).image(
        name, "v1")
    tokens.lifetime = 1
    server = proxy_dockyard(tmp_path / "dy", [
        {"prefix": "auth", "url": upstream.url, "username": "puller", "password": "s3cret",
         "tag_ttl": 0}]).start()
    try:
        client = RegistryClient(server.url)
        assert client.get_manifest(f"auth/{name}", "v1").status == 200
        issued = tokens.issued
        tokens.users["puller"] = "rotated"  # the configured password no longer works
        r = client.get_manifest(f"auth/{name}", "v1")
        assert r.status == 200 and r.data == image["manifest"]
        assert r.headers["Cache-Status"] == STALE
        assert tokens.issued == issued  # the token endpoint refused: nothing issued
        # Never cached: the upstream's refusal is a 404 here.
        status, _, body = client.json("GET", f"/v2/auth/{_name()}/manifests/v1")
        assert status == 404 and error_code(body) == "MANIFEST_UNKNOWN"
    finally:
        server.stop()
        upstream.stop()
        tokens.stop()
