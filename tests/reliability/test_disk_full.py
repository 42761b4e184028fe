"""A storage root on a small tmpfs, filled up: refused uploads fail cleanly and leave
nothing behind, pulls go on, and uploads work again once space is freed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    MiB,
    assert_blob_served,
    assert_blobs_intact,
    assert_no_debris,
    assert_no_internal_errors,
    assert_oci_error,
    assert_pullable,
    blob_path,
    files_under,
    finish_upload,
    patch_chunk,
    upload_offset,
    with_query,
)
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient, sha256

TMPFS_SIZE = "64m"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A private 64 MiB tmpfs; needs root. Skips off CI when it cannot be mounted."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                               str(mountpoint)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        done = subprocess.CompletedProcess([], 1, "", str(e))
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mountpoint
    finally:
        # The dockyard using it is stopped first (fixtures tear down in reverse).
        if subprocess.run(["umount", str(mountpoint)], capture_output=True,
                          timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)


def fill(path: Path, leave: int) -> None:
    """Grow `path` until its filesystem has at most `leave` bytes free.

    Written rather than fallocated: it must take real pages on tmpfs, and the
    last write runs into ENOSPC when `leave` is 0.
    """
    block = b"\0" * MiB
    with open(path, "ab") as f:
        for _ in range(256):  # bounded: the tmpfs holds 64 MiB
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                return
            try:
                f.write(block[: min(MiB, free - leave)])
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return
    raise AssertionError("could not fill the tmpfs")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.slow
def test_disk_full(tmpfs: Path, fresh_dockyard: Dockyard) -> None:
    root = tmpfs / "storage"
    fresh_dockyard.env = {"DOCKYARD_STORAGE_ROOT": str(root)}
    d = fresh_dockyard.start()
    client = RegistryClient(d.url, timeout=60)
    name = "reliability/disk-full"
    secrets = [str(tmpfs), str(d.data_dir)]
    _, before = client.push_image(name, "before")
    big = random.Random(1).randbytes(8 * MiB)
    big_digest = sha256(big)
    filler = tmpfs / "filler"

    def check_clean() -> None:
        assert not blob_path(root, big_digest).exists()
        assert_blobs_intact(root)
        assert_no_debris_but_sessions(root)

    # 1. Nearly full: a whole-body upload that does not fit is refused with a JSON error.
    fill(filler, leave=2 * MiB)
    r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={big_digest}", body=big,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 507, (r.status, r.data)
    assert_oci_error(r.data, "UNKNOWN", secrets=secrets)
    check_clean()

    # 2. A chunked upload: a chunk that fits is kept, one that does not is refused and
    #    leaves the session where it was, so it can be resumed later.
    location = client.start_upload(name)
    r = patch_chunk(client, location, big[:MiB], 0)
    assert r.status == 202, (r.status, r.data)
    r = patch_chunk(client, location, big[MiB:5 * MiB], MiB)
    assert r.status == 507, (r.status, r.data)
    assert_oci_error(r.data, "UNKNOWN", secrets=secrets)
    assert upload_offset(client, location) == MiB
    check_clean()

    # 3. Completely full: manifests, new sessions and whole-body uploads are all refused
    #    cleanly; nothing half-written stays behind in tmp/ or under a repository.
    fill(filler, leave=0)
    # A new manifest over blobs already stored: only its own bytes need space.
    doc = json.loads(before)
    doc["annotations"] = {"pad": "x" * 3000}
    new_manifest = json.dumps(doc).encode()
    r = client.put_manifest(name, "after", new_manifest)
    assert r.status == 507, (r.status, r.data)
    assert_oci_error(r.data, "UNKNOWN", secrets=secrets)
    r = client.request("POST", f"/v2/{name}/blobs/uploads/?digest={big_digest}", body=big,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 507, (r.status, r.data)
    assert_oci_error(r.data, "UNKNOWN", secrets=secrets)
    r = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status in (202, 507), (r.status, r.data)
    if r.status == 507:
        assert_oci_error(r.data, "UNKNOWN", secrets=secrets)
    else:
        client.request("DELETE", r.headers["Location"])
    # Readiness reports the full disk, and its write probe leaves nothing behind either.
    assert client.request("GET", "/readyz").status == 503
    check_clean()

    # 4. Pulls are still served while the disk is full.
    assert_pullable(client, name, "before", before)
    for desc in [doc["config"], *doc["layers"]]:
        assert_blob_served(client, name, desc["digest"], desc["size"])

    # 5. Space freed: every refused operation now succeeds, the chunked upload resumes.
    filler.unlink()
    assert free_bytes(tmpfs) > 32 * MiB
    assert client.request("GET", "/readyz").status == 200
    r = patch_chunk(client, location, big[MiB:], MiB)
    assert r.status == 202, (r.status, r.data)
    r = finish_upload(client, location, big_digest)
    assert r.status == 201, (r.status, r.data)
    r = client.request("POST", with_query(f"/v2/{name}/blobs/uploads/", f"digest={big_digest}"),
                       body=big, headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201, (r.status, r.data)
    r = client.put_manifest(name, "after", new_manifest)
    assert r.status == 201, (r.status, r.data)
    assert_pullable(client, name, "after", new_manifest)
    assert_blob_served(client, name, big_digest, len(big))
    assert big_digest in assert_blobs_intact(root)
    assert_no_debris(root)
    assert_no_internal_errors(d)


def assert_no_debris_but_sessions(root: Path) -> None:
    """assert_no_debris, allowing the one upload session the test keeps open; a
    session directory must still be complete (info and data), never half-created."""
    with contextlib.suppress(FileNotFoundError):
        for session in (root / "uploads").iterdir():
            assert sorted(p.name for p in session.iterdir()) == ["data", "info"], session
    debris = [p for p in files_under(root / "tmp") if not p.name.startswith(".probe-")]
    assert debris == [], debris
    stray = [p for p in files_under(root / "repositories") if p.name.startswith(".")]
    assert stray == [], stray
