"""Pull-through of manifests and blobs from a real distribution upstream, with the
cache's storage on a directory and on S3 (`mirror` and `backend` run each test on both)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import urllib3

from tests.integration.helpers import stored_blob
from tests.proxy.conftest import TAG_TTL, pull_sha256, stored_soon
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, error_code
from tests.support.upstream import OCI_MANIFEST, Front, Pusher, sha256


def _name() -> str:
    return f"team/app-{uuid.uuid4().hex[:8]}"


def _pull_fails(client: RegistryClient, path: str, size: int) -> None:
    """The pull ends in an error: a 503 when the bytes failed before the first one
    went out, else a transfer broken off short of its Content-Length."""
    r = client.request("GET", path, preload_content=False)
    if r.status == 503:
        assert error_code(json.loads(r.data)) == "UNAVAILABLE"
        return
    assert r.status == 200
    got = 0
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for chunk in r.stream(65536):
            got += len(chunk)
    assert got < size  # the client never got the whole body


def test_manifest_by_tag_and_digest_and_blobs(client: RegistryClient, pusher: Pusher,
                                              front: Front) -> None:
    name = _name()
    image = pusher.image(name, "v1")
    r = client.get_manifest(f"up/{name}", "v1")
    assert r.status == 200, r.data
    assert r.data == image["manifest"]
    assert r.headers["Docker-Content-Digest"] == image["digest"]
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert "stored" in r.headers["Cache-Status"]
    # By digest: from the cache, without asking the upstream.
    before = front.count("GET", f"/v2/{name}/manifests/")
    r = client.get_manifest(f"up/{name}", image["digest"])
    assert r.status == 200 and r.data == image["manifest"]
    assert r.headers["Cache-Status"] == "dockyard; hit"
    assert front.count("GET", f"/v2/{name}/manifests/") == before
    for digest, data in image["blobs"].items():
        r = client.request("GET", f"/v2/up/{name}/blobs/{digest}")
        assert r.status == 200 and r.data == data and sha256(r.data) == digest
        r = client.request("GET", f"/v2/up/{name}/blobs/{digest}")
        assert r.status == 200 and r.data == data
        assert r.headers["Cache-Status"] == "dockyard; hit"
        assert front.count("GET", f"/v2/{name}/blobs/{digest}") == 1
    # The cached manifest is recorded like a pushed one: in the tag list.
    status, _, body = client.json("GET", f"/v2/up/{name}/tags/list")
    assert status == 200 and body["tags"] == ["v1"]


def test_docker_hub_library_rule(tmp_path, upstream, pusher: Pusher) -> None:
    from tests.proxy.conftest import proxy_dockyard

    image = pusher.image("library/tool", "1.0")
    server = proxy_dockyard(tmp_path, [{"prefix": "hub", "url": upstream.url,
                                        "docker_hub": True}]).start()
    try:
        r = RegistryClient(server.url).get_manifest("hub/tool", "1.0")
        assert r.status == 200 and r.data == image["manifest"]
    finally:
        server.stop()


def test_tag_moved_upstream_is_seen_after_the_ttl_and_not_before(
        client: RegistryClient, pusher: Pusher, front: Front) -> None:
    name = _name()
    first = pusher.image(name, "latest")
    r = client.get_manifest(f"up/{name}", "latest")
    assert r.headers["Docker-Content-Digest"] == first["digest"]
    second = pusher.image(name, "latest")
    heads = front.count("HEAD", f"/v2/{name}/manifests/latest")
    deadline = time.monotonic() + TAG_TTL * 0.5
    while time.monotonic() < deadline:
        r = client.get_manifest(f"up/{name}", "latest")
        assert r.headers["Docker-Content-Digest"] == first["digest"]
        time.sleep(0.1)
    # Within the TTL the upstream was not asked again.
    assert front.count("HEAD", f"/v2/{name}/manifests/latest") == heads
    time.sleep(TAG_TTL)
    r = client.get_manifest(f"up/{name}", "latest")
    assert r.status == 200
    assert r.headers["Docker-Content-Digest"] == second["digest"]
    assert r.data == second["manifest"]
    assert front.count("HEAD", f"/v2/{name}/manifests/latest") == heads + 1


def test_unknown_upstream_manifest_and_blob_are_404(client: RegistryClient) -> None:
    status, _, body = client.json("GET", f"/v2/up/{_name()}/manifests/nope")
    assert status == 404 and error_code(body) == "MANIFEST_UNKNOWN"
    status, _, body = client.json("GET", f"/v2/up/{_name()}/blobs/{sha256(b'none')}")
    assert status == 404 and error_code(body) == "BLOB_UNKNOWN"


def test_pushes_and_deletes_to_a_mirrored_repository_are_refused(
        client: RegistryClient, pusher: Pusher) -> None:
    name = _name()
    image = pusher.image(name, "v1")
    status, _, body = client.json("POST", f"/v2/up/{name}/blobs/uploads/")
    assert status == 405 and error_code(body) == "UNSUPPORTED"
    assert "pull-through cache" in body["errors"][0]["message"]
    r = client.put_manifest(f"up/{name}", "v2", image["manifest"])
    assert r.status == 405
    assert client.get_manifest(f"up/{name}", "v1").status == 200
    r = client.request("DELETE", f"/v2/up/{name}/manifests/{image['digest']}")
    assert r.status == 405
    # The rest of the registry works as usual.
    digest, _ = client.push_image(f"local/{uuid.uuid4().hex[:8]}", "v1")
    assert digest.startswith("sha256:")


def test_concurrent_pulls_of_one_uncached_blob_fetch_it_once(
        mirror: Dockyard, client: RegistryClient, pusher: Pusher, front: Front) -> None:
    name = _name()
    data = os.urandom(64 * 1024 * 1024)
    digest = pusher.blob(name, data)
    expected = hashlib.sha256(data).hexdigest()
    del data
    front.delay = 0.5  # all 16 ask while the first fetch is under way

    def pull(_: int) -> str:
        return pull_sha256(f"{client.base}/v2/up/{name}/blobs/{digest}")[0]

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(pull, range(16)))
    finally:
        front.delay = 0.0
    assert results == [expected] * 16
    assert front.count("GET", f"/v2/{name}/blobs/{digest}") == 1
    # Stored once, whole: the next pull is a hit.
    assert hashlib.sha256(stored_soon(mirror, digest)).hexdigest() == expected
    r = client.request("GET", f"/v2/up/{name}/blobs/{digest}", preload_content=False)
    assert r.status == 200 and r.headers["Cache-Status"] == "dockyard; hit"
    r.release_conn()
    assert front.count("GET", f"/v2/{name}/blobs/{digest}") == 1


@pytest.mark.parametrize("fault", ["corrupt_blobs", "truncate_blobs"])
def test_bad_bytes_from_the_upstream_are_never_served_or_stored(
        mirror: Dockyard, client: RegistryClient, pusher: Pusher, front: Front,
        fault: str) -> None:
    """A corrupting upstream, and one that breaks off mid-blob."""
    name = _name()
    data = os.urandom(3 * 1024 * 1024)
    digest = pusher.blob(name, data)
    setattr(front, fault, True)
    try:
        for _ in range(2):
            _pull_fails(client, f"/v2/up/{name}/blobs/{digest}", len(data))
    finally:
        setattr(front, fault, False)
    assert front.count("GET", f"/v2/{name}/blobs/{digest}") == 2
    assert stored_blob(mirror, digest) is None
    # Nothing was stored: the next pull fetches again and gets the right bytes.
    r = client.request("GET", f"/v2/up/{name}/blobs/{digest}")
    assert r.status == 200 and r.data == data
    assert front.count("GET", f"/v2/{name}/blobs/{digest}") == 3
    assert stored_soon(mirror, digest) == data


def test_a_manifest_that_fails_verification_is_not_stored(
        client: RegistryClient, pusher: Pusher) -> None:
    name = _name()
    image = pusher.image(name, "v1")
    wrong = sha256(image["manifest"] + b" ")
    status, _, body = client.json("GET", f"/v2/up/{name}/manifests/{wrong}")
    # distribution has no such manifest: its 404 is passed on.
    assert status == 404, body
    assert json.loads(client.get_manifest(f"up/{name}", "v1").data)["schemaVersion"] == 2


def test_cached_manifests_not_pulled_within_max_age_are_evicted(
        tmp_path, upstream, pusher: Pusher, backend: dict[str, str]) -> None:
    from tests.proxy.conftest import proxy_dockyard

    name = _name()
    image = pusher.image(name, "v1")
    config_dir = tmp_path
    server = proxy_dockyard(config_dir, [{"prefix": "old", "url": upstream.url,
                                          "max_age": 1}], env=backend)
    text = json.loads(server.config.read_text())
    text["proxy"]["eviction_interval"] = 1
    server.config.write_text(json.dumps(text))
    server.start()
    try:
        client = RegistryClient(server.url)
        assert client.get_manifest(f"old/{name}", "v1").status == 200
        status, _, body = client.json("GET", f"/v2/old/{name}/tags/list")
        assert status == 200 and body["tags"] == ["v1"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, _, body = client.json("GET", f"/v2/old/{name}/tags/list")
            if status == 404 or not body.get("tags"):
                break
            time.sleep(0.5)
        assert status == 404 or not body.get("tags"), body
        assert "evicted the cached manifest" in server.log_text()
        # Pulled again, it comes back from the upstream.
        r = client.get_manifest(f"old/{name}", "v1")
        assert r.status == 200 and r.data == image["manifest"]
    finally:
        server.stop()


def test_cached_images_are_in_the_catalog_and_search_marked_as_cached(
        client: RegistryClient, pusher: Pusher, front: Front) -> None:
    name = _name()
    pusher.image(name, "v1")
    assert client.get_manifest(f"up/{name}", "v1").status == 200
    status, _, body = client.json("GET", "/v2/_catalog?n=1000")
    assert status == 200 and f"up/{name}" in body["repositories"]
    host = front.url.split("://")[1]
    deadline = time.monotonic() + 15
    found: list = []
    while time.monotonic() < deadline and not found:
        status, _, body = client.json("GET", f"/v1/search?q={name.split('/')[1]}")
        assert status == 200
        found = [r for r in body["results"] if r["name"] == f"up/{name}"]
        time.sleep(0.3)
    assert found and found[0]["description"] == f"cached from {host}/{name}", body


def test_metrics_count_hits_misses_and_bytes_saved(mirror, client: RegistryClient,
                                                   pusher: Pusher) -> None:
    import re

    from tests.integration.helpers import direct, service_url

    def sample(text: str, metric: str, labels: str) -> float:
        """The sample whose labels are exactly `labels`, in whatever order they print."""
        wanted = set(labels.split(","))
        for m in re.finditer(rf"^{metric}\{{([^}}]*)\}} (\S+)$", text, re.M):
            if set(m.group(1).split(",")) == wanted:
                return float(m.group(2))
        return 0.0

    def metrics() -> str:
        return direct("GET", service_url(mirror, "storage") + "/metrics").data.decode()

    name = _name()
    image = pusher.image(name, "v1", layers=[os.urandom(10_000)])
    digest, data = next(iter(image["blobs"].items()))
    before = metrics()
    assert client.get_manifest(f"up/{name}", "v1").status == 200
    for _ in range(3):
        assert client.request("GET", f"/v2/up/{name}/blobs/{digest}").data == data
    after = metrics()
    hit = 'kind="blob",result="hit",upstream="up"'
    miss = 'kind="blob",result="miss",upstream="up"'
    assert sample(after, "dockyard_proxy_requests_total", miss) - sample(
        before, "dockyard_proxy_requests_total", miss) == 1
    assert sample(after, "dockyard_proxy_requests_total", hit) - sample(
        before, "dockyard_proxy_requests_total", hit) == 2
    saved = 'upstream="up"'
    assert sample(after, "dockyard_proxy_bytes_saved_total", saved) - sample(
        before, "dockyard_proxy_bytes_saved_total", saved) == 2 * len(data)
    assert "dockyard_proxy_upstream_seconds_count" in after


def test_a_digest_stored_for_another_repository_is_not_a_key_to_it(
        client: RegistryClient, pusher: Pusher, front: Front) -> None:
    private = f"private/{uuid.uuid4().hex[:8]}"
    digest, data = client.random_blob(private, 2048)
    # The upstream has no such blob under this name: not served from the local copy.
    status, _, body = client.json("GET", f"/v2/up/{_name()}/blobs/{digest}")
    assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
    # Where the upstream has it, the local copy is linked without a second fetch.
    name = _name()
    pusher.blob(name, data)
    r = client.request("GET", f"/v2/up/{name}/blobs/{digest}")
    assert r.status == 200 and r.data == data
    assert front.count("HEAD", f"/v2/{name}/blobs/{digest}") == 1
    assert front.count("GET", f"/v2/{name}/blobs/{digest}") == 0
