"""Upload sessions: chunks appended on disk, hashed as they arrive, committed as blobs.

A session's state is its files (see `paths`), so it survives a restart of
the storage process and any process sharing the root can continue it. The
running hash is an in-process cache: when this process saw every byte, the
final PUT needs no second pass over the data; otherwise it re-reads the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from services.storage.blobstore import (
    BlobStore,
    Body,
    copy_stream,
    fsync_dir,
    fsync_file,
    hash_file,
    is_disk_full,
)
from services.storage.paths import Layout
from shared import errors
from shared.validation import Digest, check_upload_id

log = logging.getLogger("dockyard.storage.uploads")


@dataclass(frozen=True, slots=True)
class Session:
    upload_id: str
    repository: str | None     # None: a directory without its info file
    started: float
    size: int


@dataclass(slots=True)
class _RunningHash:
    hasher: hashlib._Hash
    offset: int


class UploadStore:
    def __init__(self, layout: Layout, blobs: BlobStore, *, max_per_repository: int,
                 max_age: int) -> None:
        self.layout = layout
        self.blobs = blobs
        self.max_per_repository = max_per_repository
        self.max_age = max_age
        self._hashes: dict[str, _RunningHash] = {}
        self._hashes_lock = threading.Lock()

    # -- sessions ------------------------------------------------------------

    def start(self, name: str) -> str:
        markers = self.layout.upload_markers(name)
        with contextlib.suppress(FileNotFoundError):
            if sum(1 for _ in os.scandir(markers)) >= self.max_per_repository:
                raise errors.TooManyRequests(
                    "too many concurrent uploads to this repository",
                    headers={"Retry-After": "5"},
                )
        upload_id = uuid.uuid4().hex
        directory = self.layout.upload_dir(upload_id)
        directory.mkdir(parents=True)
        marker = self.layout.upload_marker(name, upload_id)
        try:
            self.layout.upload_info(upload_id).write_bytes(
                msgpack.packb({"repo": name, "started": time.time()})
            )
            self.layout.upload_data(upload_id).touch()
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except BaseException:
            # A full disk fails here: leave no half-created session behind.
            self._remove(upload_id, name)
            raise
        self._set_hash(upload_id, _RunningHash(hashlib.sha256(), 0))
        return upload_id

    def _check(self, upload_id: str, name: str) -> None:
        check_upload_id(upload_id)
        try:
            info = msgpack.unpackb(self.layout.upload_info(upload_id).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id}) from None
        if info.get("repo") != name:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id})

    def size(self, upload_id: str, name: str) -> int:
        self._check(upload_id, name)
        try:
            return self.layout.upload_data(upload_id).stat().st_size
        except FileNotFoundError:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id}) from None

    @contextlib.contextmanager
    def _locked(self, upload_id: str, name: str) -> Iterator[int]:
        """Hold the session's data file open for append, exclusively across processes."""
        self._check(upload_id, name)
        try:
            fd = os.open(self.layout.upload_data(upload_id), os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id}) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another request may have finished or cancelled it while we waited,
            # or given it a new data file (an adopted first chunk): then this
            # lock guards a file that is no longer the session's.
            self._check(upload_id, name)
            try:
                current = os.stat(self.layout.upload_data(upload_id)).st_ino
            except FileNotFoundError:
                raise errors.BlobUploadUnknown(detail={"uuid": upload_id}) from None
            if current != os.fstat(fd).st_ino:
                raise errors.Unavailable("upload busy; retry", retry_after=1)
            yield fd
        finally:
            os.close(fd)

    def append(self, upload_id: str, name: str, body: Body, start: int | None = None) -> int:
        """Append a chunk; returns the session's new size.

        `start` is the chunk's first offset from Content-Range; a chunk that
        does not continue the upload where it stands is refused and changes
        nothing.
        """
        try:
            with self._locked(upload_id, name) as fd:
                return self._append_locked(upload_id, fd, body, start)
        finally:
            body.discard()

    def _append_locked(self, upload_id: str, fd: int, body: Body, start: int | None) -> int:
        current = os.fstat(fd).st_size
        if start is not None and start != current:
            raise errors.RangeInvalid(
                detail={"expected_start": current, "got": start},
                headers={"Range": f"0-{current - 1}" if current else "0-0"},
            )
        length = body.length
        if length == 0:
            return current
        running = self._take_hash(upload_id, current)
        if body.path is not None and current == 0:
            return self._adopt(upload_id, body.path, length, running)
        try:
            src = body.open()
            try:
                copy_stream(src, fd, length, running.hasher if running else None)
            finally:
                if body.path is not None:
                    src.close()
            os.fsync(fd)
        except BaseException as e:
            # Leave the session exactly as it was, so the client can resume.
            os.ftruncate(fd, current)
            if isinstance(e, OSError) and is_disk_full(e):
                raise errors.StorageFull(detail={"uploaded": current}) from None
            raise
        if running is not None:
            running.offset = current + length
            self._set_hash(upload_id, running)
        return current + length

    def _adopt(self, upload_id: str, path: Path, length: int,
               running: _RunningHash | None) -> int:
        """Make a spooled first chunk the session's data: one read to hash it, no copy."""
        hasher = running.hasher if running is not None else hashlib.sha256()
        hash_file(path, hasher.name, hasher)
        fsync_file(path)
        os.replace(path, self.layout.upload_data(upload_id))
        fsync_dir(self.layout.upload_dir(upload_id))
        self._set_hash(upload_id, _RunningHash(hasher, length))
        return length

    def finish(self, upload_id: str, name: str, digest: Digest, body: Body) -> None:
        """Append the last chunk, verify the digest, and make the blob visible."""
        with self._locked(upload_id, name) as fd:
            try:
                size = self._append_locked(upload_id, fd, body, None)
            finally:
                body.discard()
            running = self._take_hash(upload_id, size)
            data = self.layout.upload_data(upload_id)
            if running is not None and running.hasher.name == digest.algorithm:
                computed = running.hasher.hexdigest()
            else:
                computed = hash_file(data, digest.algorithm)
            if computed != digest.hex:
                self._remove(upload_id, name)
                raise errors.DigestInvalid(detail={"expected": str(digest),
                                                   "computed": f"{digest.algorithm}:{computed}"})
            self.blobs.commit(data, digest)
            self.blobs.link_layer(name, digest)
            self._remove(upload_id, name)

    def cancel(self, upload_id: str, name: str) -> None:
        with self._locked(upload_id, name):
            self._remove(upload_id, name)

    def _remove(self, upload_id: str, name: str) -> None:
        with self._hashes_lock:
            self._hashes.pop(upload_id, None)
        shutil.rmtree(self.layout.upload_dir(upload_id), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.layout.upload_marker(name, upload_id).unlink()
        with contextlib.suppress(OSError):
            fsync_dir(self.layout.uploads)

    # -- running hashes ------------------------------------------------------

    def _take_hash(self, upload_id: str, offset: int) -> _RunningHash | None:
        """The running hash when it covers exactly `offset` bytes, else None."""
        with self._hashes_lock:
            running = self._hashes.pop(upload_id, None)
        if running is None or running.offset != offset:
            return None
        return running

    def _set_hash(self, upload_id: str, running: _RunningHash) -> None:
        with self._hashes_lock:
            self._hashes[upload_id] = running

    # -- housekeeping --------------------------------------------------------

    def abandoned(self, now: float | None = None) -> list[Session]:
        """Sessions started more than max_age ago, and session directories without
        info (debris of a crash mid-start) untouched for as long."""
        now = time.time() if now is None else now
        found = []
        try:
            entries = list(os.scandir(self.layout.uploads))
        except FileNotFoundError:
            return []
        for entry in entries:
            repo: str | None
            try:
                info = msgpack.unpackb(self.layout.upload_info(entry.name).read_bytes())
                started, repo = float(info["started"]), str(info["repo"])
            except (OSError, ValueError, KeyError, TypeError):
                try:
                    started, repo = entry.stat().st_mtime, None
                except OSError:
                    continue
            if now - started > self.max_age:
                try:
                    size = self.layout.upload_data(entry.name).stat().st_size
                except OSError:
                    size = 0
                found.append(Session(entry.name, repo, started, size))
        return found

    def remove_abandoned(self, session: Session) -> None:
        if session.repository is None:
            shutil.rmtree(self.layout.upload_dir(session.upload_id), ignore_errors=True)
        else:
            self._remove(session.upload_id, session.repository)

    def purge(self, now: float | None = None) -> int:
        """Remove sessions older than max_age; returns how many."""
        now = time.time() if now is None else now
        sessions = self.abandoned(now)
        for session in sessions:
            self.remove_abandoned(session)
        if sessions:
            log.info("purged %d abandoned upload sessions", len(sessions))
        self.purge_tmp(now)
        return len(sessions)

    def purge_tmp(self, now: float) -> None:
        """Remove partial files that a killed process left in tmp/. A file still being
        written has a fresh mtime, so only files untouched for max_age go."""
        try:
            entries = list(os.scandir(self.layout.tmp))
        except FileNotFoundError:
            return
        for entry in entries:
            with contextlib.suppress(OSError):
                if (entry.is_file(follow_symlinks=False)
                        and now - entry.stat(follow_symlinks=False).st_mtime > self.max_age):
                    os.unlink(entry.path)
                    log.info("purged stale temporary file %s", entry.name)

    def start_purger(self, interval: float) -> threading.Thread:
        def loop() -> None:
            while True:
                try:
                    self.purge()
                except Exception:
                    log.exception("upload purge failed")
                time.sleep(interval)

        thread = threading.Thread(target=loop, name="upload-purger", daemon=True)
        thread.start()
        return thread
