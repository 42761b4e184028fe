"""GET, HEAD and DELETE of blobs through the router: headers, ranges, repository scoping."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Pusher
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, error_code, sha256


def test_get_sends_the_blob_with_its_headers(client: RegistryClient, repo: str) -> None:
    digest, data = client.random_blob(repo, 4096)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 200
    assert r.data == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes"


def test_head_sends_the_headers_and_no_body(client: RegistryClient, repo: str) -> None:
    digest, _data = client.random_blob(repo, 777)
    r = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 200
    assert r.data == b""
    assert r.headers["Content-Length"] == "777"
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-99", 0, 99),
    ("bytes=100-199", 100, 199),
    ("bytes=1000-", 1000, 1023),
    # An end past the blob is cut to the blob (RFC 9110 14.1.2).
    ("bytes=1000-5000", 1000, 1023),
    # Suffix ranges: the last N bytes, all of it when N exceeds the size.
    ("bytes=-24", 1000, 1023),
    ("bytes=-5000", 0, 1023),
])
def test_range_get_answers_206_with_content_range(client: RegistryClient, repo: str,
                                                  header: str, first: int, last: int) -> None:
    digest, data = client.random_blob(repo, 1024)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert r.status == 206, r.data
    assert r.headers["Content-Range"] == f"bytes {first}-{last}/1024"
    assert r.headers["Content-Length"] == str(last - first + 1)
    assert r.data == data[first:last + 1]


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(client: RegistryClient, repo: str, header: str) -> None:
    digest, _ = client.random_blob(repo, 1024)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert r.status == 416
    # RFC 9110 15.5.17: the current length, so the client can ask again correctly.
    assert r.headers["Content-Range"] == "bytes */1024"


def test_blob_of_another_repository_is_unknown(client: RegistryClient, repo: str,
                                               other_repo: str) -> None:
    digest, _ = client.random_blob(other_repo, 100)
    # Blobs are shared on disk, but a repository may only serve what was pushed to it.
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/v2/{repo}/blobs/{digest}")
        assert r.status == 404
    _status, _, body = client.json("GET", f"/v2/{repo}/blobs/{digest}")
    assert error_code(body) == "BLOB_UNKNOWN"


def test_unknown_blob_is_404_blob_unknown(client: RegistryClient, repo: str) -> None:
    client.random_blob(repo, 10)
    status, _, body = client.json("GET", f"/v2/{repo}/blobs/{sha256(os.urandom(8))}")
    assert status == 404
    assert error_code(body) == "BLOB_UNKNOWN"


@pytest.mark.parametrize("digest", ["sha256:abc", "nonsense", "md5:" + "0" * 32,
                                    "sha256:" + "A" * 64])
def test_malformed_blob_digest_is_400(client: RegistryClient, repo: str, digest: str) -> None:
    status, _, body = client.json("GET", f"/v2/{repo}/blobs/{digest}")
    assert status == 400
    assert error_code(body) == "DIGEST_INVALID"


def test_delete_blob_answers_202_then_404(client: RegistryClient, repo: str) -> None:
    digest, _ = client.random_blob(repo, 64)
    r = client.request("DELETE", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 202
    status, _, body = client.json("GET", f"/v2/{repo}/blobs/{digest}")
    assert status == 404
    assert error_code(body) == "BLOB_UNKNOWN"
    status, _, body = client.json("DELETE", f"/v2/{repo}/blobs/{digest}")
    assert status == 404
    assert error_code(body) == "BLOB_UNKNOWN"


def test_delete_blob_in_one_repository_keeps_it_in_another(
        client: RegistryClient, repo: str, other_repo: str) -> None:
    data = os.urandom(64)
    digest = client.push_blob(repo, data)
    client.push_blob(other_repo, data)
    assert client.request("DELETE", f"/v2/{repo}/blobs/{digest}").status == 202
    r = client.request("GET", f"/v2/{other_repo}/blobs/{digest}")
    assert r.status == 200
    assert r.data == data


@pytest.fixture
def no_delete_dockyard(tmp_path: Path) -> Iterator[Dockyard]:
    with Dockyard(tmp_path / "data", env={"DOCKYARD_STORAGE_DELETE_ENABLED": "false"}) as server:
        yield server


def test_deletes_disabled_answer_405_unsupported(no_delete_dockyard: Dockyard) -> None:
    client = RegistryClient(no_delete_dockyard.url)
    pusher = Pusher(client)
    name = "nodelete/repo"
    digest, _ = client.random_blob(name, 64)
    manifest_digest, _ = pusher.push(name, "v1", pusher.image(name))

    for path in (f"/v2/{name}/blobs/{digest}", f"/v2/{name}/manifests/{manifest_digest}",
                 f"/v2/{name}/manifests/v1"):
        status, _, body = client.json("DELETE", path)
        assert status == 405, path
        assert error_code(body) == "UNSUPPORTED"
    # Nothing was deleted on the way.
    assert client.request("GET", f"/v2/{name}/blobs/{digest}").status == 200
    assert client.get_manifest(name, "v1").status == 200


def test_empty_blob(client: RegistryClient, repo: str) -> None:
    digest = client.push_blob(repo, b"")
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert (r.status, r.data, r.headers["Content-Length"]) == (200, b"", "0")
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-"})
    assert r.status == 416
    assert r.headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=5-2", "bytes=x-"])
def test_range_we_do_not_serve_is_ignored(client: RegistryClient, repo: str,
                                          header: str) -> None:
    # RFC 9110 14.2: a server may ignore a Range it does not support or that is invalid.
    digest, data = client.random_blob(repo, 100)
    r = client.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert r.status == 200
    assert r.data == data
