"""Fetching a blob from an upstream once, while every client that asks for it is served.

The first request for an uncached blob, in any storage process sharing the
root (on an object store: the scratch directory), becomes its *writer*: it
takes an exclusive ``flock`` on ``tmp/fetch-<algorithm>-<hex>``
(`Layout.proxy_fetch`), writes the upstream's
length beside it, and a background thread copies the upstream's body into
the file while hashing it. Every request for the blob, the writer's own
included, is a *reader*: it follows the file as it grows and sends its bytes
on. So there is one upstream fetch however many clients pull at once, and the
first client's bytes flow while they are written. On an object store the
file is in the replica's local scratch (``storage.root/tmp``): the
processes of a replica share one fetch, each replica makes its own.

The rules that keep unverified bytes from being served or stored:

- A reader always holds back the blob's last byte until the writer is done,
  so no client ever receives a complete body before the digest is checked.
- The writer stores the file's bytes (`landing`) only when its length and
  digest match; otherwise it unlinks it. A reader learns the outcome from
  the file it has open, as `landing` says for the backend: on a filesystem
  the file was renamed into ``blobs/`` (the same inode there means
  verified), on an object store the writer stamped the inode verified
  before committing the bytes to the bucket. Otherwise the bytes it
  followed were discarded, and the reader raises `FetchFailed` so that the
  server aborts the client's connection short of its Content-Length.
- The writer's thread runs to the end even when its client goes away, so
  the other readers are not cut off.
- A writer that dies leaves the lock released and the file unrenamed:
  readers see a failure, the next request becomes the writer, and the
  upload purger removes the stale file after ``storage.upload_max_age``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.storage.blobstore import BlobStore
from services.storage.bodies import CHUNK, cleanup
from services.storage.proxy.landing import landing_for
from services.storage.proxy.upstream import UpstreamClient, UpstreamDown
from shared import errors
from shared.validation import Digest

log = logging.getLogger("dockyard.storage.proxy")

_POLL = 0.005


class FetchFailed(Exception):
    """The bytes a reader followed were not verified: abort the client's response."""


@dataclass
class Outcome:
    """What the writer's thread reports back once the upstream answered."""

    status: int = 0
    size: int = -1
    error: str = ""
    ready: threading.Event | None = None


class BlobFetcher:
    """Serves uncached upstream blobs, fetching each one once (see the module's rules)."""

    def __init__(self, blobs: BlobStore, timeout: float,
                 on_stored: Callable[[Digest, int], None] | None = None) -> None:
        self._blobs = blobs
        self._layout = blobs.layout
        self._timeout = timeout
        self._on_stored = on_stored
        self._landing = landing_for(blobs)

    def open(self, client: UpstreamClient, remote: str, digest: Digest,
             retry_after: int = 2) -> tuple[int, Iterator[bytes]] | None:
        """(length, body) of the blob, or None when it is cached by now.

        Raises BlobUnknown when the upstream has no such blob, Unavailable
        when the upstream cannot be reached.
        """
        for _ in range(3):
            if self._blobs.size(digest) is not None:
                return None
            joined = self._join(digest)
            if joined is None:
                return None  # stored meanwhile, and not a local file
            fd, writer = joined
            try:
                if writer:
                    if self._blobs.size(digest) is not None:
                        self._abandon(fd, digest)
                        fd = -1
                        return None
                    reader = os.open(self._layout.proxy_fetch(digest), os.O_RDONLY)
                    outcome = self._start_writer(fd, client, remote, digest)
                    fd = -1  # the writer's thread owns it now
                    if outcome.status != 200:
                        os.close(reader)
                        if outcome.status == 404 or 400 <= outcome.status < 500:
                            raise errors.BlobUnknown(detail={"digest": str(digest)})
                        raise errors.Unavailable(
                            f"upstream {client.upstream.label} is unavailable: {outcome.error}",
                            retry_after=retry_after)
                    return outcome.size, self._follow(reader, digest, outcome.size)
                size = self._wait_size(fd, digest)
                if size is None:
                    continue  # that writer gave up: try again, perhaps as the writer
                reader, fd = fd, -1
                return size, self._follow(reader, digest, size)
            finally:
                if fd >= 0:
                    os.close(fd)
        raise errors.Unavailable("the blob could not be fetched from the upstream",
                                 retry_after=retry_after)

    # -- who writes ------------------------------------------------------

    def _join(self, digest: Digest) -> tuple[int, bool] | None:
        """An fd on the blob's fetch file, and whether this request holds its lock;
        None when the blob was stored meanwhile and is no local file."""
        path = self._layout.proxy_fetch(digest)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                writer = True
            except BlockingIOError:
                writer = False
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd, writer
            # The file was stored or discarded while we opened it.
            os.close(fd)
            if self._blobs.size(digest) is not None:
                stored = self._landing.open_stored(digest)
                return None if stored is None else (stored, False)

    def _abandon(self, fd: int, digest: Digest) -> None:
        cleanup(self._layout.proxy_fetch(digest))
        os.close(fd)

    def _start_writer(self, fd: int, client: UpstreamClient, remote: str,
                      digest: Digest) -> Outcome:
        outcome = Outcome(ready=threading.Event())
        thread = threading.Thread(target=self._write, args=(fd, client, remote, digest, outcome),
                                  name=f"fetch-{digest.hex[:12]}", daemon=True)
        thread.start()
        assert outcome.ready is not None
        outcome.ready.wait()
        return outcome

    def _write(self, fd: int, client: UpstreamClient, remote: str, digest: Digest,
               outcome: Outcome) -> None:
        path = self._layout.proxy_fetch(digest)
        size_path = self._layout.proxy_fetch_size(digest)
        assert outcome.ready is not None
        stored = False
        try:
            try:
                resp = client.get_blob(remote, str(digest))
            except UpstreamDown as e:
                outcome.error = str(e)
                outcome.status = 503
                return
            outcome.status = resp.status
            length = resp.headers.get("Content-Length", "")
            if resp.status != 200 or not length.isdigit():
                outcome.error = f"answered {resp.status}"
                if resp.status == 200:
                    outcome.status = 502
                resp.release_conn()
                return
            outcome.size = int(length)
            self._landing.begin(fd)
            os.ftruncate(fd, 0)
            tmp = size_path.with_name(size_path.name + ".new")
            tmp.write_text(length)
            os.replace(tmp, size_path)
            outcome.ready.set()
            stored = self._copy(fd, resp, digest, outcome.size, client.upstream.label)
        except Exception:
            log.exception("fetching %s from %s failed", digest, client.upstream.label)
        finally:
            outcome.ready.set()
            if not (stored and self._landing.moves):
                cleanup(path)
            cleanup(size_path)
            os.close(fd)  # releases the lock: readers learn the outcome

    def _copy(self, fd: int, resp, digest: Digest, size: int, label: str) -> bool:
        hasher = hashlib.new(digest.algorithm)
        written = 0
        try:
            for chunk in resp.stream(CHUNK):
                hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                written += len(chunk)
                if written > size:
                    break
        except Exception as e:  # urllib3 errors, a reset, a timeout
            log.warning("upstream %s: fetching %s broke off after %d of %d bytes: %s",
                        label, digest, written, size, e)
            return False
        finally:
            resp.release_conn()
        computed = hasher.hexdigest()
        if written != size or computed != digest.hex:
            log.error("upstream %s sent bytes for %s that fail verification (%d of %d bytes, "
                      "%s:%s): discarded", label, digest, written, size, digest.algorithm,
                      computed)
            return False
        if not self._landing.land(fd, self._layout.proxy_fetch(digest), digest):
            return False
        if self._on_stored is not None:
            self._on_stored(digest, size)
        return True

    # -- who reads -------------------------------------------------------

    def _writing(self, fd: int) -> bool:
        """True while a writer holds the lock of the file `fd` names."""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError as e:  # pragma: no cover - flock on a regular file
            if e.errno == errno.EWOULDBLOCK:
                return True
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def _wait_size(self, fd: int, digest: Digest) -> int | None:
        """The length the writer announced, or None when it finished without one."""
        deadline = time.monotonic() + self._timeout
        size_path = self._layout.proxy_fetch_size(digest)
        if self._landing.verified(fd, digest, writing=False):
            return os.fstat(fd).st_size  # the stored blob itself, or a verified file
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(size_path.read_text())
            if not self._writing(fd):
                if self._landing.verified(fd, digest, writing=False):
                    return os.fstat(fd).st_size
                return None
            time.sleep(_POLL)
        return None

    def _follow(self, fd: int, digest: Digest, size: int) -> Iterator[bytes]:
        """The file's bytes as they arrive; the last one only once it is verified."""
        try:
            sent = 0
            stalled_since = time.monotonic()
            while True:
                writing = self._writing(fd)
                # Verified before the length is read: a file stamped verified while
                # it is still written to is never seen short (`landing`).
                verified = self._landing.verified(fd, digest, writing)
                available = os.fstat(fd).st_size
                limit = size if verified else size - 1
                if not writing and not verified:
                    raise FetchFailed(f"{digest}: the upstream's bytes were discarded")
                while sent < min(available, limit):
                    chunk = os.pread(fd, min(CHUNK, min(available, limit) - sent), sent)
                    if not chunk:
                        break
                    sent += len(chunk)
                    stalled_since = time.monotonic()
                    yield chunk
                if sent >= size:
                    return
                if verified:
                    raise FetchFailed(f"{digest}: the stored blob is shorter than announced")
                if time.monotonic() - stalled_since > self._timeout:
                    raise FetchFailed(f"{digest}: the upstream stalled")
                time.sleep(_POLL)
        finally:
            os.close(fd)
