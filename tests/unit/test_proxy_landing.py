"""How a verified upstream blob is stored and how its readers learn so (`proxy.landing`),
on real files: the filesystem's rename, and the object store's commit through the backend
with the stamp on the fetch file's inode (here over a directory-backed `BlobStore`, whose
commit path is the same interface the S3 backend implements)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from services.storage.blobstore import BlobStore
from services.storage.paths import Layout
from services.storage.proxy.landing import CommitLanding, RenameLanding, landing_for
from shared.validation import Digest


def _store(tmp_path: Path) -> BlobStore:
    layout = Layout(tmp_path / "storage")
    layout.create()
    return BlobStore(layout)


def _fetch_file(blobs: BlobStore, data: bytes) -> tuple[int, Path, Digest]:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    path = blobs.layout.proxy_fetch(digest)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return fd, path, digest


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def test_the_filesystem_renames_and_readers_compare_inodes(tmp_path: Path) -> None:
    blobs = _store(tmp_path)
    landing = landing_for(blobs)
    assert isinstance(landing, RenameLanding) and landing.moves
    data = os.urandom(100_000)
    fd, path, digest = _fetch_file(blobs, data)
    reader = os.open(path, os.O_RDONLY)
    try:
        landing.begin(fd)
        _write(fd, data)
        assert not landing.verified(reader, digest, writing=False)
        assert landing.land(fd, path, digest)
        assert not path.exists() and blobs.read(digest) == data
        # Only once the writer let go of the lock.
        assert not landing.verified(reader, digest, writing=True)
        assert landing.verified(reader, digest, writing=False)
        stored = landing.open_stored(digest)
        assert stored is not None
        os.close(stored)
    finally:
        os.close(reader)
        os.close(fd)


@pytest.mark.parametrize("umask", [0o022, 0o244])
def test_the_object_store_commits_and_stamps_the_inode(tmp_path: Path, umask: int) -> None:
    blobs = _store(tmp_path)
    landing = CommitLanding(blobs)
    assert not landing.moves and landing.open_stored(Digest("sha256", "0" * 64)) is None
    data = os.urandom(300_000)
    old = os.umask(umask)  # a file created read-only for its owner is not stamped
    try:
        fd, path, digest = _fetch_file(blobs, data)
    finally:
        os.umask(old)
    reader = os.open(path, os.O_RDONLY)
    try:
        assert not landing.verified(reader, digest, writing=False)
        landing.begin(fd)
        _write(fd, data)
        assert not landing.verified(reader, digest, writing=True)
        assert not landing.verified(reader, digest, writing=False)
        assert landing.land(fd, path, digest)
        assert blobs.read(digest) == data
        # The file stays the writer's to remove; the stamp is on the inode, so a
        # reader still sees it once the file is gone.
        assert path.exists()
        path.unlink()
        assert landing.verified(reader, digest, writing=True)
        assert landing.verified(reader, digest, writing=False)
    finally:
        os.close(reader)
        os.close(fd)


def test_an_altered_fetch_file_is_neither_stored_nor_stamped(tmp_path: Path) -> None:
    blobs = _store(tmp_path)
    landing = CommitLanding(blobs)
    data = os.urandom(50_000)
    fd, path, digest = _fetch_file(blobs, data)
    reader = os.open(path, os.O_RDONLY)
    try:
        landing.begin(fd)
        _write(fd, data[:-1] + bytes([data[-1] ^ 1]))
        assert not landing.land(fd, path, digest)
        assert blobs.size(digest) is None
        assert not landing.verified(reader, digest, writing=False)
    finally:
        os.close(reader)
        os.close(fd)
