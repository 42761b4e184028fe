"""A real `docker push` and `docker pull` against a dockyard with a webhook endpoint:
the events arrive in the order the client made them, with the digests and tag of
what was stored, in distribution's envelope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.support.processes import Dockyard
from tests.support.webhook_receiver import Receiver, write_config

from .daemons import DockerDaemon
from .docker_helpers import load, push, remove
from .images import ImageFactory

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def hooked(e2e_root: Path) -> Iterator[tuple[Dockyard, Receiver]]:
    receiver = Receiver().start()
    config = write_config(e2e_root / "webhooks.yml",
                          [{"name": "e2e", "url": receiver.url, "timeout": 2}],
                          manifest_pull=True, blob_push=True, blob_pull=True, claim_idle=5)
    server = Dockyard(e2e_root / "webhooks-data", config=config).start()
    try:
        yield server, receiver
    finally:
        server.stop()
        receiver.stop()


def test_docker_push_and_pull_events(hooked: tuple[Dockyard, Receiver], docker: DockerDaemon,
                                     images: ImageFactory) -> None:
    server, receiver = hooked
    repo = "e2e/webhooks"
    ref = f"{server.addr}/{repo}:v1"
    image = images.image("webhooks", own_tool_layer=True)
    load(docker, images.docker_archive(image, [ref]))
    pushed = push(docker, ref)

    stored = json.loads(urllib3.request(
        "GET", f"{server.url}/v2/{repo}/manifests/{pushed.digest}",
        headers={"Accept": DOCKER_MANIFEST}).data)
    blobs = {d["digest"]: d["size"] for d in [stored["config"], *stored["layers"]]}
    # The manifest GET above is a pull too; the push's events come before it.
    events = receiver.wait_for(len(blobs) + 2, 30)
    pushes = [e for e in events if e["action"] == "push"]
    assert [e["target"]["digest"] for e in pushes[:-1]] and \
        {e["target"]["digest"] for e in pushes[:-1]} == set(blobs)
    for e in pushes[:-1]:
        assert e["target"]["size"] == blobs[e["target"]["digest"]]
        assert e["target"]["mediaType"] == "application/octet-stream"
        assert e["request"]["useragent"].startswith("docker/")
    manifest = pushes[-1]
    assert manifest["target"]["digest"] == pushed.digest
    assert manifest["target"]["tag"] == "v1"
    assert manifest["target"]["mediaType"] == DOCKER_MANIFEST
    assert manifest["target"]["repository"] == repo
    # In order: every blob before the manifest that names it.
    assert events.index(manifest) == len(blobs)

    remove(docker, ref)
    before = len(receiver.delivered())
    docker.docker("pull", ref)
    pulled = receiver.wait_for(before + len(blobs), 30)[before:]
    manifest_pulls = [e for e in pulled if e["target"].get("mediaType") == DOCKER_MANIFEST]
    # docker resolves the tag with a HEAD (no event) and GETs the manifest by digest.
    assert manifest_pulls and manifest_pulls[0]["target"]["digest"] == pushed.digest
    assert manifest_pulls[0]["target"].get("tag") in (None, "v1")
    assert all(e["action"] == "pull" for e in pulled)
    blob_pulls = {e["target"]["digest"] for e in pulled if e not in manifest_pulls}
    assert blob_pulls == set(blobs)
    remove(docker, ref)
