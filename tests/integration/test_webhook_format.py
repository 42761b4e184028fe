"""dockyard's webhook events beside those of the reference registry (Debian's
docker-registry, distribution 2.8): the same pushes, pulls, mounts and deletes
against both, and the envelopes compared field by field."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST
from tests.support.processes import Dockyard, free_port, have, wait_http
from tests.support.registry_client import RegistryClient, sha256
from tests.support.webhook_receiver import Receiver, write_config

pytestmark = pytest.mark.skipif(not have("docker-registry"), reason="needs docker-registry")

REFERENCE = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
notifications:
  endpoints:
    - name: test
      url: {url}
      timeout: 2s
      threshold: 5
      backoff: 100ms
"""


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("format")
    ref_hook, our_hook = Receiver().start(), Receiver().start()
    port = free_port()
    (work / "ref.yml").write_text(REFERENCE.format(root=work / "ref", port=port,
                                                   url=ref_hook.url))
    with open(work / "ref.log", "wb") as log:
        ref = subprocess.Popen(["docker-registry", "serve", str(work / "ref.yml")],
                               stdout=log, stderr=subprocess.STDOUT)
    ours = Dockyard(work / "data", config=write_config(
        work / "ours.yml", [{"name": "test", "url": our_hook.url}],
        manifest_pull=True, blob_push=True, blob_pull=True))
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")
        ours.start()
        yield {"ref": (RegistryClient(f"http://127.0.0.1:{port}"), ref_hook),
               "ours": (RegistryClient(ours.url), our_hook)}
    finally:
        ours.stop()
        ref.terminate()
        ref.wait(10)
        ref_hook.stop()
        our_hook.stop()


def _shape(value: Any) -> Any:
    """Field names in order, recursively, with values reduced to their types."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    return type(value).__name__


def _upload(client: RegistryClient, name: str, data: bytes) -> None:
    """POST then PUT with the bytes: the upload every registry supports."""
    location = client.start_upload(name)
    sep = "&" if "?" in location else "?"
    r = client.request("PUT", f"{location}{sep}digest={sha256(data)}", body=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, (r.status, r.data)


def _scenario(client: RegistryClient, hook: Receiver) -> list[dict[str, Any]]:
    """One of each event both registries emit, waiting for each before the next, so
    that the order is the same on both sides."""
    def step(count: int, action: Any) -> None:
        before = len(hook.delivered())
        action()
        hook.wait_for(before + count, 15)

    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = b"format-test-layer" * 10
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    step(1, lambda: _upload(client, "fmt/app", config))
    step(1, lambda: _upload(client, "fmt/app", layer))
    step(1, lambda: client.put_manifest("fmt/app", "v1", manifest, DOCKER_MANIFEST))
    step(1, lambda: client.get_manifest("fmt/app", "v1", accept=DOCKER_MANIFEST))
    step(1, lambda: client.request("GET", f"/v2/fmt/app/blobs/{sha256(layer)}"))
    step(1, lambda: client.request(
        "POST", f"/v2/fmt/copy/blobs/uploads/?mount={sha256(layer)}&from=fmt/app"))
    step(1, lambda: client.request("DELETE", f"/v2/fmt/app/manifests/{sha256(manifest)}"))
    time.sleep(0.5)  # anything more either side sends
    return hook.delivered()


def test_same_events_as_distribution(both: dict[str, Any]) -> None:
    ref = _scenario(*both["ref"])
    ours = _scenario(*both["ours"])
    assert [(e["action"], e["target"].get("mediaType")) for e in ours] == \
        [(e["action"], e["target"].get("mediaType")) for e in ref]
    for r, o in zip(ref, ours, strict=True):
        assert _shape(o) == _shape(r), (o, r)
        for key in ("mediaType", "size", "digest", "length", "repository", "tag",
                    "fromRepository"):
            assert o["target"].get(key) == r["target"].get(key), (key, o, r)
        # The same path on each registry's own address.
        assert o["target"].get("url", "").split("/v2/")[-1] == \
            r["target"].get("url", "").split("/v2/")[-1]
        assert o["request"]["method"] == r["request"]["method"]
        assert o["request"]["useragent"] == r["request"]["useragent"]
        assert o["actor"] == r["actor"] == {}
        # Event ids are UUIDs, each its own (the tag deletes a manifest delete makes too).
        assert uuid.UUID(o["id"]) and uuid.UUID(r["id"])
    assert len({e["id"] for e in ours}) == len(ours)


def test_same_headers_as_distribution(both: dict[str, Any]) -> None:
    for side in ("ref", "ours"):
        _, hook = both[side]
        if not hook.posts:
            _scenario(*both[side])
    ref_post, our_post = both["ref"][1].posts[0], both["ours"][1].posts[0]
    assert our_post.headers["Content-Type"] == ref_post.headers["Content-Type"] == \
        "application/vnd.docker.distribution.events.v1+json"
    assert our_post.path == ref_post.path == "/hook"
