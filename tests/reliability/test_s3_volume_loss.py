"""kill -9 of a SeaweedFS volume server while docker pushes a layer into dockyard on S3.

SeaweedFS runs distributed (tests/support/seaweedfs.py: master, two volume servers
that replicate each volume, filer, S3 gateway), so with one volume server gone every
write to the object store fails while reads go on from the other copy. What must hold:
the push in flight gets a retryable error, 503 with Retry-After, within the S3 timeout
(not a hang, not a 500); nothing of it is visible under its digest; what was pushed
before stays pullable; after the volume server is back, the retried push completes and
pulls back byte for byte.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.reliability.conftest import S3_TIMEOUT
from tests.reliability.helpers import (
    MiB,
    as_a_client_retries,
    assert_blob_served,
    assert_no_internal_errors,
    assert_oci_error,
    assert_pullable,
    finish_upload,
)
from tests.support.bucket import BucketView
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256
from tests.support.seaweedfs import SeaweedCluster, needs_s3_backend

pytestmark = needs_s3_backend()

# As docker sends a layer: one PATCH, chunk-encoded in 32 KiB pieces.
PIECE = 32 * 1024


def streamed(data: bytes, at_half: Callable[[], None] | None = None) -> Iterator[bytes]:
    """The body in docker's pieces, calling `at_half` once half of it is sent."""
    for start in range(0, len(data), PIECE):
        if at_half is not None and start >= len(data) // 2:
            at_half()
            at_half = None
        yield data[start:start + PIECE]


def docker_push(client: RegistryClient, name: str, data: bytes,
                at_half: Callable[[], None] | None = None) -> tuple[str, int, object]:
    """POST, one streamed PATCH; returns the upload's location, the PATCH's status and
    its response (the caller finishes or inspects it)."""
    location = client.start_upload(name)
    r = client.request("PATCH", location, body=streamed(data, at_half), chunked=True,
                       headers={"Content-Type": "application/octet-stream"})
    return location, r.status, r


@pytest.mark.slow
def test_volume_server_killed_during_a_docker_style_push(
        seaweedfs_cluster: SeaweedCluster, s3_dockyard_on: Callable[..., Dockyard]) -> None:
    cluster = seaweedfs_cluster
    d = s3_dockyard_on(cluster.access)
    bucket = BucketView.of(d)
    client = RegistryClient(d.url, timeout=120)
    name = "reliability/s3-volume-loss"
    _, before = client.push_image(name, "before")

    layer = random.Random(14).randbytes(24 * MiB)
    digest = sha256(layer)
    killed = threading.Event()

    def kill() -> None:
        cluster.kill_volume(0)
        killed.set()

    started = time.monotonic()
    location, status, r = docker_push(client, name, layer, at_half=kill)
    elapsed = time.monotonic() - started
    assert killed.is_set()
    # Retryable, and answered within a few S3 timeouts, not a hang.
    assert status == 503, (status, r.data)
    assert int(r.headers["Retry-After"]) >= 1
    assert_oci_error(r.data, "UNAVAILABLE")
    assert elapsed < 10 * S3_TIMEOUT + 30, elapsed

    # Nothing of the failed push is visible; what was pushed before is still served
    # (each volume has its copy on the surviving server).
    assert client.request("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert not bucket.has_blob(digest)
    assert_pullable(client, name, "before", before)

    cluster.restart_volume(0)
    # docker pushes the layer again, from the start.
    location_again, status, r = docker_push(client, name, layer)
    assert status == 202, (status, r.data)
    r = finish_upload(client, location_again, digest)
    assert r.status == 201, (r.status, r.data)
    assert_blob_served(client, name, digest, len(layer))
    assert digest in bucket.assert_blobs_intact()
    assert_pullable(client, name, "before", before)

    # The abandoned session is cancelled whole: its parts, tail and multipart upload.
    # (Its lock could not be released while the store failed: retried past the lease.)
    r = as_a_client_retries(lambda: client.request("DELETE", location))
    assert r.status == 204, (r.status, r.data)
    bucket.assert_no_debris()
    assert_no_internal_errors(d)
