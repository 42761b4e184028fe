"""Upload sessions: chunks appended in order, hashed as they arrive, committed as blobs.

A session's state lives in the backend (a directory under ``uploads/``, or
objects and a multipart upload in the bucket; see `backends`), so it
survives a restart of the storage process and any process sharing the
backend can continue it at the last acknowledged offset.

The running hash is an in-process cache: when this process saw every byte,
the final PUT needs no second pass over the data; otherwise (the session
moved between replicas, or the process restarted) the sealed bytes are read
back once from the backend to hash them. A session that starts on a process
(offset 0) always has its hash there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from services.storage.backends.base import Session as BackendSession
from services.storage.blobstore import BlobStore
from services.storage.bodies import Body
from services.storage.paths import Keys, Layout
from shared import errors
from shared.validation import Digest, check_upload_id

log = logging.getLogger("dockyard.storage.uploads")


@dataclass(frozen=True, slots=True)
class Session:
    upload_id: str
    repository: str | None     # None: a session without its info (debris of a crash)
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
        self.backend = blobs.backend
        self.max_per_repository = max_per_repository
        self.max_age = max_age
        self._hashes: dict[str, _RunningHash] = {}
        self._hashes_lock = threading.Lock()

    # -- sessions ------------------------------------------------------------

    def start(self, name: str) -> str:
        for count, _ in enumerate(self.backend.list(Keys.upload_markers(name)), 1):
            if count >= self.max_per_repository:
                raise errors.TooManyRequests(
                    "too many concurrent uploads to this repository",
                    headers={"Retry-After": "5"},
                )
        upload_id = uuid.uuid4().hex
        self.backend.create_session(
            upload_id, msgpack.packb({"repo": name, "started": time.time()}))
        try:
            self.backend.set_record(Keys.upload_marker(name, upload_id), "")
        except BaseException:
            # A full disk fails here: leave no half-created session behind.
            self._remove(upload_id, name)
            raise
        self._set_hash(upload_id, _RunningHash(hashlib.sha256(), 0))
        return upload_id

    def _check(self, upload_id: str, name: str, raw: bytes | None = None) -> None:
        """The session exists and belongs to `name` (its description says so)."""
        check_upload_id(upload_id)
        if raw is None:
            raw = self.backend.session_info(upload_id)
        try:
            info = msgpack.unpackb(raw) if raw is not None else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("repo") != name:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id})

    def size(self, upload_id: str, name: str) -> int:
        self._check(upload_id, name)
        size = self.backend.session_size(upload_id)
        if size is None:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id})
        return size

    @contextlib.contextmanager
    def _locked(self, upload_id: str, name: str, adding: int = 0) -> Iterator[BackendSession]:
        """Work on the session, serialized across every process sharing the backend
        (`backends.base`, rule 4). Checked once the session is read: a session
        another request finished or cancelled meanwhile is gone (FileNotFoundError)."""
        check_upload_id(upload_id)
        try:
            with self.backend.session(upload_id, adding) as session:
                self._check(upload_id, name, session.info)
                yield session
        except FileNotFoundError:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id}) from None

    def append(self, upload_id: str, name: str, body: Body, start: int | None = None) -> int:
        """Append a chunk; returns the session's new size.

        `start` is the chunk's first offset from Content-Range; a chunk that
        does not continue the upload where it stands is refused and changes
        nothing.
        """
        try:
            with self._locked(upload_id, name, body.length) as session:
                return self._append_locked(upload_id, session, body, start)
        finally:
            body.discard()

    def _append_locked(self, upload_id: str, session: BackendSession, body: Body,
                       start: int | None) -> int:
        current = session.size
        if start is not None and start != current:
            raise errors.RangeInvalid(
                detail={"expected_start": current, "got": start},
                headers={"Range": f"0-{current - 1}" if current else "0-0"},
            )
        if body.length == 0:
            return current
        running = self._take_hash(upload_id, current)
        if running is None and current == 0:
            # Hashing from the first byte covers everything: this process has it all.
            running = _RunningHash(hashlib.sha256(), 0)
        size = session.append(body, running.hasher if running else None)
        if running is not None:
            running.offset = size
            self._set_hash(upload_id, running)
        return size

    def finish(self, upload_id: str, name: str, digest: Digest, body: Body) -> int:
        """Append the last chunk, verify the digest, and make the blob visible;
        returns the blob's size."""
        with self._locked(upload_id, name) as session:
            running = self._take_hash(upload_id, session.size)
            if running is None and session.size == 0:
                running = _RunningHash(hashlib.sha256(), 0)
            hasher = (running.hasher if running is not None
                      and running.hasher.name == digest.algorithm else None)
            try:
                staged = session.seal(body, hasher, Keys.blob(digest))
            finally:
                body.discard()
            if hasher is not None:
                computed = hasher.hexdigest()
            else:
                started = time.monotonic()
                computed = session.rehash(staged, digest.algorithm)
                log.info("upload %s: rehashed %d bytes from the %s backend in %.3fs",
                         upload_id, staged.size, self.backend.kind,
                         time.monotonic() - started)
            if computed != digest.hex:
                staged.discard()
                self._remove(upload_id, name)
                raise errors.DigestInvalid(detail={"expected": str(digest),
                                                   "computed": f"{digest.algorithm}:{computed}"})
            self.blobs.commit(staged, digest)
            self.blobs.link_layer(name, digest)
            self._forget_hash(upload_id)
            session.remove(Keys.upload_marker(name, upload_id))
            return staged.size

    def cancel(self, upload_id: str, name: str) -> None:
        with self._locked(upload_id, name):
            self._remove(upload_id, name)

    def _remove(self, upload_id: str, name: str) -> None:
        self._forget_hash(upload_id)
        self.backend.remove_session(upload_id)
        self.backend.delete(Keys.upload_marker(name, upload_id))

    # -- running hashes ------------------------------------------------------

    def _take_hash(self, upload_id: str, offset: int) -> _RunningHash | None:
        """The running hash when it covers exactly `offset` bytes, else None."""
        with self._hashes_lock:
            running = self._hashes.pop(upload_id, None)
        if running is None or running.offset != offset:
            return None
        return running

    def _forget_hash(self, upload_id: str) -> None:
        with self._hashes_lock:
            self._hashes.pop(upload_id, None)

    def _set_hash(self, upload_id: str, running: _RunningHash) -> None:
        with self._hashes_lock:
            self._hashes[upload_id] = running

    # -- housekeeping --------------------------------------------------------

    def abandoned(self, now: float | None = None) -> list[Session]:
        """Sessions started more than max_age ago, and sessions without info
        (debris of a crash mid-start) untouched for as long."""
        now = time.time() if now is None else now
        found = []
        for upload_id, mtime in list(self.backend.sessions()):
            repo: str | None
            try:
                info = msgpack.unpackb(self.backend.session_info(upload_id) or b"")
                started, repo = float(info["started"]), str(info["repo"])
            except (ValueError, KeyError, TypeError):
                started, repo = mtime, None
            if now - started > self.max_age:
                found.append(Session(upload_id, repo, started,
                                     self.backend.session_size(upload_id) or 0))
        return found

    def remove_abandoned(self, session: Session) -> None:
        if session.repository is None:
            self.backend.remove_session(session.upload_id)
        else:
            self._remove(session.upload_id, session.repository)

    def purge(self, now: float | None = None) -> int:
        """Remove sessions older than max_age, and what crashed writers left
        outside any session (an object store's orphaned multipart uploads);
        returns how many sessions."""
        now = time.time() if now is None else now
        sessions = self.abandoned(now)
        for session in sessions:
            self.remove_abandoned(session)
        if sessions:
            log.info("purged %d abandoned upload sessions", len(sessions))
        orphans = self.backend.purge_orphans(self.max_age)
        if orphans:
            log.info("aborted %d orphaned multipart uploads", orphans)
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
