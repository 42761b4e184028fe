"""Storage's tag cache: served without the index while tag events are live, and
dropped by a tag change that another storage process made."""

from __future__ import annotations

import time

from shared.rpc import RpcClient
from tests.integration.helpers import service_url, wait_until
from tests.support.processes import Dockyard
from tests.support.registry_client import OCI_MANIFEST, RegistryClient, sha256


def _resolve_calls(dockyard: Dockyard) -> int:
    return dockyard.log_text().count("POST /internal/rpc/resolve_tag")


def test_cached_tag_is_served_without_asking_the_index(dockyard: Dockyard,
                                                       client: RegistryClient,
                                                       repo: str) -> None:
    digest, _ = client.push_image(repo, "v1")
    assert client.get_manifest(repo, "v1").status == 200
    # Log lines are written after the response; give the first one a moment.
    time.sleep(0.2)
    before = _resolve_calls(dockyard)
    for _ in range(5):
        r = client.get_manifest(repo, "v1")
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == digest
    time.sleep(0.2)
    assert _resolve_calls(dockyard) == before


def test_tag_moved_elsewhere_is_seen_at_once(dockyard: Dockyard, client: RegistryClient,
                                             repo: str) -> None:
    first, _ = client.push_image(repo, "moving")
    assert client.get_manifest(repo, "moving").headers["Docker-Content-Digest"] == first
    # A second manifest, stored by digest only: no tag change yet.
    body = client.image_manifest(repo)
    r = client.put_manifest(repo, sha256(body), body)
    assert r.status == 201
    second = r.headers["Docker-Content-Digest"]

    # Another storage process would move the tag with this very call.
    index = RpcClient([service_url(dockyard, "index")], signer=dockyard.service_key())
    index.call("put_manifest", {
        "repo": repo, "digest": second, "tag": "moving", "media_type": OCI_MANIFEST,
        "size": len(body), "artifact_type": None, "annotations": {}, "subject": None,
        "refs": [],
    })
    # Pub/sub delivery is asynchronous, but on loopback it takes milliseconds.
    wait_until(
        lambda: client.get_manifest(repo, "moving").headers["Docker-Content-Digest"] == second,
        timeout=2.0, what="the moved tag")


def test_deleted_tag_is_not_served_from_cache(client: RegistryClient, repo: str) -> None:
    client.push_image(repo, "gone")
    assert client.get_manifest(repo, "gone").status == 200
    assert client.request("DELETE", f"/v2/{repo}/manifests/gone").status == 202
    assert client.get_manifest(repo, "gone").status == 404
