"""The storage app in-process: blobs, uploads and manifests against a real index app,
without starting any `dockyard` process."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import msgpack
import pytest

from services.storage.app import create_app
from services.storage.blobstore import BlobStore
from services.storage.bodies import Body
from services.storage.index_client import IndexClient
from services.storage.paths import Layout
from services.storage.uploads import UploadStore
from shared import errors
from shared.rpc import RpcClient
from shared.validation import parse_digest
from tests.unit.conftest import TEST_KEY, Api, storage_config

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def code(result: object) -> str:
    body = json.loads(result.content)  # type: ignore[attr-defined]
    assert set(body["errors"][0]) >= {"code", "message", "detail"}
    return body["errors"][0]["code"]


def push_blob(api: Api, name: str, data: bytes) -> str:
    r = api("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(data)}", body=data)
    assert r.status_code == 201, r.text
    return sha256(data)


def image(api: Api, name: str, **fields: object) -> bytes:
    config = json.dumps({"os": "linux", "n": os.urandom(4).hex()}).encode()
    layer = os.urandom(64)
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": push_blob(api, name, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": push_blob(api, name, layer), "size": len(layer)}],
        **fields,
    }).encode()


def put_manifest(api: Api, name: str, reference: str, body: bytes) -> object:
    return api("PUT", f"/v2/{name}/manifests/{reference}", body=body,
               headers={"Content-Type": OCI_MANIFEST})


# -- blobs ---------------------------------------------------------------------------------


def test_blob_get_head_and_range(storage_api: Api) -> None:
    data = os.urandom(1024)
    digest = push_blob(storage_api, "u/blob", data)
    r = storage_api("GET", f"/v2/u/blob/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Accept-Ranges"] == "bytes"
    r = storage_api("HEAD", f"/v2/u/blob/blobs/{digest}")
    assert (r.status_code, r.content, r.headers["Content-Length"]) == (200, b"", "1024")
    r = storage_api("GET", f"/v2/u/blob/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 100-199/1024"
    assert r.headers["Content-Length"] == "100"
    # The body is the open file from the range's start; waitress's file wrapper stops
    # it at Content-Length (the integration tests check the bytes on the wire).
    assert r.content[:100] == data[100:200]
    r = storage_api("GET", f"/v2/u/blob/blobs/{digest}", headers={"Range": "bytes=1024-"})
    assert r.status_code == 416


@pytest.mark.parametrize(("path", "expected"), [
    ("/v2/a/../../etc/blobs/sha256:" + "0" * 64, "NAME_INVALID"),
    ("/v2/_layers/blobs/sha256:" + "0" * 64, "NAME_INVALID"),
    ("/v2/a/blobs/sha256:../../../../etc/passwd", "DIGEST_INVALID"),
    ("/v2/a/blobs/uploads/../../../tmp", "BLOB_UPLOAD_UNKNOWN"),
])
def test_paths_outside_the_grammar_never_touch_the_disk(storage_api: Api, path: str,
                                                        expected: str) -> None:
    r = storage_api("GET", path)
    assert r.status_code in (400, 404)
    assert code(r) in (expected, "NOT_FOUND")


def test_location_follows_the_forwarded_host(storage_api: Api) -> None:
    r = storage_api("POST", "/v2/u/loc/blobs/uploads/",
                    headers={"X-Forwarded-Host": "registry.example:8443",
                             "X-Forwarded-Proto": "https"})
    assert r.status_code == 202
    assert r.headers["Location"].startswith("https://registry.example:8443/v2/u/loc/blobs/uploads/")


# -- uploads -------------------------------------------------------------------------------


def test_chunked_upload_and_digest_check(storage_api: Api, storage_root: Path) -> None:
    data = os.urandom(5000)
    r = storage_api("POST", "/v2/u/up/blobs/uploads/")
    location = r.headers["Location"].split("falconframework.org", 1)[-1]
    r = storage_api("PATCH", location, body=data[:2000], headers={"Content-Range": "0-1999"})
    assert (r.status_code, r.headers["Range"]) == (202, "0-1999")
    r = storage_api("PATCH", location, body=data[:10], headers={"Content-Range": "0-9"})
    assert r.status_code == 416
    assert storage_api("GET", location).headers["Range"] == "0-1999"
    r = storage_api("PUT", f"{location}?digest={sha256(b'wrong')}", body=data[2000:])
    assert r.status_code == 400
    assert code(r) == "DIGEST_INVALID"
    # A failed finish removes the session and leaves no blob.
    assert storage_api("GET", location).status_code == 404
    assert list((storage_root / "uploads").iterdir()) == []
    assert not (storage_root / "blobs" / "sha256" / sha256(b"wrong")[7:9]).exists()


def test_session_continues_in_another_process(storage_root: Path, index_url: str) -> None:
    # Two apps on one root stand for a storage process and its replacement.
    first = Api(create_app(storage_config(storage_root, index_url)))
    second = Api(create_app(storage_config(storage_root, index_url)))
    data = os.urandom(3000)
    location = first("POST", "/v2/u/two/blobs/uploads/").headers["Location"]
    location = location.split("falconframework.org", 1)[-1]
    assert first("PATCH", location, body=data[:1000]).status_code == 202
    assert second("GET", location).headers["Range"] == "0-999"
    assert second("PATCH", location, body=data[1000:2000]).status_code == 202
    r = second("PUT", f"{location}?digest={sha256(data)}", body=data[2000:])
    assert r.status_code == 201, r.text
    assert first("GET", f"/v2/u/two/blobs/{sha256(data)}").content == data


def test_abandoned_sessions_are_purged(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    uploads = UploadStore(layout, BlobStore(layout), max_per_repository=2, max_age=60)
    old = uploads.start("u/purge")
    uploads.append(old, "u/purge", Body(3, stream=io.BytesIO(b"abc")))
    assert uploads.purge(now=time.time() + 30) == 0
    assert uploads.purge(now=time.time() + 61) == 1
    with pytest.raises(errors.BlobUploadUnknown):
        uploads.size(old, "u/purge")
    assert list(layout.upload_markers("u/purge").iterdir()) == []


def test_too_many_sessions_per_repository(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    uploads = UploadStore(layout, BlobStore(layout), max_per_repository=2, max_age=60)
    uploads.start("u/many")
    uploads.start("u/many")
    with pytest.raises(errors.TooManyRequests):
        uploads.start("u/many")
    uploads.start("u/other")


def test_link_files_are_an_empty_file_and_a_symlink(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    blobs = BlobStore(layout)
    digest = parse_digest(sha256(b"m"))
    assert blobs.manifest_media_type("u/links", digest) is None
    assert blobs.link_manifest("u/links", digest, OCI_MANIFEST) is True
    assert blobs.link_manifest("u/links", digest, OCI_MANIFEST) is False
    link = layout.manifest_link("u/links", digest)
    assert link.is_symlink() and os.readlink(link) == OCI_MANIFEST
    # Pushed again with another media type: the link says the latest, and is not "new".
    other = "application/vnd.docker.distribution.manifest.v2+json"
    assert blobs.link_manifest("u/links", digest, other) is False
    assert blobs.manifest_media_type("u/links", digest) == other
    assert [p.name for p in link.parent.iterdir()] == [link.name]  # no temporary left
    assert blobs.unlink_manifest("u/links", digest) is True
    assert blobs.manifest_media_type("u/links", digest) is None

    blobs.ingest_bytes(b"layer", parse_digest(sha256(b"layer")))
    blobs.link_layer("u/links", parse_digest(sha256(b"layer")))
    blobs.link_layer("u/links", parse_digest(sha256(b"layer")))
    layer_link = layout.layer_link("u/links", parse_digest(sha256(b"layer")))
    assert layer_link.is_file() and layer_link.stat().st_size == 0
    assert blobs.has_layer("u/links", parse_digest(sha256(b"layer")))


def test_session_info_is_msgpack_of_repo_and_start(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    upload_id = UploadStore(layout, BlobStore(layout), max_per_repository=2,
                            max_age=60).start("u/info")
    info = msgpack.unpackb(layout.upload_info(upload_id).read_bytes())
    assert info["repo"] == "u/info"
    assert abs(info["started"] - time.time()) < 60


# -- manifests through the real index -------------------------------------------------------


def test_manifest_push_pull_and_tags(storage_api: Api, index_api: Api) -> None:
    body = image(storage_api, "u/man", annotations={
        "org.opencontainers.image.description": "unit image"})
    r = put_manifest(storage_api, "u/man", "v1", body)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    for reference in ("v1", sha256(body)):
        r = storage_api("GET", f"/v2/u/man/manifests/{reference}")
        assert r.status_code == 200
        assert r.content == body
        assert r.headers["Content-Type"] == OCI_MANIFEST
    assert index_api("GET", "/v2/u/man/tags/list").json == {"name": "u/man", "tags": ["v1"]}
    search = index_api("GET", "/v1/search?q=UNIT").json
    assert [r["name"] for r in search["results"]] == ["u/man"]
    r = storage_api("GET", "/v2/u/man/manifests/v2")
    assert (r.status_code, code(r)) == (404, "MANIFEST_UNKNOWN")
    r = storage_api("GET", "/v2/u/nothing/manifests/v1")
    assert (r.status_code, code(r)) == (404, "NAME_UNKNOWN")


def test_manifest_delete_by_digest_removes_tags(storage_api: Api, index_api: Api) -> None:
    body = image(storage_api, "u/del")
    assert put_manifest(storage_api, "u/del", "a", body).status_code == 201
    assert put_manifest(storage_api, "u/del", "b", body).status_code == 201
    assert storage_api("DELETE", f"/v2/u/del/manifests/{sha256(body)}").status_code == 202
    assert index_api("GET", "/v2/u/del/tags/list").json["tags"] == []
    assert storage_api("GET", "/v2/u/del/manifests/a").status_code == 404


def test_manifest_delete_announces_itself_after_the_unlink(storage_root: Path,
                                                          index_url: str) -> None:
    """Caches elsewhere may read the manifest between the index's change (and its
    event) and the unlink; the last announcement must come after the unlink."""
    layout = Layout(storage_root)
    calls: list[tuple[str, bool]] = []

    class Recording(IndexClient):
        def delete_manifest(self, repo: str, digest: str,
                            events: tuple[str, str] | None = None) -> None:
            calls.append(("delete_manifest", os.path.lexists(link)))
            super().delete_manifest(repo, digest, events)

        def repository_changed(self, repo: str) -> None:
            calls.append(("repository_changed", os.path.lexists(link)))
            super().repository_changed(repo)

    index = Recording(RpcClient([index_url], signer=TEST_KEY), fresh_ttl=60, stale_if_error=0)
    api = Api(create_app(storage_config(storage_root, index_url), index=index))
    body = image(api, "u/announce")
    assert put_manifest(api, "u/announce", "v1", body).status_code == 201
    link = layout.manifest_link("u/announce", parse_digest(sha256(body)))
    # lexists: a manifest link is a symlink whose target (a media type) is not a file.
    assert os.path.lexists(link)
    assert api("DELETE", f"/v2/u/announce/manifests/{sha256(body)}").status_code == 202
    assert calls == [("delete_manifest", True), ("repository_changed", False)]


def test_deletes_disabled(storage_root: Path, index_url: str) -> None:
    api = Api(create_app(storage_config(storage_root, index_url,
                                        DOCKYARD_STORAGE_DELETE_ENABLED="false")))
    digest = push_blob(api, "u/nodel", b"x")
    for path in (f"/v2/u/nodel/blobs/{digest}", f"/v2/u/nodel/manifests/{digest}",
                 "/v2/u/nodel/manifests/v1"):
        r = api("DELETE", path)
        assert (r.status_code, code(r)) == (405, "UNSUPPORTED")


def test_index_unreachable(storage_root: Path, index_url: str, dead_url: str) -> None:
    live = Api(create_app(storage_config(storage_root, index_url)))
    dead = Api(create_app(storage_config(storage_root, dead_url)))
    pushed = image(live, "u/down")
    assert put_manifest(live, "u/down", "v1", pushed).status_code == 201

    body = image(live, "u/down")
    r = put_manifest(dead, "u/down", "v2", body)
    assert (r.status_code, code(r)) == (503, "UNAVAILABLE")
    assert r.headers["Retry-After"] == "2"
    digest = parse_digest(sha256(body))
    assert BlobStore(Layout(storage_root)).manifest_media_type("u/down", digest) is None
    # By digest needs no index; by tag does, and this process never resolved it.
    assert dead("GET", f"/v2/u/down/manifests/{sha256(pushed)}").status_code == 200
    assert dead("GET", "/v2/u/down/manifests/v1").status_code == 503
    # Blobs never need the index.
    assert push_blob(dead, "u/down", b"still works")


def test_health_and_metrics(storage_api: Api) -> None:
    assert storage_api("GET", "/healthz").json == {"status": "ok"}
    r = storage_api("GET", "/readyz")
    assert r.status_code == 200
    assert r.json["storage_root_writable"] is True
    storage_api("GET", "/v2/u/x/blobs/" + sha256(b"none"))
    text = storage_api("GET", "/metrics").text
    assert 'dockyard_http_requests_total{method="GET",service="storage",status="404"}' in text
