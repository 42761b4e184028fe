"""Content-addressed blobs and the per-repository links that expose them.

Manifests are blobs too: their bytes live under ``blobs/`` and a repository's
``_manifests`` link records the media type they were pushed with.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from services.storage.fences import Fences, touch
from services.storage.paths import Layout
from shared import errors
from shared.validation import Digest

CHUNK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_stream(src: BinaryIO, fd: int, length: int, hasher: hashlib._Hash | None) -> int:
    """Copy exactly `length` bytes from `src` to `fd`, hashing on the way.

    One buffer is reused for the whole copy, so a 10 GiB layer costs 1 MiB of
    memory and one pass over its bytes.
    """
    buf = bytearray(min(CHUNK, max(length, 1)))
    view = memoryview(buf)
    remaining = length
    readinto = getattr(src, "readinto", None)
    while remaining > 0:
        want = min(remaining, len(buf))
        if readinto is not None:
            n = readinto(view[:want])
            piece = view[:n]
        else:
            data = src.read(want)
            n = len(data)
            piece = memoryview(data)
        if not n:
            raise errors.SizeInvalid(detail={"reason": "request body shorter than Content-Length"})
        if hasher is not None:
            hasher.update(piece)
        written = 0
        while written < n:
            written += os.write(fd, piece[written:])
        remaining -= n
    return length


def hash_file(path: Path, algorithm: str, hasher: hashlib._Hash | None = None) -> str:
    hasher = hasher or hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Body:
    """A request body: the request's stream, or the file in tmp/ that a router on
    this machine spooled it into (see `services.router.shared_disk`).

    A spooled body is taken over by rename where it can be, so its bytes are
    not written a second time.
    """

    length: int
    stream: BinaryIO | None = None
    path: Path | None = None

    def open(self) -> BinaryIO:
        if self.path is not None:
            return open(self.path, "rb")
        assert self.stream is not None
        return self.stream

    def discard(self) -> None:
        if self.path is not None:
            cleanup(self.path)


def _write_synced(path: Path, content: bytes) -> None:
    """Write a new file and fsync it; a failed write (a full disk) leaves no file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _remove(path)
        raise


# Link files carry no data: a layer link is an empty file, a manifest link a
# symbolic link whose target is the media type. Each is created whole by one
# call and made durable by one fsync of its directory, where a file with
# content would need a temporary file, its own fsync and a rename as well.


def _create_empty(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    fsync_dir(path.parent)


def _create_symlink(path: Path, target: str) -> None:
    """Point `path` at `target`, replacing what was there, atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(target, path)
    except FileExistsError:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        os.symlink(target, tmp)
        try:
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
    fsync_dir(path.parent)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class BlobStore:
    """Blobs and links. Every method that creates or relies on a blob or a link
    touches it under the blob's stripe (`fences`), so a concurrent collection
    either deleted it first (and the method sees it missing) or keeps it."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.fences = Fences(layout)

    # -- blobs -------------------------------------------------------------

    def size(self, digest: Digest) -> int | None:
        try:
            return self.layout.blob(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: Digest) -> BinaryIO:
        return open(self.layout.blob(digest), "rb")

    def read(self, digest: Digest) -> bytes:
        return self.layout.blob(digest).read_bytes()

    def commit(self, complete_file: Path, digest: Digest) -> None:
        """Move a fsynced, verified file into place under its digest.

        `os.replace` is atomic, so concurrent commits of the same digest leave
        one whole copy whichever wins.
        """
        target = self.layout.blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.fences.blob(digest):
            # The file's mtime is its last write, maybe long ago for an upload
            # finished without a last chunk: the blob is new now.
            os.utime(complete_file)
            os.replace(complete_file, target)
        fsync_dir(target.parent)

    def ingest_body(self, body: Body, expected: Digest) -> None:
        """Store a whole request body under its digest, verified."""
        if body.path is None:
            assert body.stream is not None
            self.ingest(body.stream, body.length, expected)
            return
        try:
            computed = hash_file(body.path, expected.algorithm)
            if computed != expected.hex:
                raise errors.DigestInvalid(detail={"expected": str(expected),
                                                   "computed": f"{expected.algorithm}:{computed}"})
            fsync_file(body.path)
            self.commit(body.path, expected)
        finally:
            body.discard()

    def ingest(self, src: BinaryIO, length: int, expected: Digest | None,
               algorithm: str = "sha256") -> Digest:
        """Store a whole body: hashed as it arrives, verified, then made visible."""
        algorithm = expected.algorithm if expected else algorithm
        hasher = hashlib.new(algorithm)
        tmp = self.layout.tmp / uuid.uuid4().hex
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                copy_stream(src, fd, length, hasher)
                os.fsync(fd)
            finally:
                os.close(fd)
            digest = Digest(algorithm, hasher.hexdigest())
            if expected is not None and digest != expected:
                raise errors.DigestInvalid(detail={"expected": str(expected),
                                                   "computed": str(digest)})
            self.commit(tmp, digest)
        except BaseException:
            _remove(tmp)
            raise
        return digest

    def ingest_bytes(self, data: bytes, digest: Digest) -> None:
        with self.fences.blob(digest):
            if self.size(digest) == len(data) and touch(self.layout.blob(digest)):
                return
        tmp = self.layout.tmp / uuid.uuid4().hex
        # Written in tmp/ and renamed once into place: the rename into blobs/
        # and that directory's fsync are what make it durable.
        _write_synced(tmp, data)
        try:
            self.commit(tmp, digest)
        except BaseException:
            _remove(tmp)
            raise

    # -- repository links --------------------------------------------------

    def repository_exists(self, name: str) -> bool:
        return self.layout.repository(name).is_dir()

    def has_layer(self, name: str, digest: Digest) -> bool:
        return self.layout.layer_link(name, digest).exists() and self.size(digest) is not None

    def touch_layer(self, name: str, digest: Digest) -> bool:
        """`has_layer`, for a writer about to rely on the answer: touches both files."""
        with self.fences.blob(digest):
            return (touch(self.layout.blob(digest))
                    and touch(self.layout.layer_link(name, digest)))

    def link_layer(self, name: str, digest: Digest) -> None:
        with self.fences.blob(digest):
            if not touch(self.layout.layer_link(name, digest)):
                _create_empty(self.layout.layer_link(name, digest))

    def mount(self, source: str, name: str, digest: Digest) -> bool:
        """Link a blob `source` may serve into `name`; False when it may not."""
        with self.fences.blob(digest):
            if not (touch(self.layout.blob(digest))
                    and touch(self.layout.layer_link(source, digest))):
                return False
            if not touch(self.layout.layer_link(name, digest)):
                _create_empty(self.layout.layer_link(name, digest))
        return True

    def touch_manifest(self, name: str, digest: Digest) -> bool:
        """True when `name` holds the manifest; touches its link and bytes."""
        with self.fences.blob(digest):
            return (touch(self.layout.manifest_link(name, digest), symlink=True)
                    and touch(self.layout.blob(digest)))

    def unlink_layer(self, name: str, digest: Digest) -> bool:
        return _remove(self.layout.layer_link(name, digest))

    def manifest_media_type(self, name: str, digest: Digest) -> str | None:
        try:
            return os.readlink(self.layout.manifest_link(name, digest))
        except FileNotFoundError:
            return None

    def link_manifest(self, name: str, digest: Digest, media_type: str) -> bool:
        """Link a manifest into a repository; True when the link is new."""
        link = self.layout.manifest_link(name, digest)
        current = self.manifest_media_type(name, digest)
        if current == media_type and touch(link, symlink=True):
            return False
        _create_symlink(link, media_type)
        return current is None

    @contextlib.contextmanager
    def manifest_lock(self, name: str, digest: Digest) -> Iterator[None]:
        """Exclusive across every process sharing the root; 256 stripes bound the files."""
        fd = os.open(self.layout.manifest_lock(name, digest), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def unlink_manifest(self, name: str, digest: Digest) -> bool:
        return _remove(self.layout.manifest_link(name, digest))

    def writable(self) -> bool:
        probe = self.layout.tmp / f".probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
        except OSError:
            return False
        finally:
            # write_bytes creates the file before a full disk fails the write.
            cleanup(probe)
        return True


def is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def cleanup(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
