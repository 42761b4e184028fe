"""What still works while the index cannot do its work.

The index stays up but its Redis is stopped, which is the harder case for the
router (the index answers, with 503s) and one a test can hold for as long as
it needs; the supervisor tests cover the index process itself dying.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Pusher
from tests.integration.helpers import direct, service_url, storage_root
from tests.support.processes import Dockyard, RedisServer
from tests.support.registry_client import RegistryClient, error_code, sha256


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def degraded(fresh_dockyard: Dockyard, own_redis: RedisServer) -> Iterator[Dockyard]:
    fresh_dockyard.env["DOCKYARD_INDEX_REDIS_URL"] = own_redis.url
    fresh_dockyard.start()
    yield fresh_dockyard


def test_registry_without_its_index_database(degraded: Dockyard,
                                             own_redis: RedisServer) -> None:
    client = RegistryClient(degraded.url)
    pusher = Pusher(client)
    name = "degraded/app"
    digest, body = pusher.push(name, "v1", pusher.image(name))
    # The storage service remembers the tags it resolved: this pull fills that cache.
    assert client.get_manifest(name, "v1").status == 200
    # Prepared while the index works: a manifest whose blobs all exist.
    refused = pusher.image(name)

    own_redis.stop()

    # Blobs never need the index: push both ways and pull.
    data = os.urandom(5000)
    blob = client.push_blob(name, data)
    assert client.request("GET", f"/v2/{name}/blobs/{blob}").data == data
    location = client.start_upload(name)
    r = client.request("PUT", f"{location}?digest={sha256(b'chunk')}", body=b"chunk")
    assert r.status == 201, r.data

    # Manifests by digest come from storage alone.
    r = client.get_manifest(name, digest)
    assert r.status == 200
    assert r.data == body
    # By tag: served from the tag cache, since the index cannot answer (stale-if-error).
    r = client.get_manifest(name, "v1")
    assert r.status == 200
    assert r.headers["Docker-Content-Digest"] == digest

    # A push must be refused retryably, and must leave nothing behind.
    r = client.put_manifest(name, "v2", refused)
    assert r.status == 503, r.data
    assert int(r.headers["Retry-After"]) >= 0
    assert error_code(json.loads(r.data)) == "UNAVAILABLE"
    refused_digest = sha256(refused)
    assert client.get_manifest(name, refused_digest).status == 404
    link = (storage_root(degraded) / "repositories" / name / "_manifests" / "sha256"
            / refused_digest[len("sha256:"):])
    assert not os.path.lexists(link)

    # A tag never resolved before cannot be answered: 503, not a wrong 404.
    r = client.get_manifest(name, "never-resolved")
    assert r.status == 503
    assert "Retry-After" in r.headers

    # The index's own endpoints say so, and readiness reports it.
    status, headers, err = client.json("GET", f"/v2/{name}/tags/list")
    assert status == 503
    assert "Retry-After" in headers
    assert error_code(err) == "UNAVAILABLE"
    r = direct("GET", service_url(degraded, "index") + "/readyz")
    assert r.status == 503
    assert json.loads(r.data)["redis"] == "down"
    assert client.request("GET", "/readyz").status == 503

    # Back to normal once Redis is back.
    # Same port and directory; the fixture then stops this process too.
    own_redis.process = RedisServer(own_redis.directory, port=own_redis.port).start().process
    r = client.put_manifest(name, "v2", refused)
    assert r.status == 201, r.data
    status, _, tags = client.json("GET", f"/v2/{name}/tags/list")
    assert tags["tags"] == ["v1", "v2"]
