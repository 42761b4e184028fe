"""Every error a client can provoke, through the router, is the spec's
``{"errors": [{"code", "message", "detail"}]}`` with the spec's code, and no stack
trace or internal path leaks into it. That includes the errors the HTTP server
itself produces (malformed requests, oversized headers) and 503s from a backend
that stopped answering."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import psutil
import pytest

from tests.reliability.conftest import MAX_HEADER_SIZE
from tests.reliability.helpers import (
    Raw,
    assert_oci_error,
    raw_bytes_request,
    raw_request,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import OCI_MANIFEST, RegistryClient, sha256

ZERO = "sha256:" + "0" * 64


def expect(resp: Raw, status: int, code: str | set[str], d: Dockyard) -> dict:
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    return assert_oci_error(resp.body, code, secrets=[str(d.data_dir), "dockyard-data"])


def test_registry_errors(dockyard: Dockyard) -> None:
    d = dockyard
    client = RegistryClient(d.url)
    name = f"reliability/errors-{os.getpid()}"
    _, manifest = client.push_image(name, "v1")
    layer = json.loads(manifest)["layers"][0]
    url = d.url
    cases: list[tuple[Raw, int, str | set[str]]] = [
        (raw_request(url, "GET", f"/v2/{name}/blobs/{ZERO}"), 404, "BLOB_UNKNOWN"),
        (raw_request(url, "DELETE", f"/v2/{name}/blobs/{ZERO}"), 404, "BLOB_UNKNOWN"),
        (raw_request(url, "GET", "/v2/nobody/here/manifests/v1"), 404, "NAME_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/manifests/v2"), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/manifests/{ZERO}"), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "DELETE", f"/v2/{name}/manifests/nope"), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "GET", "/v2/nobody/here/tags/list"), 404, "NAME_UNKNOWN"),
        (raw_request(url, "GET", "/v2/BAD/tags/list"), 400, "NAME_INVALID"),
        (raw_request(url, "PUT", f"/v2/{name}/manifests/v1", b"{not json",
                     {"Content-Type": OCI_MANIFEST}), 400, "MANIFEST_INVALID"),
        (raw_request(url, "PUT", f"/v2/{name}/manifests/v1", manifest.replace(
            layer["digest"].encode(), ZERO.encode()), {"Content-Type": OCI_MANIFEST}),
         400, "MANIFEST_BLOB_UNKNOWN"),
        (raw_request(url, "PUT", f"/v2/{name}/manifests/{ZERO}", manifest,
                     {"Content-Type": OCI_MANIFEST}), 400, "DIGEST_INVALID"),
        (raw_request(url, "PUT", f"/v2/{name}/manifests/bad!tag", manifest,
                     {"Content-Type": OCI_MANIFEST}), 400, {"MANIFEST_INVALID", "TAG_INVALID"}),
        (raw_request(url, "POST", f"/v2/{name}/blobs/uploads/?digest={ZERO}", b"data"),
         400, "DIGEST_INVALID"),
        (raw_request(url, "POST", f"/v2/{name}/blobs/uploads/?digest=sha256:xyz", b"data"),
         400, "DIGEST_INVALID"),
        (raw_request(url, "GET", f"/v2/{name}/blobs/uploads/{'f' * 32}"), 404,
         "BLOB_UPLOAD_UNKNOWN"),
        (raw_request(url, "DELETE", f"/v2/{name}/blobs/uploads/{'f' * 32}"), 404,
         "BLOB_UPLOAD_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/tags/list?n=abc"), 400,
         "PAGINATION_NUMBER_INVALID"),
        (raw_request(url, "GET", f"/v2/{name}/blobs/{layer['digest']}",
                     headers={"Range": "bytes=99999-"}), 416, {"BLOB_UNKNOWN", "RANGE_INVALID"}),
        (raw_request(url, "POST", f"/v2/{name}/manifests/v1"), 405, "UNSUPPORTED"),
        (raw_request(url, "GET", f"/v2/{name}/nothing-here"), 404, "NOT_FOUND"),
        (raw_request(url, "GET", "/nothing-here"), 404, "NOT_FOUND"),
        # The services' internal endpoints are not reachable through the router.
        (raw_request(url, "POST", "/internal/rpc/put_manifest", b"\x80"), 404, "NOT_FOUND"),
    ]
    # A chunk that does not continue the upload where it stands.
    location = client.start_upload(name)
    cases.append((raw_request(url, "PATCH", location.split(d.addr, 1)[1], b"abc",
                              {"Content-Range": "5-7"}), 416, "BLOB_UPLOAD_INVALID"))
    cases.append((raw_request(url, "PUT", location.split(d.addr, 1)[1] + "?digest="
                              + sha256(b"other"), b"abc"), 400, "DIGEST_INVALID"))
    for resp, status, code in cases:
        expect(resp, status, code, d)


def test_http_server_errors_are_oci_bodies(limited_dockyard: Dockyard) -> None:
    """Errors waitress raises before the app runs: they must not be plain text."""
    d = limited_dockyard
    head = b"Host: x\r\nConnection: close\r\n"
    for request, status in [
        # Headers over http.max_header_size.
        (b"GET /v2/ HTTP/1.1\r\n" + head + b"X-Pad: " + b"a" * (2 * MAX_HEADER_SIZE)
         + b"\r\n\r\n", 431),
        # A Content-Length that is not a number.
        (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\n" + head + b"Content-Length: abc\r\n\r\n", 400),
        # A broken chunked body.
        (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\n" + head + b"Transfer-Encoding: chunked\r\n"
         b"\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
        # A transfer coding nobody supports.
        (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\n" + head + b"Transfer-Encoding: gzip\r\n"
         b"\r\n", 501),
    ]:
        resp = raw_bytes_request(d.url, request)
        assert resp.status == status, (request[:60], resp.status, resp.body[:200])
        expect(resp, status, {"UNKNOWN", "SIZE_INVALID", "UNSUPPORTED"}, d)


@pytest.fixture
def suspended(limited_dockyard: Dockyard) -> Iterator[list[psutil.Process]]:
    """Processes stopped with SIGSTOP by the test; always continued afterwards."""
    stopped: list[psutil.Process] = []
    try:
        yield stopped
    finally:
        for proc in stopped:
            proc.resume()


@pytest.mark.slow
def test_unanswering_backends_give_503_bodies(limited_dockyard: Dockyard,
                                              suspended: list[psutil.Process]) -> None:
    """A stopped (not dead) backend accepts connections and never answers: the worst
    case for a proxy. The router and storage time out and answer 503 UNAVAILABLE."""
    d = limited_dockyard
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/stopped"
    digest, manifest = client.push_image(name, "v1")
    layer = json.loads(manifest)["layers"][0]["digest"]
    fresh = client.image_manifest(name)

    index = d.child("index")
    index.suspend()
    suspended.append(index)
    for resp in [
        raw_request(d.url, "PUT", f"/v2/{name}/manifests/v2", fresh,
                    {"Content-Type": OCI_MANIFEST}),
        raw_request(d.url, "GET", f"/v2/{name}/tags/list"),
        raw_request(d.url, "GET", "/v2/_catalog"),
    ]:
        body = expect(resp, 503, "UNAVAILABLE", d)
        assert resp.headers.get("retry-after", "").isdigit(), resp.headers
        assert body["message"]
    # Pulls by digest need no index and go on.
    assert client.get_manifest(name, digest).status == 200
    index.resume()
    suspended.remove(index)

    storage = d.child("storage")
    storage.suspend()
    suspended.append(storage)
    for method in ("GET", "HEAD"):
        resp = raw_request(d.url, method, f"/v2/{name}/blobs/{layer}")
        assert resp.status == 503 and resp.headers.get("retry-after", "").isdigit()
        if method == "GET":
            expect(resp, 503, "UNAVAILABLE", d)
    storage.resume()
    suspended.remove(storage)
    # Both back: the refused push goes through now.
    assert client.put_manifest(name, "v2", fresh).status == 201
