"""Manifests through the router: the four formats and artifacts, validation, pulls,
content negotiation, deletes and concurrent tag updates."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from tests.integration.conftest import Pusher
from tests.integration.helpers import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    public_location,
    raw_request,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, error_code, sha256

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}


def index_of(children: list[tuple[str, bytes, dict]], media_type: str = OCI_INDEX,
             child_type: str = OCI_MANIFEST, **fields: object) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "manifests": [{"mediaType": child_type, "digest": d, "size": len(b), "platform": p}
                      for d, b, p in children],
        **fields,
    }).encode()


def assert_pullable(client: RegistryClient, name: str, reference: str, body: bytes,
                    media_type: str) -> None:
    digest = sha256(body)
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/v2/{name}/manifests/{reference}",
                           headers={"Accept": media_type})
        assert r.status == 200, (method, r.status, r.data)
        assert r.headers["Content-Type"] == media_type
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Content-Length"] == str(len(body))
        assert r.headers["ETag"].strip('"') == digest
        assert r.data == (body if method == "GET" else b"")


# -- the formats ---------------------------------------------------------------------------


def test_put_oci_manifest(client: RegistryClient, dockyard: Dockyard, pusher: Pusher,
                          repo: str) -> None:
    body = pusher.image(repo)
    r = client.put_manifest(repo, "v1", body)
    assert r.status == 201, r.data
    digest = sha256(body)
    assert r.headers["Docker-Content-Digest"] == digest
    assert public_location(r.headers["Location"], dockyard.addr) == (
        f"/v2/{repo}/manifests/{digest}")
    assert "OCI-Subject" not in r.headers
    assert_pullable(client, repo, "v1", body, OCI_MANIFEST)
    assert_pullable(client, repo, digest, body, OCI_MANIFEST)


def test_put_oci_index(client: RegistryClient, pusher: Pusher, repo: str) -> None:
    amd = pusher.push(repo, sha256(b := pusher.image(repo)), b)
    arm = pusher.push(repo, sha256(c := pusher.image(repo)), c)
    body = index_of([(amd[0], amd[1], AMD64), (arm[0], arm[1], ARM64)])
    r = client.put_manifest(repo, "multi", body, OCI_INDEX)
    assert r.status == 201, r.data
    assert_pullable(client, repo, "multi", body, OCI_INDEX)


def test_put_docker_v2s2_and_manifest_list(client: RegistryClient, pusher: Pusher,
                                           repo: str) -> None:
    image = pusher.image(repo, media_type=DOCKER_MANIFEST, config_type=DOCKER_CONFIG,
                         layer_type=DOCKER_LAYER)
    digest, _ = pusher.push(repo, "docker", image, DOCKER_MANIFEST)
    assert_pullable(client, repo, "docker", image, DOCKER_MANIFEST)
    listing = index_of([(digest, image, AMD64)], media_type=DOCKER_LIST,
                       child_type=DOCKER_MANIFEST)
    pusher.push(repo, "list", listing, DOCKER_LIST)
    assert_pullable(client, repo, "list", listing, DOCKER_LIST)


def test_put_artifacts(client: RegistryClient, pusher: Pusher, repo: str) -> None:
    empty = b"{}"
    empty_digest = client.push_blob(repo, empty)
    layer = pusher.layer(repo, media_type="application/vnd.example.sbom+json")
    # An artifact with artifactType and the empty config...
    with_type = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": OCI_EMPTY, "digest": empty_digest, "size": 2},
        "layers": [layer],
    }).encode()
    pusher.push(repo, "sbom", with_type)
    assert_pullable(client, repo, "sbom", with_type, OCI_MANIFEST)
    # ...and the older style: the config's media type says what the artifact is.
    config = json.dumps({"signature": os.urandom(4).hex()}).encode()
    config_digest = client.push_blob(repo, config)
    by_config = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.sig.config+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [layer],
    }).encode()
    pusher.push(repo, "sig", by_config)
    assert_pullable(client, repo, "sig", by_config, OCI_MANIFEST)


def test_put_with_subject_answers_oci_subject(client: RegistryClient, pusher: Pusher,
                                              repo: str) -> None:
    subject_digest, subject = pusher.push(repo, "base", pusher.image(repo))
    body = pusher.image(repo, artifactType="application/vnd.example.note",
                        subject={"mediaType": OCI_MANIFEST, "digest": subject_digest,
                                 "size": len(subject)})
    r = client.put_manifest(repo, sha256(body), body)
    assert r.status == 201, r.data
    assert r.headers["OCI-Subject"] == subject_digest


def test_put_by_digest(client: RegistryClient, pusher: Pusher, repo: str) -> None:
    body = pusher.image(repo)
    r = client.put_manifest(repo, sha256(body), body)
    assert r.status == 201
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    sha512 = "sha512:" + hashlib.sha512(body).hexdigest()
    r = client.put_manifest(repo, sha512, body)
    assert r.status == 201, r.data
    assert r.headers["Docker-Content-Digest"] == sha512
    assert client.get_manifest(repo, sha512).data == body


def test_content_type_may_be_omitted_when_media_type_is_in_the_body(
        client: RegistryClient, pusher: Pusher, repo: str) -> None:
    body = pusher.image(repo)
    r = client.request("PUT", f"/v2/{repo}/manifests/plain", body=body)
    assert r.status == 201, r.data
    assert client.get_manifest(repo, "plain").headers["Content-Type"] == OCI_MANIFEST


# -- refused pushes ------------------------------------------------------------------------


def assert_refused(r: object, status: int, code: str) -> dict:
    body = json.loads(r.data)  # type: ignore[attr-defined]
    assert r.status == status, body  # type: ignore[attr-defined]
    assert error_code(body) == code
    return body["errors"][0]


def test_media_type_and_content_type_disagree(client: RegistryClient, pusher: Pusher,
                                              repo: str) -> None:
    body = pusher.image(repo)
    r = client.put_manifest(repo, "x", body, DOCKER_MANIFEST)
    assert_refused(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("body", [
    b"{not json", b"", b"[]", b'"a string"', b"\xff\xfe\x00",
    b'{"schemaVersion": 1, "mediaType": "' + OCI_MANIFEST.encode() + b'"}',
    b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "layers": []}',
    b'{"schemaVersion": 2, "mediaType": "application/vnd.unknown+json"}',
    # Nesting deep enough to exhaust a recursive parser must be refused, not crash.
    b"[" * 200_000 + b"]" * 200_000,
])
def test_invalid_manifest_is_manifest_invalid(client: RegistryClient, repo: str,
                                              body: bytes) -> None:
    client.random_blob(repo, 8)
    r = client.put_manifest(repo, "bad", body)
    assert_refused(r, 400, "MANIFEST_INVALID")
    assert client.get_manifest(repo, "bad").status == 404


def test_missing_blob_is_manifest_blob_unknown(client: RegistryClient, pusher: Pusher,
                                               repo: str, other_repo: str) -> None:
    doc = json.loads(pusher.image(repo))
    missing = sha256(os.urandom(16))
    doc["layers"].append({"mediaType": "application/octet-stream", "digest": missing,
                          "size": 16})
    r = client.put_manifest(repo, "v1", json.dumps(doc).encode())
    error = assert_refused(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert missing in json.dumps(error["detail"])
    # A blob of another repository does not count either.
    digest, _ = client.random_blob(other_repo, 16)
    doc["layers"][-1]["digest"] = digest
    r = client.put_manifest(repo, "v1", json.dumps(doc).encode())
    error = assert_refused(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert digest in json.dumps(error["detail"])


def test_index_with_missing_manifest_is_manifest_blob_unknown(
        client: RegistryClient, pusher: Pusher, repo: str) -> None:
    present = pusher.push(repo, sha256(b := pusher.image(repo)), b)
    missing = sha256(os.urandom(16))
    body = index_of([(present[0], present[1], AMD64), (missing, b"x" * 10, ARM64)])
    error = assert_refused(client.put_manifest(repo, "multi", body, OCI_INDEX), 400,
                           "MANIFEST_BLOB_UNKNOWN")
    assert missing in json.dumps(error["detail"])


def test_manifest_over_4_mib_is_refused(client: RegistryClient, pusher: Pusher,
                                        repo: str) -> None:
    doc = json.loads(pusher.image(repo))
    doc["annotations"] = {"padding": "x" * (4 * 1024 * 1024 + 1)}
    r = client.put_manifest(repo, "huge", json.dumps(doc).encode())
    assert r.status in (413, 400), r.status
    assert error_code(json.loads(r.data)) == "MANIFEST_INVALID"


def test_put_by_digest_that_does_not_match(client: RegistryClient, pusher: Pusher,
                                           repo: str) -> None:
    body = pusher.image(repo)
    wrong = sha256(body + b" ")
    r = client.put_manifest(repo, wrong, body)
    assert r.status == 400
    assert error_code(json.loads(r.data)) in ("DIGEST_INVALID", "MANIFEST_INVALID")
    assert client.get_manifest(repo, wrong).status == 404
    assert client.get_manifest(repo, sha256(body)).status == 404


@pytest.mark.parametrize("reference", ["-dash", "." + "x", "a" * 129, "sha256:abc",
                                       "md5:" + "0" * 32, "sha256:" + "Z" * 64])
def test_put_with_malformed_reference_is_400(client: RegistryClient, pusher: Pusher,
                                             repo: str, reference: str) -> None:
    r = client.put_manifest(repo, reference, pusher.image(repo))
    assert r.status == 400, r.data
    assert error_code(json.loads(r.data)) in ("MANIFEST_INVALID", "DIGEST_INVALID",
                                              "TAG_INVALID")


def test_put_to_invalid_name_is_name_invalid(client: RegistryClient) -> None:
    r = client.put_manifest("Bad/Name", "v1", b"{}")
    assert_refused(r, 400, "NAME_INVALID")


# -- pulls ---------------------------------------------------------------------------------


def test_unknown_tag_and_digest_are_manifest_unknown(client: RegistryClient, pusher: Pusher,
                                                     repo: str) -> None:
    pusher.push(repo, "v1", pusher.image(repo))
    for reference in ("nope", sha256(os.urandom(8))):
        for method in ("GET", "HEAD"):
            r = client.request(method, f"/v2/{repo}/manifests/{reference}")
            assert r.status == 404, (method, reference)
        _status, _, body = client.json("GET", f"/v2/{repo}/manifests/{reference}")
        assert error_code(body) == "MANIFEST_UNKNOWN"


def test_unknown_repository_is_name_unknown(client: RegistryClient, repo: str) -> None:
    for reference in ("latest", sha256(os.urandom(8))):
        status, _, body = client.json("GET", f"/v2/{repo}/manifests/{reference}")
        assert status == 404
        assert error_code(body) == "NAME_UNKNOWN"


@pytest.mark.parametrize("reference", ["-dash", "a" * 129, "sha256:abc", "sha256:",
                                       "md5:" + "0" * 32, "tag%20space", "%00"])
def test_pull_with_malformed_reference_is_404(client: RegistryClient, pusher: Pusher,
                                              repo: str, reference: str) -> None:
    """No manifest can have such a reference: reads and deletes are the spec's 404 (only a
    PUT refuses it with a 400, see test_put_with_malformed_reference_is_400)."""
    pusher.push(repo, "v1", pusher.image(repo))
    for method in ("GET", "HEAD", "DELETE"):
        r = client.request(method, f"/v2/{repo}/manifests/{reference}")
        assert r.status == 404, (method, reference, r.status, r.data)
        if method != "HEAD":
            assert error_code(json.loads(r.data)) == "MANIFEST_UNKNOWN"


def accept_cases() -> list[list[tuple[str, str]]]:
    both = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]
    return [
        [("Accept", t) for t in both],           # one line per type, as docker sends
        [("Accept", ", ".join(both))],           # one comma-joined line
        [("Accept", f"{OCI_MANIFEST};q=0.5"), ("Accept", f"{OCI_INDEX}; q=0.9")],
    ]


@pytest.mark.parametrize("lines", accept_cases())
def test_accept_naming_index_types_gets_the_index(
        dockyard: Dockyard, pusher: Pusher, repo: str, lines: list[tuple[str, str]]) -> None:
    amd = pusher.push(repo, sha256(b := pusher.image(repo)), b)
    body = index_of([(amd[0], amd[1], AMD64)])
    pusher.push(repo, "multi", body, OCI_INDEX)
    status, headers, data = raw_request(dockyard.url, "GET", f"/v2/{repo}/manifests/multi",
                                        lines)
    assert status == 200
    assert headers["Content-Type"] == OCI_INDEX
    assert data == body


@pytest.mark.parametrize("lines", [
    [("Accept", OCI_MANIFEST), ("Accept", DOCKER_MANIFEST)],
    [("Accept", f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")],
])
def test_accept_of_image_types_only_gets_linux_amd64(
        dockyard: Dockyard, pusher: Pusher, repo: str, lines: list[tuple[str, str]]) -> None:
    arm = pusher.push(repo, sha256(b := pusher.image(repo)), b)
    amd = pusher.push(repo, sha256(c := pusher.image(repo)), c)
    pusher.push(repo, "multi", index_of([(arm[0], arm[1], ARM64), (amd[0], amd[1], AMD64)]),
                OCI_INDEX)
    status, headers, data = raw_request(dockyard.url, "GET", f"/v2/{repo}/manifests/multi",
                                        lines)
    assert status == 200
    assert headers["Content-Type"] == OCI_MANIFEST
    assert headers["Docker-Content-Digest"] == amd[0]
    assert data == amd[1]


def test_if_none_match_answers_304(client: RegistryClient, pusher: Pusher, repo: str) -> None:
    digest, _ = pusher.push(repo, "v1", pusher.image(repo))
    r = client.request("GET", f"/v2/{repo}/manifests/v1",
                       headers={"If-None-Match": f'"{digest}"', "Accept": OCI_MANIFEST})
    assert r.status == 304
    assert r.data == b""


# -- deletes -------------------------------------------------------------------------------


def test_delete_by_digest_removes_the_manifest_and_its_tags(
        client: RegistryClient, pusher: Pusher, repo: str) -> None:
    body = pusher.image(repo)
    digest, _ = pusher.push(repo, "a", body)
    pusher.push(repo, "b", body)
    keep, _ = pusher.push(repo, "keep", pusher.image(repo))
    r = client.request("DELETE", f"/v2/{repo}/manifests/{digest}")
    assert r.status == 202
    for reference in (digest, "a", "b"):
        status, _, err = client.json("GET", f"/v2/{repo}/manifests/{reference}")
        assert status == 404, reference
        assert error_code(err) == "MANIFEST_UNKNOWN"
    status, _, tags = client.json("GET", f"/v2/{repo}/tags/list")
    assert tags["tags"] == ["keep"]
    assert client.get_manifest(repo, keep).status == 200
    status, _, err = client.json("DELETE", f"/v2/{repo}/manifests/{digest}")
    assert status == 404
    assert error_code(err) == "MANIFEST_UNKNOWN"


def test_delete_by_tag_removes_only_the_tag(client: RegistryClient, pusher: Pusher,
                                            repo: str) -> None:
    body = pusher.image(repo)
    digest, _ = pusher.push(repo, "a", body)
    pusher.push(repo, "b", body)
    r = client.request("DELETE", f"/v2/{repo}/manifests/a")
    assert r.status == 202
    status, _, err = client.json("GET", f"/v2/{repo}/manifests/a")
    assert status == 404
    assert error_code(err) == "MANIFEST_UNKNOWN"
    assert client.get_manifest(repo, digest).data == body
    assert client.get_manifest(repo, "b").data == body
    status, _, err = client.json("DELETE", f"/v2/{repo}/manifests/a")
    assert status == 404
    assert error_code(err) == "MANIFEST_UNKNOWN"


# -- concurrency ---------------------------------------------------------------------------


def test_sixteen_concurrent_puts_to_one_tag(client: RegistryClient, pusher: Pusher,
                                            repo: str) -> None:
    bodies = [pusher.image(repo) for _ in range(16)]
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16, timeout=30)

    def put(body: bytes) -> None:
        barrier.wait()
        r = client.put_manifest(repo, "race", body)
        with lock:
            statuses.append(r.status)

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert statuses == [201] * 16
    r = client.get_manifest(repo, "race")
    assert r.status == 200
    assert r.data in bodies
    assert r.headers["Docker-Content-Digest"] == sha256(r.data)
    # Every one of them stays pullable by digest.
    for body in bodies:
        assert client.get_manifest(repo, sha256(body)).status == 200


def test_names_that_look_like_routes(client: RegistryClient, pusher: Pusher, repo: str) -> None:
    # Names may contain the words of the URL grammar; every route must still split right.
    for suffix in ("blobs", "blobs/uploads", "manifests", "tags/list", "referrers"):
        name = f"{repo}/{suffix}"
        _, body = pusher.push(name, "v1", pusher.image(name))
        assert client.get_manifest(name, "v1").data == body
        status, _, tags = client.json("GET", f"/v2/{name}/tags/list")
        assert (status, tags) == (200, {"name": name, "tags": ["v1"]})
        location = client.start_upload(name)
        r = client.request("PUT", f"{location}?digest={sha256(b'z')}", body=b"z")
        assert r.status == 201, (name, r.data)
        assert client.request("GET", f"/v2/{name}/blobs/{sha256(b'z')}").data == b"z"


def test_manifest_put_with_chunked_body(client: RegistryClient, pusher: Pusher,
                                        repo: str) -> None:
    body = pusher.image(repo)
    r = client.request("PUT", f"/v2/{repo}/manifests/v1", body=iter([body[:10], body[10:]]),
                       chunked=True, headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 201, r.data
    assert client.get_manifest(repo, "v1").data == body
