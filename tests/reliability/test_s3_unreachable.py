"""The object store gone (kill -9: connections refused) or hung (SIGSTOP: connections
accepted, never answered) under dockyard on S3.

What must hold for every request that needs the store: 503 with Retry-After and the
spec's UNAVAILABLE error, never a 500, and never later than the configured S3 timeout
allows; storage's /readyz says the store is unreachable; nothing partial becomes
visible; once the store is back, everything goes on where it stood (an upload that
was open resumes at its acknowledged size).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import direct, service_url
from tests.reliability.helpers import (
    MiB,
    assert_blob_served,
    assert_no_internal_errors,
    assert_oci_error,
    assert_pullable,
    finish_upload,
    patch_chunk,
    upload_offset,
)
from tests.support import seaweedfs as seaweed
from tests.support.bucket import BucketView
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256
from tests.support.seaweedfs import needs_s3_backend

pytestmark = needs_s3_backend()

# Seconds per call to the store here: short, since the hung store makes each request
# wait that long.
S3_TIMEOUT = 2
# A request makes one call to the store that fails (refused, or no answer within the
# timeout), and then answers; this allows for one more call and a busy machine.
ANSWER_WITHIN = 2 * S3_TIMEOUT + 4.0


@pytest.fixture
def own_seaweedfs(tmp_path: Path) -> Iterator[seaweed.SeaweedServer]:
    """A SeaweedFS of the test's own, since the test kills or stops it."""
    seaweed.require()
    server = seaweed.SeaweedServer(tmp_path / "seaweedfs").start()
    try:
        yield server
    finally:
        server.stop()  # a stopped (SIGSTOP) process too: SIGKILL after the grace


def _requests(name: str, location: str, digest: str, offset: int,
              manifest: bytes) -> list[tuple[str, str, dict, bytes]]:
    """Requests that need the object store: (method, path, headers, body)."""
    octet = {"Content-Type": "application/octet-stream"}
    data = os.urandom(1000)
    return [
        ("GET", f"/v2/{name}/blobs/{digest}", {}, b""),
        ("HEAD", f"/v2/{name}/blobs/{digest}", {}, b""),
        ("GET", f"/v2/{name}/manifests/before", {}, b""),
        ("POST", f"/v2/{name}/blobs/uploads/", {}, b""),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(data)}", octet, data),
        ("PATCH", location, {**octet, "Content-Range": f"{offset}-{offset + 999}"}, data),
        ("PUT", f"{location}?digest={sha256(data)}", octet, data),
        ("PUT", f"/v2/{name}/manifests/during",
         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, manifest),
    ]


def _assert_unavailable(client: RegistryClient, requests: list[tuple[str, str, dict, bytes]],
                        ) -> list[float]:
    """Every request answered 503 + Retry-After + UNAVAILABLE in time; the times."""
    times = []
    for method, path, headers, body in requests:
        started = time.monotonic()
        r = client.request(method, path, body=body or None, headers=headers)
        elapsed = time.monotonic() - started
        times.append(elapsed)
        assert r.status == 503, (method, path, r.status, r.data[:300])
        assert int(r.headers["Retry-After"]) >= 1, (method, path, r.headers)
        if method != "HEAD":
            assert_oci_error(r.data, "UNAVAILABLE")
        assert elapsed < ANSWER_WITHIN, (method, path, elapsed)
    return times


def _readyz(d: Dockyard) -> tuple[int, dict]:
    r = direct("GET", service_url(d, "storage") + "/readyz")
    return r.status, json.loads(r.data)


def _wait_ready(d: Dockyard, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _readyz(d)[0] != 200:
        assert time.monotonic() < deadline, _readyz(d)
        time.sleep(0.2)


def _outage(fault: str, weed: seaweed.SeaweedServer, d: Dockyard, client: RegistryClient,
            requests: list[tuple[str, str, dict, bytes]]) -> None:
    """Make the store fail (`hung` or `killed`), check every answer and /readyz, and
    bring it back."""
    if fault == "killed":
        weed.kill()
    else:
        weed.pause()
    try:
        times = _assert_unavailable(client, requests)
        started = time.monotonic()
        status, body = _readyz(d)
        assert time.monotonic() - started < ANSWER_WITHIN
        assert status == 503, body
        assert body["ready"] is False and body["object_store_reachable"] is False, body
    finally:
        if fault == "killed":
            weed.restart()
        else:
            weed.resume()
    print(f"{fault}: answer times {[round(t, 2) for t in times]}")
    _wait_ready(d)
    assert _readyz(d)[1]["object_store_reachable"] is True


@pytest.mark.slow
def test_object_store_hung_or_gone_answers_503_and_recovers(
        own_seaweedfs: seaweed.SeaweedServer, s3_dockyard_on: Callable[..., Dockyard]) -> None:
    weed = own_seaweedfs
    d = s3_dockyard_on(weed.access, timeout=S3_TIMEOUT)
    bucket = BucketView.of(d)
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/s3-outage"
    _, before = client.push_image(name, "before")
    layer = os.urandom(6 * MiB)
    digest = client.push_blob(name, layer)
    # An upload with one acknowledged chunk, open across both outages.
    pending = os.urandom(3 * MiB)
    location = client.start_upload(name)
    assert patch_chunk(client, location, pending[:MiB], 0).status == 202
    manifest = client.image_manifest(name)
    requests = _requests(name, location, digest, MiB, manifest)

    for fault in ("hung", "killed"):
        _outage(fault, weed, d, client, requests)
        assert_pullable(client, name, "before", before)
        assert_blob_served(client, name, digest, len(layer))
        # Nothing the failed requests carried became visible.
        assert client.request("GET", f"/v2/{name}/manifests/during").status == 404
        # The open upload stands where it was acknowledged.
        assert upload_offset(client, location) == MiB

    # ... and completes.
    assert patch_chunk(client, location, pending[MiB:], MiB).status == 202
    r = finish_upload(client, location, sha256(pending))
    assert r.status == 201, (r.status, r.data)
    assert_blob_served(client, name, sha256(pending), len(pending))
    bucket.assert_blobs_intact()
    assert_no_internal_errors(d)
