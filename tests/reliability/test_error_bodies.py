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
    """Errors waitress raises before the app runs: they must not be plain text, and each
    carries the spec code docs/architecture.md names for it."""
    d = limited_dockyard
    head = b"Host: x\r\nConnection: close\r\n"
    for request, status, code in [
        # Headers over http.max_header_size.
        (b"GET /v2/ HTTP/1.1\r\n" + head + b"X-Pad: " + b"a" * (2 * MAX_HEADER_SIZE)
         + b"\r\n\r\n", 431, "UNSUPPORTED"),
        # A Content-Length that is not a number.
        (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\n" + head + b"Content-Length: abc\r\n\r\n", 400,
         "SIZE_INVALID"),
        # A broken chunked body.
        (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\n" + head + b"Transfer-Encoding: chunked\r\n"
         b"\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "SIZE_INVALID"),
        # A transfer coding nobody supports.
        (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\n" + head + b"Transfer-Encoding: gzip\r\n"
         b"\r\n", 501, "UNSUPPORTED"),
        # A header line that is no header.
        (b"GET /v2/ HTTP/1.1\r\n" + head + b"X-A: a\rb\r\n\r\n", 400, "UNSUPPORTED"),
        # Raw non-ASCII bytes in the URL: the code of the part that holds them.
        (b"GET /v2/na\xc3\xafve/tags/list HTTP/1.1\r\n" + head + b"\r\n", 400, "NAME_INVALID"),
        (b"GET /v2/a/b\xff/manifests/v1 HTTP/1.1\r\n" + head + b"\r\n", 400, "NAME_INVALID"),
        (b"GET /v2/a/manifests/v\xc3\xa9 HTTP/1.1\r\n" + head + b"\r\n", 404,
         "MANIFEST_UNKNOWN"),
        (b"GET /v2/a/blobs/sha256:\xff HTTP/1.1\r\n" + head + b"\r\n", 400, "DIGEST_INVALID"),
        (b"PATCH /v2/a/blobs/uploads/\xff HTTP/1.1\r\n" + head + b"Content-Length: 0\r\n\r\n",
         404, "BLOB_UPLOAD_UNKNOWN"),
    ]:
        resp = raw_bytes_request(d.url, request)
        assert resp.status == status, (request[:60], resp.status, resp.body[:200])
        expect(resp, status, code, d)


def test_spec_codes_for_references_no_valid_one_looks_like(dockyard: Dockyard) -> None:
    """Manifest reads by an invalid tag are 404 (conformance tools probe it), a PUT with
    one is 400; ids and digests that cannot be valid get the spec's code of what they
    name, never NOT_FOUND; an unknown method is 405 UNSUPPORTED with an Allow."""
    d = dockyard
    client = RegistryClient(d.url)
    name = f"reliability/spec-codes-{os.getpid()}"
    _, manifest = client.push_image(name, "v1")
    url = d.url
    bad_tag = f"/v2/{name}/manifests/.INVALID_MANIFEST_NAME"
    cases: list[tuple[Raw, int, str]] = [
        (raw_request(url, "GET", bad_tag), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/manifests/{'x' * 200}"), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/manifests/sha256:nothex"), 404,
         "MANIFEST_UNKNOWN"),
        (raw_request(url, "DELETE", bad_tag), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "PUT", bad_tag, manifest, {"Content-Type": OCI_MANIFEST}), 400,
         "MANIFEST_INVALID"),
        (raw_request(url, "PUT", f"/v2/{name}/manifests/a%2Fb", manifest,
                     {"Content-Type": OCI_MANIFEST}), 400, "MANIFEST_INVALID"),
        (raw_request(url, "GET", f"/v2/{name}/manifests/a%2F..%2Fb"), 404, "MANIFEST_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/blobs/uploads/%2e%2e%2f%2e%2e%2fetc"), 404,
         "BLOB_UPLOAD_UNKNOWN"),
        (raw_request(url, "PATCH", f"/v2/{name}/blobs/uploads/..%2F..%2Fetc", b"x"), 404,
         "BLOB_UPLOAD_UNKNOWN"),
        (raw_request(url, "PUT", f"/v2/{name}/blobs/uploads/not-an-id?digest={ZERO}"), 404,
         "BLOB_UPLOAD_UNKNOWN"),
        (raw_request(url, "GET", f"/v2/{name}/blobs/sha256:../../etc/passwd"), 400,
         "DIGEST_INVALID"),
        (raw_request(url, "HEAD", f"/v2/{name}/blobs/sha256:..%2F..%2Fetc%2Fpasswd"), 400, ""),
        (raw_request(url, "DELETE", f"/v2/{name}/blobs/sha256:..%2F..%2Fetc%2Fpasswd"), 400,
         "DIGEST_INVALID"),
        (raw_request(url, "DELETE", f"/v2/{name}/blobs/sha256:xyz"), 400, "DIGEST_INVALID"),
        (raw_request(url, "GET", f"/v2/{name}/referrers/sha256:..%2Fx"), 400, "DIGEST_INVALID"),
        (raw_request(url, "GET", "/v2/BAD%2FNAME/blobs/uploads/..%2Fx"), 400, "NAME_INVALID"),
    ]
    for resp, status, code in cases:
        if code:
            expect(resp, status, code, d)
        else:
            assert resp.status == status and resp.body == b"", resp
    for path, allowed in (("/v2/", "GET, HEAD"), (f"/v2/{name}/manifests/v1",
                                                  "DELETE, GET, HEAD, PUT")):
        resp = raw_request(url, "BREW", path)
        expect(resp, 405, "UNSUPPORTED", d)
        assert resp.headers["allow"] == allowed
    # Nothing of the repository was harmed.
    assert client.get_manifest(name, "v1").status == 200


def test_out_of_order_chunks_are_416_and_leave_the_session_as_it_was(dockyard: Dockyard) -> None:
    d = dockyard
    client = RegistryClient(d.url)
    name = f"reliability/chunks-{os.getpid()}"
    path = client.start_upload(name).split(d.addr, 1)[1]
    data = os.urandom(300_000)
    first, second = data[:100_000], data[100_000:]
    # The second chunk first (as the conformance suite does), then one that overlaps.
    for chunk, content_range in ((second, "100000-299999"), (first[:10], "5-14")):
        resp = raw_request(d.url, "PATCH", path, chunk, {
            "Content-Range": content_range, "Content-Type": "application/octet-stream"})
        expect(resp, 416, "BLOB_UPLOAD_INVALID", d)
        assert resp.headers["range"] == "0-0"
    resp = raw_request(d.url, "PATCH", path, first, {"Content-Range": "0-99999"})
    assert resp.status == 202 and resp.headers["range"] == "0-99999"
    resp = raw_request(d.url, "PATCH", path, second[:5], {"Content-Range": "100001-100005"})
    expect(resp, 416, "BLOB_UPLOAD_INVALID", d)
    assert resp.headers["range"] == "0-99999"
    status = raw_request(d.url, "GET", path)
    assert status.status == 204 and status.headers["range"] == "0-99999"
    resp = raw_request(d.url, "PATCH", path, second, {"Content-Range": "100000-299999"})
    assert resp.status == 202 and resp.headers["range"] == "0-299999"
    done = raw_request(d.url, "PUT", path + "?digest=" + sha256(data))
    assert done.status == 201, done
    blob = client.request("GET", f"/v2/{name}/blobs/{sha256(data)}")
    assert blob.status == 200 and blob.data == data


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
