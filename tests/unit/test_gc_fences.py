"""The fences between writers and the collector, on a real directory."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from services.storage.blobstore import BlobStore
from services.storage.paths import Layout
from shared.validation import parse_digest
from tests.support.registry_client import sha256


def store(tmp_path: Path) -> BlobStore:
    layout = Layout(tmp_path)
    layout.create()
    return BlobStore(layout)


def test_the_barrier_waits_for_a_manifest_put_in_flight(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    inside = threading.Event()
    release = threading.Event()
    passed: list[float] = []

    def put() -> None:
        with blobs.fences.writing():
            inside.set()
            release.wait(10)

    def collect() -> None:
        blobs.fences.barrier()
        passed.append(time.monotonic())

    writer = threading.Thread(target=put)
    writer.start()
    assert inside.wait(5)
    collector = threading.Thread(target=collect)
    collector.start()
    time.sleep(0.3)
    assert not passed, "the barrier passed a PUT between its touches and its record"
    released_at = time.monotonic()
    release.set()
    collector.join(5)
    writer.join(5)
    assert passed and passed[0] >= released_at


def test_touches_after_the_barrier_are_stamped_at_or_after_it(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    data = b"layer"
    digest = parse_digest(sha256(data))
    blobs.ingest_bytes(data, digest)
    os.utime(blobs.layout.blob(digest), ns=(0, 0))
    start = blobs.fences.barrier()
    blobs.link_layer("r", digest)
    assert blobs.touch_layer("r", digest)
    assert os.stat(blobs.layout.blob(digest)).st_mtime_ns >= start
    # So a delete with the run's cutoff keeps it...
    assert blobs.fences.remove_if_untouched(digest, blobs.layout.blob(digest), start) is None
    # ... and one with a later cutoff (a later run, nothing touched it since) does not.
    later = blobs.fences.barrier() + 1
    assert blobs.fences.remove_if_untouched(digest, blobs.layout.blob(digest),
                                            later) == len(data)
    # The writer that relies on it now learns it is gone and must upload it again.
    assert not blobs.touch_layer("r", digest)
    assert not blobs.mount("r", "other", digest)


def test_a_delete_waits_for_a_touch_holding_the_stripe(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    data = b"config"
    digest = parse_digest(sha256(data))
    blobs.ingest_bytes(data, digest)
    cutoff = blobs.fences.barrier() + 10**12
    result: list[int | None] = []
    with blobs.fences.blob(digest):
        t = threading.Thread(target=lambda: result.append(
            blobs.fences.remove_if_untouched(digest, blobs.layout.blob(digest), cutoff)))
        t.start()
        time.sleep(0.2)
        assert not result, "the delete did not wait for the writer's stripe"
    t.join(5)
    assert result == [len(data)]


def test_only_one_collection_runs_per_root(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    with blobs.fences.collecting() as first:
        assert first
        with blobs.fences.collecting() as second:
            assert not second
