"""Two storage replicas on one bucket behave as one: an upload goes on chunk by chunk,
alternating between them, and each continues where the other's last acknowledged
chunk ended (the session's bytes, its running hash and its buffered tail live in the
bucket, not in either process).

The second replica is started the way `serve` started the first (its command line and
environment, with its own address and scratch directory); the test calls each
replica directly, signed with the registry's service key, as a router would.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.helpers import service_url
from tests.reliability.helpers import MiB, assert_blob_served, assert_no_internal_errors
from tests.support.bucket import BucketView
from tests.support.processes import Dockyard, free_port, wait_http
from tests.support.registry_client import RegistryClient, sha256
from tests.support.seaweedfs import MIN_PART_SIZE, needs_s3_backend

pytestmark = needs_s3_backend()


def _replace_arg(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


@pytest.fixture
def second_storage(s3_dockyard: Dockyard, tmp_path: Path) -> Iterator[tuple[Dockyard, str]]:
    """The session's dockyard on S3 (5 MiB parts), and the URL of a second storage
    replica of it."""
    d = s3_dockyard
    child = d.child("storage")
    port = free_port()
    argv = _replace_arg(child.cmdline(), "--listen", f"127.0.0.1:{port}")
    argv = _replace_arg(argv, "--root", str(tmp_path / "replica2-scratch"))
    log = open(tmp_path / "replica2.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env=child.environ(), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 30)
        yield d, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_upload_alternates_between_two_replicas_chunk_by_chunk(
        second_storage: tuple[Dockyard, str]) -> None:
    d, replica_b = second_storage
    replica_a = service_url(d, "storage")
    key = d.service_key()
    # Each replica called directly, signed as the router signs its calls.
    a, b = (RegistryClient(url, signer=key) for url in (replica_a, replica_b))
    name = "reliability/s3-replicas"
    # Chunks below and above the part size, so that one replica's buffered tail is
    # continued by the other, and parts are filled across replicas.
    sizes = [1 * MiB, 3 * MiB, MIN_PART_SIZE + MiB, 512 * 1024 + 7]
    last = 2 * MiB + 5
    blob = random.Random(21).randbytes(sum(sizes) + last)
    digest = sha256(blob)

    r = a.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202, (r.status, r.data)
    path = urlsplit(r.headers["Location"]).path
    offset = 0
    for i, size in enumerate(sizes):
        replica, other = (a, b) if i % 2 == 0 else (b, a)
        chunk = blob[offset:offset + size]
        r = replica.request("PATCH", path, body=chunk, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + size - 1}"})
        assert r.status == 202, (i, r.status, r.data)
        offset += size
        assert r.headers["Range"] == f"0-{offset - 1}"
        # The other replica sees the acknowledged size at once.
        status = other.request("GET", path)
        assert status.status == 204 and status.headers["Range"] == f"0-{offset - 1}"
    # A chunk that does not start where the session ends is refused by either one.
    r = b.request("PATCH", path, body=b"x", headers={
        "Content-Type": "application/octet-stream", "Content-Range": "0-0"})
    assert r.status == 416, (r.status, r.data)

    r = a.request("PUT", f"{path}?digest={digest}", body=blob[offset:],
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, (r.status, r.data)

    for replica in (a, b):
        got = replica.request("GET", f"/v2/{name}/blobs/{digest}")
        assert got.status == 200 and sha256(got.data) == digest
    assert_blob_served(RegistryClient(d.url), name, digest, len(blob))
    bucket = BucketView.of(d)
    bucket.assert_blob_intact(digest)
    bucket.assert_session_gone(path.rstrip("/").rsplit("/", 1)[-1])
    assert_no_internal_errors(d)
