"""The router's own endpoints, what it must not expose, request ids, and the health and
metrics endpoints of every service."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.helpers import direct, router_metrics_url, service_url, wait_until
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, error_code
from tests.support.seaweedfs import bucket_of

API_VERSION = "registry/2.0"


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
def test_version_check(client: RegistryClient, path: str) -> None:
    for method in ("GET", "HEAD"):
        r = client.request(method, path)
        assert r.status == 200
        assert r.headers["Docker-Distribution-API-Version"] == API_VERSION
        if method == "GET":
            assert json.loads(r.data) == {}
            assert r.headers["Content-Type"].startswith("application/json")


def test_legacy_ping(client: RegistryClient) -> None:
    r = client.request("GET", "/v1/_ping")
    assert r.status == 200
    assert r.headers["X-Docker-Registry-Standalone"] == "true"


def test_proxied_answers_carry_the_api_version(client: RegistryClient, repo: str) -> None:
    digest, _ = client.random_blob(repo, 10)
    for path in (f"/v2/{repo}/blobs/{digest}", f"/v2/{repo}/tags/list", "/v2/_catalog"):
        r = client.request("GET", path)
        assert r.headers["Docker-Distribution-API-Version"] == API_VERSION, path


@pytest.mark.parametrize("path", ["/nope", "/v2/x/unknown/endpoint", "/v1/users/",
                                  "/v2/_catalog/extra", "/v3/"])
def test_unknown_path_is_404_with_oci_body(client: RegistryClient, path: str) -> None:
    status, headers, body = client.json("GET", path)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert error_code(body) in ("NOT_FOUND", "UNSUPPORTED")


@pytest.mark.parametrize("path", ["/internal/rpc/put_manifest", "/internal/rpc/resolve_tag",
                                  "/metrics", "/v2/../internal/rpc/put_manifest"])
def test_internal_endpoints_are_not_reachable(client: RegistryClient, path: str) -> None:
    for method in ("GET", "POST"):
        r = client.request(method, path, body=b"\x80" if method == "POST" else None,
                           headers={"Content-Type": "application/msgpack"})
        assert r.status == 404, (method, path, r.status)
        assert b"dockyard_http_requests_total" not in r.data


def test_method_not_allowed_is_an_oci_error(client: RegistryClient, repo: str) -> None:
    status, _, body = client.json("POST", f"/v2/{repo}/tags/list")
    assert status == 405
    assert error_code(body) == "UNSUPPORTED"


def test_router_readyz_lists_backends(client: RegistryClient, dockyard: Dockyard) -> None:
    status, _, body = client.json("GET", "/readyz")
    assert status == 200
    assert body["ready"] is True
    assert set(body["backends"]) == {"storage", "index"}
    assert body["backends"]["storage"] == {service_url(dockyard, "storage"): "ready"}
    assert body["backends"]["index"] == {service_url(dockyard, "index"): "ready"}
    status, _, body = client.json("GET", "/healthz")
    assert status == 200


def test_request_id_is_returned_and_logged_by_storage(client: RegistryClient,
                                                      dockyard: Dockyard, repo: str) -> None:
    digest, _ = client.random_blob(repo, 10)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    request_id = r.headers["X-Request-Id"]
    assert request_id
    # Two ids are never the same.
    assert client.request("GET", "/v2/").headers["X-Request-Id"] != request_id

    def logged() -> bool:
        return any(" storage[" in line and f"id={request_id}" in line and digest in line
                   for line in dockyard.log_text().splitlines())

    wait_until(logged, timeout=5, what="storage access line with the request id")
    router_lines = [line for line in dockyard.log_text().splitlines()
                    if f"id={request_id}" in line]
    assert any(" router[" in line for line in router_lines)


def test_client_request_id_is_kept(client: RegistryClient, dockyard: Dockyard,
                                   repo: str) -> None:
    mine = uuid.uuid4().hex
    r = client.request("GET", f"/v2/{repo}/tags/list", headers={"X-Request-Id": mine})
    assert r.headers["X-Request-Id"] == mine
    wait_until(lambda: any(" index[" in line and f"id={mine}" in line
                           for line in dockyard.log_text().splitlines()),
               timeout=5, what="index access line with the client's request id")


@pytest.mark.parametrize("service", ["storage", "index"])
def test_service_health_endpoints(dockyard: Dockyard, service: str) -> None:
    base = service_url(dockyard, service)
    r = direct("GET", base + "/healthz")
    assert r.status == 200
    assert json.loads(r.data) == {"status": "ok"}
    r = direct("GET", base + "/readyz")
    assert r.status == 200
    body = json.loads(r.data)
    assert body["ready"] is True
    if service == "index":
        assert body["redis"] == "up"
    elif bucket_of(dockyard.env) is not None:
        assert body["object_store_reachable"] is True
    else:
        assert body["storage_root_writable"] is True


@pytest.mark.parametrize("service", ["storage", "index"])
def test_service_metrics(client: RegistryClient, dockyard: Dockyard, repo: str,
                         service: str) -> None:
    client.random_blob(repo, 10)
    client.request("GET", "/v2/_catalog")
    r = direct("GET", service_url(dockyard, service) + "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.data.decode()
    assert "# TYPE dockyard_http_requests_total counter" in text
    assert f'dockyard_http_requests_total{{method="POST",service="{service}"' in text or \
        f'service="{service}"' in text
    assert "dockyard_http_request_duration_seconds_bucket" in text


def test_router_metrics_on_their_own_listener(client: RegistryClient,
                                              dockyard: Dockyard) -> None:
    client.request("GET", "/v2/")
    r = direct("GET", router_metrics_url(dockyard))
    assert r.status == 200
    assert 'service="router"' in r.data.decode()
    assert "dockyard_http_requests_total" in r.data.decode()


def test_services_listen_on_loopback_only(dockyard: Dockyard) -> None:
    for service in ("storage", "index"):
        assert service_url(dockyard, service).startswith("http://127.0.0.1:")


def test_internal_headers_neither_come_in_nor_go_out(client: RegistryClient, repo: str) -> None:
    # The router and storage hand blob files (and object store URLs) over with
    # X-Dockyard-* headers; a client must not be able to ask for that, nor ever see a
    # path on the server's disk.
    digest, data = client.random_blob(repo, 2048)
    for headers in ({}, {"X-Dockyard-Accel": "file"},
                    {"X-Dockyard-Accel": "file", "Range": "bytes=10-19"},
                    {"X-Dockyard-Accel": "url", "Range": "bytes=10-19"},
                    {"X-Dockyard-Fetch-Url": "http://127.0.0.1:9/", "X-Dockyard-Length": "1"}):
        r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers=headers)
        assert r.status in (200, 206)
        assert r.data == (data[10:20] if "Range" in headers else data)
        assert not [k for k in r.headers if k.lower().startswith("x-dockyard-")], r.headers
        assert b"/blobs/sha256/" not in r.data
