"""Uploads into dockyard on S3 under faults of dockyard itself: kill -9 of storage in
the middle of a chunk, and 16 clients uploading one blob at once.

On S3 an append is all or nothing: the session's `state` object, written last, is the
acknowledgement (services/storage/backends/s3.py). So after a kill the session stands
at the end of the last acknowledged chunk or of the one in flight, never between; and
a blob appears under its digest once, whole.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from tests.reliability.conftest import S3_PART_SIZE
from tests.reliability.helpers import (
    MiB,
    as_a_client_retries,
    assert_blob_served,
    assert_no_internal_errors,
    assert_oci_error,
    finish_upload,
    patch_chunk,
    upload_offset,
)
from tests.support.bucket import BucketView
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256
from tests.support.seaweedfs import MIN_PART_SIZE, SeaweedServer, needs_s3_backend

pytestmark = needs_s3_backend()


@pytest.mark.slow
def test_storage_killed_mid_chunk_resumes(seaweedfs: SeaweedServer,
                                          s3_dockyard_on: Callable[..., Dockyard]) -> None:
    d = s3_dockyard_on(seaweedfs.access)
    bucket = BucketView.of(d)
    client = RegistryClient(d.url, timeout=120)
    name = "reliability/s3-storage-kill"
    first, second = 2 * S3_PART_SIZE + MiB, 4 * S3_PART_SIZE
    blob = random.Random(31).randbytes(first + second + 3 * MiB)
    digest = sha256(blob)

    location = client.start_upload(name)
    r = patch_chunk(client, location, blob[:first], 0)
    assert r.status == 202, (r.status, r.data)
    parts_before = bucket.parts_uploaded()

    answers: list[tuple[int, bytes]] = []

    def second_patch() -> None:
        resp = patch_chunk(client, location, blob[first:first + second], first)
        answers.append((resp.status, resp.data))

    sender = threading.Thread(target=second_patch)
    sender.start()
    # Kill once storage has uploaded a part of the second chunk to the store. If the
    # moment is missed, the kill still lands with the chunk in flight or answered, and
    # what follows holds in every case.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sender.is_alive():
        if bucket.parts_uploaded() > parts_before:
            break
        time.sleep(0.02)
    old_pid = d.kill("storage")
    sender.join(90)
    assert not sender.is_alive() and answers, "the in-flight PATCH was never answered"
    status, body = answers[0]
    if status != 202:
        assert status == 503, (status, body)
        assert_oci_error(body, "UNAVAILABLE")

    d.wait_restarted("storage", old_pid, timeout=30)
    assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert not bucket.has_blob(digest)
    offset = upload_offset(client, location)
    assert offset in (first, first + second), offset
    if status == 202:
        assert offset == first + second
    # The killed process held the session's lock; until its lease runs out the
    # replacement answers 503 with Retry-After, and the client comes back, as docker does.
    r = as_a_client_retries(lambda: patch_chunk(client, location, blob[offset:], offset))
    assert r.status == 202, (r.status, r.data)
    r = finish_upload(client, location, digest)
    assert r.status == 201, (r.status, r.data)

    assert_blob_served(client, name, digest, len(blob))
    assert digest in bucket.assert_blobs_intact()
    bucket.assert_no_debris()
    assert_no_internal_errors(d)


@pytest.mark.slow
def test_16_clients_upload_one_blob_at_once(s3_dockyard: Dockyard) -> None:
    # The session's dockyard on S3: 5 MiB parts, the default S3 timeout.
    d = s3_dockyard
    bucket = BucketView.of(d)
    client = RegistryClient(d.url, timeout=120)
    # Larger than a part, in two chunks: each client's upload is a multipart upload.
    blob = random.Random(32).randbytes(MIN_PART_SIZE + 3 * MiB)
    digest = sha256(blob)
    split = 2 * MiB
    barrier = threading.Barrier(16)
    repo = f"reliability/s3-same-{uuid.uuid4().hex[:8]}"
    results: list[int] = []
    sessions: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def upload(i: int) -> None:
        name = f"{repo}/{i}"
        location = client.start_upload(name)
        with lock:
            sessions.append(location.rstrip("/").rsplit("/", 1)[-1])
        r = patch_chunk(client, location, blob[:split], 0)
        if r.status == 202:
            barrier.wait(60)
            r = finish_upload(client, location, digest, blob[split:])
        else:
            barrier.abort()
        with lock:
            results.append(r.status)
            if r.status != 201:
                failures.append(r.data.decode(errors="replace"))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert results == [201] * 16, failures
    # One object holds the blob: no second copy, no staged leftover under its name.
    copies = [k for k in bucket.keys_naming(digest) if not k.startswith("repositories/")]
    assert copies == [bucket.blob_key(digest)]
    bucket.assert_blob_intact(digest)
    for i in range(16):
        assert_blob_served(client, f"{repo}/{i}", digest, len(blob))
    for upload_id in sessions:
        bucket.assert_session_gone(upload_id)
    assert_no_internal_errors(d)
