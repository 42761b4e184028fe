"""Where a verified upstream blob goes, and how the readers following it learn so.

`fetch.BlobFetcher` writes an upstream blob into the local file
``tmp/fetch-<algorithm>-<hex>`` under its ``flock`` while readers follow it
(see its rules). What depends on where the blob store keeps its bytes is
here, and only that:

- `begin(fd)`: the writer took the lock and starts a fetch into the file;
- `land(fd, path, digest)`: the file's bytes matched the digest: make them
  the blob; True when they are stored. With `moves`, a stored file is no
  longer at `path` (the writer must not remove what a later request put
  there); without it, the writer removes the file;
- `verified(fd, digest, writing)`: whether the file a reader has open holds
  bytes that matched the digest, so the reader may send the last byte;
- `open_stored(digest)`: a file descriptor on the stored blob itself, for a
  request that arrives after the file was moved, or None when the stored
  blob is not a local file (the ordinary blob resource then serves it).

`RenameLanding`, the filesystem: the file is renamed into ``blobs/`` while
the writer holds the lock. A reader whose writer released the lock compares
the inode it has open with the inode under ``blobs/``: the same inode means
verified and stored, anything else means discarded. Every process sharing
the root follows one fetch.

`CommitLanding`, an object store: the file stays in the replica's local
scratch and the blob goes into the bucket through the backend
(`BlobStore.ingest`: staged, hashed and verified again, committed under the
collector's fences, so the key is touched before it is written). Inode
identity says nothing there, so the writer stamps the inode itself: it sets
the file's mode to ``0o600`` (`fchmod`, which no umask alters) when it
begins, and to ``0o410`` once the digest matched and the commit returned.
The stamp has a bit (group execute) that the ``0o644`` the file is created
with never has, whatever the umask, so a file no writer stamped is never
taken for a verified one. A reader sees the stamp through its own
descriptor, even after the file was unlinked; a reader whose writer
released the lock without the stamp raises `FetchFailed`. So, as on a
filesystem, a client that got the last byte can pull the blob from the
cache at once (the last byte waits for the upload to the bucket). When the
store refuses the commit, the bytes were still verified: the readers are
stamped through, nothing is stored, and the next pull fetches again. The
processes of one replica (one scratch directory) follow one fetch; another
replica fetches its own copy and commits the same bytes: whichever commit
is last wins, whole.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Protocol

from services.storage.blobstore import BlobStore
from services.storage.bodies import fsync_dir
from services.storage.paths import Keys
from shared import errors
from shared.validation import Digest

log = logging.getLogger("dockyard.storage.proxy")

# The fetch file's mode while it is written, and once its digest matched: a mode
# that no umask makes of the 0o644 the file is created with.
WRITING = 0o600
VERIFIED = 0o410


class Landing(Protocol):
    moves: bool

    def begin(self, fd: int) -> None: ...

    def land(self, fd: int, path: Path, digest: Digest) -> bool: ...

    def verified(self, fd: int, digest: Digest, writing: bool) -> bool: ...

    def open_stored(self, digest: Digest) -> int | None: ...


class RenameLanding:
    """The filesystem: a rename into ``blobs/``; readers compare inodes."""

    moves = True

    def __init__(self, blobs: BlobStore) -> None:
        self._layout = blobs.layout

    def begin(self, fd: int) -> None:
        pass

    def land(self, fd: int, path: Path, digest: Digest) -> bool:
        os.fsync(fd)
        target = self._layout.blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
        fsync_dir(target.parent)
        return True

    def verified(self, fd: int, digest: Digest, writing: bool) -> bool:
        return not writing and os.fstat(fd).st_ino == _inode(self._layout.blob(digest))

    def open_stored(self, digest: Digest) -> int | None:
        return os.open(self._layout.blob(digest), os.O_RDONLY)


class CommitLanding:
    """An object store: a commit through the backend; the inode's mode is the stamp."""

    moves = False

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def begin(self, fd: int) -> None:
        os.fchmod(fd, WRITING)

    def land(self, fd: int, path: Path, digest: Digest) -> bool:
        size = os.fstat(fd).st_size
        stored = False
        # Read through the writer's descriptor (`path` may name another file by now),
        # from the start: the duplicate shares the offset the writes left at the end.
        with open(os.dup(fd), "rb") as f:
            f.seek(0)
            try:
                self._blobs.ingest(f, size, digest)
                stored = True
            except errors.DigestInvalid:
                # The file no longer holds what was verified: no stamp, the readers abort.
                log.error("the fetch file of %s changed after it was verified: discarded",
                          digest)
                return False
            except errors.RegistryError as e:
                log.warning("storing %s fetched from the upstream failed (%s): served, "
                            "not cached", digest, e)
        os.fchmod(fd, VERIFIED)  # the readers may send the last byte from now
        return stored

    def verified(self, fd: int, digest: Digest, writing: bool) -> bool:
        return stat.S_IMODE(os.fstat(fd).st_mode) == VERIFIED

    def open_stored(self, digest: Digest) -> int | None:
        return None


def landing_for(blobs: BlobStore) -> Landing:
    """The filesystem's landing when blobs are local files, else the object store's."""
    if blobs.backend.local_path(Keys.BLOBS) is not None:
        return RenameLanding(blobs)
    return CommitLanding(blobs)


def _inode(path: os.PathLike[str] | str) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1
