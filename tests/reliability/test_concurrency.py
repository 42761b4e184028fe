"""Racing clients: the same image pushed 16 times at once, 16 manifests PUT to one tag,
pushes racing tag deletes. Afterwards every tag resolves, every manifest's blobs
exist, and nothing is half-written in the storage root."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from tests.reliability.helpers import (
    MiB,
    assert_blob_served,
    assert_blobs_intact,
    assert_no_debris,
    assert_no_internal_errors,
    assert_pullable,
    finish_upload,
    listed_tags,
    patch_chunk,
    storage_root,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    sha256,
)

WORKERS = 16
T = TypeVar("T")


def run_together(count: int, fn: Callable[[int], T], timeout: float = 120) -> list[T]:
    """Run fn(0..count-1) on `count` threads released at once by a barrier."""
    barrier = threading.Barrier(count, timeout=30)

    def call(i: int) -> T:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(call, i) for i in range(count)]
        return [f.result(timeout=timeout) for f in futures]


def manifest_for(config: bytes, layers: list[bytes], annotations: dict[str, str] | None = None
                 ) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(x), "size": len(x)}
                   for x in layers],
    }
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc).encode()


def push_blob_chunked(client: RegistryClient, name: str, data: bytes, chunk: int) -> int:
    location = client.start_upload(name)
    for start in range(0, len(data), chunk):
        r = patch_chunk(client, location, data[start:start + chunk], start)
        if r.status != 202:
            return r.status
        location = r.headers["Location"]
    return finish_upload(client, location, sha256(data)).status


def push_blob_whole(client: RegistryClient, name: str, data: bytes) -> int:
    return client.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(data)}",
                          body=data, headers={"Content-Type": "application/octet-stream"}).status


@pytest.mark.slow
def test_same_image_pushed_16_times_at_once(module_dockyard: Dockyard) -> None:
    d = module_dockyard
    client = RegistryClient(d.url, timeout=120)
    name = "reliability/same-image"
    rnd = random.Random(16)
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": rnd.random()}).encode()
    layers = [rnd.randbytes(4 * MiB), rnd.randbytes(MiB), rnd.randbytes(3000)]
    manifest = manifest_for(config, layers)

    def push(i: int) -> list[int]:
        # Half the pushers upload in chunks, half in one request: both paths race
        # to commit the same digests.
        statuses = []
        for blob in [config, *layers]:
            if i % 2:
                statuses.append(push_blob_chunked(client, name, blob, 512 * 1024))
            else:
                statuses.append(push_blob_whole(client, name, blob))
        statuses.append(client.put_manifest(name, "latest", manifest).status)
        return statuses

    results = run_together(WORKERS, push)
    assert all(s == 201 for statuses in results for s in statuses), results

    assert listed_tags(client, name) == ["latest"]
    assert_pullable(client, name, "latest", manifest)
    root = storage_root(d)
    assert {sha256(x) for x in [config, *layers, manifest]} <= assert_blobs_intact(root)
    assert_no_debris(root)
    assert_no_internal_errors(d)


def test_16_manifests_put_to_one_tag_at_once(module_dockyard: Dockyard) -> None:
    d = module_dockyard
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/one-tag"
    manifests = [client.image_manifest(name) for _ in range(WORKERS)]

    statuses = run_together(WORKERS, lambda i: client.put_manifest(name, "race",
                                                                   manifests[i]).status)
    assert statuses == [201] * WORKERS

    # The tag names exactly one of them, whole; every one stays pullable by digest.
    r = client.get_manifest(name, "race")
    assert r.status == 200 and r.data in manifests
    assert r.headers["Docker-Content-Digest"] == sha256(r.data)
    for body in manifests:
        assert_pullable(client, name, sha256(body), body)
    # And the answer is stable: the index and storage agree on it.
    for _ in range(3):
        assert client.get_manifest(name, "race").data == r.data
    assert listed_tags(client, name) == ["race"]
    assert_no_debris(storage_root(d))


@pytest.mark.slow
def test_pushes_while_tags_are_deleted(module_dockyard: Dockyard) -> None:
    d = module_dockyard
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/push-delete"
    # Shared blobs: what races here is tags, not uploads.
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = os.urandom(2048)
    assert push_blob_whole(client, name, config) == 201
    assert push_blob_whole(client, name, layer) == 201

    stop = threading.Event()
    pushed: dict[str, bytes] = {}
    deleted: set[str] = set()
    failures: list[Any] = []

    def pusher(worker: int) -> None:
        # Each tag is pushed twice (a move), by one worker, so its final manifest is known.
        for i in range(15):
            tag = f"w{worker}-{i:02d}"
            for round_ in range(2):
                body = manifest_for(config, [layer], {"tag": tag, "round": str(round_)})
                r = client.put_manifest(name, tag, body)
                if r.status != 201:
                    failures.append((tag, r.status, r.data))
                    return
                pushed[tag] = body

    def deleter() -> None:
        rnd = random.Random(5)
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            status, _, body = client.json("GET", f"/v2/{name}/tags/list?n=10000")
            if status == 404 and body["errors"][0]["code"] == "NAME_UNKNOWN":
                # Before the first manifest lands the repository does not exist yet.
                time.sleep(0.01)
                continue
            if status != 200:
                failures.append(("list", status, body))
                return
            tags = [t for t in body["tags"] or [] if t not in deleted]
            for tag in rnd.sample(tags, min(3, len(tags))):
                r = client.request("DELETE", f"/v2/{name}/manifests/{tag}")
                if r.status == 202:
                    deleted.add(tag)
                elif r.status != 404:  # already gone: another round deleted it
                    failures.append(("delete", tag, r.status, r.data))
            time.sleep(0.01)

    deleters = [threading.Thread(target=deleter) for _ in range(2)]
    for t in deleters:
        t.start()
    try:
        run_together(4, pusher, timeout=120)
    finally:
        stop.set()
        for t in deleters:
            t.join(70)
    assert not failures, failures[:5]
    assert deleted, "the deleters never deleted anything; the race was not exercised"

    listed = set(listed_tags(client, name))
    for tag in listed:
        # Every listed tag resolves to a manifest whose blobs are all there.
        r = client.get_manifest(name, tag)
        assert r.status == 200, (tag, r.status, r.data)
        doc = json.loads(r.data)
        for desc in [doc["config"], *doc["layers"]]:
            assert_blob_served(client, name, desc["digest"], desc["size"])
    for tag, body in pushed.items():
        if tag in deleted:
            continue
        # Never deleted: it must be there, with its last pushed manifest.
        assert tag in listed, tag
        assert_pullable(client, name, tag, body)
    assert_no_debris(storage_root(d))
    assert_no_internal_errors(d)


def test_pushes_racing_deletes_by_digest(module_dockyard: Dockyard) -> None:
    d = module_dockyard
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/push-delete-digest"
    body = client.image_manifest(name)
    digest = sha256(body)
    deadline = time.monotonic() + 30
    for _ in range(40):  # bounded in count and time; stops at the first inconsistency
        if time.monotonic() > deadline:
            break
        stop = threading.Event()

        def delete_loop(stop: threading.Event = stop) -> None:
            for _ in range(500):
                if stop.is_set():
                    return
                client.request("DELETE", f"/v2/{name}/manifests/{digest}")

        deleter = threading.Thread(target=delete_loop)
        deleter.start()
        try:
            run_together(2, lambda i: [client.put_manifest(name, "x", body) for _ in range(10)])
        finally:
            stop.set()
            deleter.join(30)
        # Whichever came last, the outcome must be one of the two serial orders: the tag
        # resolves (PUT last) or the tag is gone with its manifest (DELETE last).
        status, _, tags = client.json("GET", f"/v2/{name}/tags/list")
        if status == 200 and "x" in (tags["tags"] or []):
            r = client.get_manifest(name, "x")
            assert r.status == 200, ("listed tag does not resolve", r.status, r.data)
