"""Blob uploads through the router: sessions, chunks, streams, mounts, digests, names."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator

import pytest
import urllib3

from tests.integration.helpers import (
    blob_copies,
    blob_key,
    public_location,
    raw_request,
    stored_blob,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, error_code, sha256


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def start(client: RegistryClient, dockyard: Dockyard, name: str) -> str:
    """Open a session and return its path (checked to be on the router)."""
    r = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202, r.data
    return public_location(r.headers["Location"], dockyard.addr)


def patch(client: RegistryClient, location: str, data: bytes, first: int | None = None,
          ) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/octet-stream"}
    if first is not None:
        headers["Content-Range"] = f"{first}-{first + len(data) - 1}"
    return client.request("PATCH", location, body=data, headers=headers)


def with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def assert_blob(client: RegistryClient, name: str, digest: str, data: bytes) -> None:
    r = client.request("GET", f"/v2/{name}/blobs/{digest}")
    assert r.status == 200, r.data
    assert r.data == data
    assert r.headers["Docker-Content-Digest"] == digest


# -- starting sessions ---------------------------------------------------------------------


def test_post_opens_a_session(client: RegistryClient, dockyard: Dockyard, repo: str) -> None:
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status == 202
    assert r.headers["Range"] == "0-0"
    upload_id = r.headers["Docker-Upload-UUID"]
    assert upload_id
    path = public_location(r.headers["Location"], dockyard.addr)
    assert path.startswith(f"/v2/{repo}/blobs/uploads/{upload_id}")


def test_post_with_digest_is_a_monolithic_upload(client: RegistryClient, dockyard: Dockyard,
                                                 repo: str) -> None:
    data = os.urandom(3000)
    digest = sha256(data)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, r.data
    assert public_location(r.headers["Location"], dockyard.addr) == f"/v2/{repo}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert_blob(client, repo, digest, data)


def test_monolithic_upload_with_wrong_digest_is_refused(client: RegistryClient,
                                                        repo: str) -> None:
    data = os.urandom(100)
    wrong = sha256(b"something else " + os.urandom(4))
    status, _, body = client.json("POST", f"/v2/{repo}/blobs/uploads/?digest={wrong}",
                                  body=data)
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"
    assert client.request("HEAD", f"/v2/{repo}/blobs/{wrong}").status == 404
    assert client.request("HEAD", f"/v2/{repo}/blobs/{sha256(data)}").status == 404


def test_mount_from_a_repository_that_has_the_blob(client: RegistryClient, dockyard: Dockyard,
                                                   repo: str, other_repo: str) -> None:
    digest, data = client.random_blob(other_repo, 500)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={other_repo}")
    assert r.status == 201, r.data
    assert public_location(r.headers["Location"], dockyard.addr) == f"/v2/{repo}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert_blob(client, repo, digest, data)


def test_mount_falls_back_to_a_session(client: RegistryClient, dockyard: Dockyard, repo: str,
                                       other_repo: str) -> None:
    # The source repository does not have this blob (even though it exists elsewhere).
    digest, _ = client.random_blob(repo + "x", 50)
    client.random_blob(other_repo, 10)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={other_repo}")
    assert r.status == 202, r.data
    assert r.headers["Docker-Upload-UUID"]
    assert r.headers["Range"] == "0-0"
    public_location(r.headers["Location"], dockyard.addr)
    assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 404
    # Without `from` and with an unknown digest, also a session.
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={sha256(os.urandom(4))}")
    assert r.status == 202


# -- chunks --------------------------------------------------------------------------------


def test_chunked_upload_with_content_range(client: RegistryClient, dockyard: Dockyard,
                                           repo: str) -> None:
    data = os.urandom(10_000)
    location = start(client, dockyard, repo)
    offset = 0
    for size in (4000, 4000, 2000):
        r = patch(client, location, data[offset:offset + size], first=offset)
        assert r.status == 202, r.data
        offset += size
        assert r.headers["Range"] == f"0-{offset - 1}"
        location = public_location(r.headers["Location"], dockyard.addr)
    digest = sha256(data)
    r = client.request("PUT", with_digest(location, digest))
    assert r.status == 201, r.data
    assert public_location(r.headers["Location"], dockyard.addr) == f"/v2/{repo}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert_blob(client, repo, digest, data)
    # A finished session is gone.
    status, _, body = client.json("GET", location)
    assert status == 404
    assert error_code(body) == "BLOB_UPLOAD_UNKNOWN"


def test_out_of_order_chunk_is_416_and_changes_nothing(client: RegistryClient,
                                                       dockyard: Dockyard, repo: str) -> None:
    data = os.urandom(3000)
    location = start(client, dockyard, repo)
    assert patch(client, location, data[:1000], first=0).status == 202
    # Skipping ahead, and going back over what was sent, both break the sequence.
    for first in (2000, 500, 0):
        r = patch(client, location, data[first:first + 1000], first=first)
        assert r.status == 416, first
        assert error_code(json.loads(r.data)) == "BLOB_UPLOAD_INVALID"
        status, headers, _ = client.json("GET", location)
        assert status == 204
        assert headers["Range"] == "0-999"
    assert patch(client, location, data[1000:], first=1000).status == 202
    digest = sha256(data)
    assert client.request("PUT", with_digest(location, digest)).status == 201
    assert_blob(client, repo, digest, data)


def test_chunk_whose_range_disagrees_with_its_length_is_416(
        client: RegistryClient, dockyard: Dockyard, repo: str) -> None:
    location = start(client, dockyard, repo)
    r = client.request("PATCH", location, body=b"x" * 10,
                       headers={"Content-Range": "0-19",
                                "Content-Type": "application/octet-stream"})
    assert r.status == 416
    assert client.request("GET", location).headers["Range"] == "0-0"


def test_streamed_patch_with_transfer_encoding_chunked(client: RegistryClient,
                                                       dockyard: Dockyard, repo: str) -> None:
    pieces = [os.urandom(n) for n in (1, 5000, 65536, 300)]
    data = b"".join(pieces)
    location = start(client, dockyard, repo)

    def body() -> Iterator[bytes]:
        yield from pieces

    # No Content-Length: the body goes as HTTP/1.1 chunks, as `docker push` streams layers.
    r = client.request("PATCH", location, body=body(), chunked=True,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202, r.data
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    location = public_location(r.headers["Location"], dockyard.addr)
    digest = sha256(data)
    assert client.request("PUT", with_digest(location, digest)).status == 201
    assert_blob(client, repo, digest, data)


def test_put_with_the_last_chunk(client: RegistryClient, dockyard: Dockyard,
                                 repo: str) -> None:
    data = os.urandom(5000)
    location = start(client, dockyard, repo)
    assert patch(client, location, data[:3000]).status == 202
    digest = sha256(data)
    r = client.request("PUT", with_digest(location, digest), body=data[3000:],
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, r.data
    assert public_location(r.headers["Location"], dockyard.addr) == f"/v2/{repo}/blobs/{digest}"
    assert_blob(client, repo, digest, data)


def test_put_with_the_whole_blob_and_no_patch(client: RegistryClient, dockyard: Dockyard,
                                              repo: str) -> None:
    data = os.urandom(2000)
    location = start(client, dockyard, repo)
    digest = sha256(data)
    assert client.request("PUT", with_digest(location, digest), body=data).status == 201
    assert_blob(client, repo, digest, data)


def test_put_with_wrong_digest_is_400_and_no_blob_exists(
        client: RegistryClient, dockyard: Dockyard, repo: str) -> None:
    data = os.urandom(2000)
    location = start(client, dockyard, repo)
    assert patch(client, location, data).status == 202
    wrong = sha256(data + b"!")
    status, _, body = client.json("PUT", with_digest(location, wrong))
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"
    for digest in (wrong, sha256(data)):
        assert client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 404
    assert stored_blob(dockyard, wrong) is None


def test_put_without_digest_is_400(client: RegistryClient, dockyard: Dockyard,
                                   repo: str) -> None:
    location = start(client, dockyard, repo)
    status, _, body = client.json("PUT", location, body=b"abc")
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"


def test_get_upload_reports_progress(client: RegistryClient, dockyard: Dockyard,
                                     repo: str) -> None:
    location = start(client, dockyard, repo)
    r = client.request("GET", location)
    assert r.status == 204
    assert r.headers["Range"] == "0-0"
    assert public_location(r.headers["Location"], dockyard.addr).startswith(
        f"/v2/{repo}/blobs/uploads/")
    assert patch(client, location, b"x" * 1234).status == 202
    r = client.request("GET", location)
    assert r.status == 204
    assert r.headers["Range"] == "0-1233"
    assert r.headers["Docker-Upload-UUID"]


def test_delete_upload_then_every_use_is_unknown(client: RegistryClient, dockyard: Dockyard,
                                                 repo: str) -> None:
    location = start(client, dockyard, repo)
    assert patch(client, location, b"abc").status == 202
    r = client.request("DELETE", location)
    assert r.status == 204
    for method, path, body in (
        ("GET", location, None),
        ("PATCH", location, b"more"),
        ("PUT", with_digest(location, sha256(b"abc")), None),
        ("DELETE", location, None),
    ):
        status, _, err = client.json(method, path, body=body)
        assert status == 404, method
        assert error_code(err) == "BLOB_UPLOAD_UNKNOWN", method


def test_session_of_another_repository_is_unknown(client: RegistryClient, dockyard: Dockyard,
                                                  repo: str, other_repo: str) -> None:
    location = start(client, dockyard, repo)
    stolen = location.replace(f"/v2/{repo}/", f"/v2/{other_repo}/")
    status, _, body = client.json("GET", stolen)
    assert status == 404
    assert error_code(body) == "BLOB_UPLOAD_UNKNOWN"


@pytest.mark.parametrize("upload_id", ["nope", "0" * 32, "0" * 31 + "G"])
def test_unknown_or_malformed_upload_id_is_404(client: RegistryClient, repo: str,
                                               upload_id: str) -> None:
    status, _, body = client.json("GET", f"/v2/{repo}/blobs/uploads/{upload_id}")
    assert status == 404
    assert error_code(body) == "BLOB_UPLOAD_UNKNOWN"


@pytest.mark.parametrize("path", [
    "/v2/dots/../up/blobs/uploads/",
    "/v2/./dot/blobs/uploads/",
    "/v2/up/blobs/uploads/../../../../etc/passwd",
    "/v2/up/blobs/sha256:..%2F..%2Fetc",
])
def test_dot_segments_never_reach_the_disk(dockyard: Dockyard, path: str) -> None:
    # http.client, because urllib3 would resolve the dot segments before sending.
    status, _, body = raw_request(dockyard.url, "POST" if path.endswith("/") else "GET",
                                  path, [])
    assert status in (400, 404), (path, status)
    assert error_code(json.loads(body)) in ("NAME_INVALID", "BLOB_UPLOAD_UNKNOWN",
                                            "DIGEST_INVALID", "NOT_FOUND")


# -- digests and names ---------------------------------------------------------------------


def test_sha512_monolithic_and_chunked(client: RegistryClient, dockyard: Dockyard,
                                       repo: str) -> None:
    data = os.urandom(4000)
    digest = sha512(data)
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data)
    assert r.status == 201, r.data
    assert r.headers["Docker-Content-Digest"] == digest
    assert_blob(client, repo, digest, data)

    data2 = os.urandom(4000)
    location = start(client, dockyard, repo)
    assert patch(client, location, data2[:1000], first=0).status == 202
    digest2 = sha512(data2)
    r = client.request("PUT", with_digest(location, digest2), body=data2[1000:])
    assert r.status == 201, r.data
    assert_blob(client, repo, digest2, data2)


@pytest.mark.parametrize("digest", [
    "sha256:1234",                 # too short
    "sha256:" + "g" * 64,          # not hex
    "sha256:" + "A" * 64,          # hex must be lowercase
    "sha256",                      # no encoded part
    ":" + "0" * 64,                # no algorithm
    "md5:" + "0" * 32,             # an algorithm we cannot verify
    "sha384:" + "0" * 96,
    "blake3:" + "0" * 64,
])
def test_malformed_or_unknown_digest_is_400_digest_invalid(
        client: RegistryClient, dockyard: Dockyard, repo: str, digest: str) -> None:
    status, _, body = client.json("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}",
                                  body=b"data")
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"
    location = start(client, dockyard, repo)
    status, _, body = client.json("PUT", with_digest(location, digest), body=b"data")
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"
    status, _, body = client.json("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}")
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"


@pytest.mark.parametrize("name", [
    "UpperCase/repo", "repo/", "-leading/dash", "double//slash", "a..b/c",
    "under_/x", "a" * 256,
])
def test_invalid_name_is_400_name_invalid(client: RegistryClient, name: str) -> None:
    status, _, body = client.json("POST", f"/v2/{name}/blobs/uploads/")
    assert status == 400, name
    assert error_code(body) == "NAME_INVALID"
    status, _, body = client.json("GET", f"/v2/{name}/blobs/{sha256(b'x')}")
    assert status == 400, name
    assert error_code(body) == "NAME_INVALID"


# -- concurrency ---------------------------------------------------------------------------


def test_sixteen_concurrent_uploads_of_one_blob(client: RegistryClient, dockyard: Dockyard,
                                                repo: str) -> None:
    data = os.urandom(256 * 1024)
    digest = sha256(data)
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16, timeout=30)

    def upload(i: int) -> None:
        name = f"{repo}/{i % 4}"
        location = start(client, dockyard, name)
        assert patch(client, location, data[:100_000], first=0).status == 202
        # Line everyone up so the final commits really race each other.
        barrier.wait()
        r = client.request("PUT", with_digest(location, digest), body=data[100_000:])
        with lock:
            results.append(r.status)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert results == [201] * 16
    assert stored_blob(dockyard, digest) == data
    # Exactly one object holds the blob: no temporary copy left behind under its name.
    assert blob_copies(dockyard, digest) == [blob_key(digest)]
    for i in range(4):
        assert_blob(client, f"{repo}/{i}", digest, data)
