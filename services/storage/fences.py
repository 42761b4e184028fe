"""The locks and timestamps that let the garbage collector run while pushes go on.

The collector (`services.gc.collector`) states the safety argument; this module
holds the three mechanisms it rests on. Every lock is an ``flock`` on a file
under ``locks/`` (see `paths`), so it holds across every process sharing the
storage root and is released by the kernel when its holder dies, ``kill -9``
included.

1. **Touch.** A writer that creates or re-asserts a reference to a blob, a
   layer link or a manifest link sets that file's mtime to now (`touch`),
   and fails when the file is gone. A file's mtime is thus the last time any
   writer relied on it.
2. **Blob stripes.** Each touch of a blob or of a link to it happens under
   the blob's stripe (`locks/blob-<xx>`) held shared; the collector checks a
   candidate's mtime and unlinks it under the stripe held exclusively. So a
   touch and a delete never interleave: either the delete came first and the
   writer sees the file missing (and uploads it again, or answers
   BLOB_UNKNOWN), or the touch came first and the collector sees it fresh.
3. **The barrier.** A manifest PUT holds the commit lock shared from the
   first touch of what it references until the index has recorded it
   (`writing`). The collector's `barrier` takes it exclusively for an
   instant and reads the run's start time *T* from a file it touches inside:
   every PUT that touched anything before *T* is in the index before the
   collector reads the index, and every touch after it carries an mtime of
   *T* or later (file times come from the kernel's one clock). A gate lock
   in front of the commit lock keeps a stream of PUTs from starving it.

An object store has neither mtimes a writer can set nor flocks:
`redis_fences` keeps the same three guarantees in the index's Redis, behind
the same methods (`claim`, `remove_all_if_untouched`, `barrier`, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from services.storage.paths import Layout
from shared.validation import Digest


class Listed(Protocol):
    """What the collector knows of a candidate (`inventory.FileInfo`)."""

    @property
    def digest(self) -> Digest: ...
    @property
    def key(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...

UNLINK_THREADS = 8


@contextlib.contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


def touch(path: Path, *, symlink: bool = False) -> bool:
    """Set `path`'s mtime to now; False when it does not exist."""
    try:
        os.utime(path, follow_symlinks=not symlink)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def mtime_ns(path: Path) -> int | None:
    """When a writer last relied on `path` (a symbolic link's own time, not its target's)."""
    try:
        return os.lstat(path).st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return None


class Fences:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # Each thread keeps its own descriptors of the two barrier files: flock
        # belongs to the open file, so threads must not share one, and opening
        # them once saves two opens and closes per manifest PUT.
        self._local = threading.local()

    def _fd(self, name: str) -> int:
        fds = getattr(self._local, "fds", None)
        if fds is None:
            fds = self._local.fds = {}
        fd = fds.get(name)
        if fd is None:
            fd = fds[name] = os.open(self.layout.gc_lock(name), os.O_RDWR | os.O_CREAT, 0o644)
        return fd

    # -- writers ---------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held by a manifest PUT from its first touch until the index recorded it."""
        gate, commit = self._fd("gate"), self._fd("commit")
        fcntl.flock(gate, fcntl.LOCK_SH)
        try:
            fcntl.flock(commit, fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(commit, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def blob(self, digest: Digest, *, exclusive: bool = False) -> Iterator[None]:
        """The blob's stripe: shared to touch it or a link to it, exclusive to delete."""
        with _flock(self.layout.blob_lock(digest),
                    fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
            yield

    # -- the collector -----------------------------------------------------------

    def barrier(self) -> int:
        """Wait until no manifest PUT is between its touches and its index record,
        and return the start time *T* of a collection (nanoseconds, by the kernel's
        file clock, the clock every touch is stamped with)."""
        mark = self.layout.gc_file("mark")
        with _flock(self.layout.gc_lock("gate"), fcntl.LOCK_EX), \
                _flock(self.layout.gc_lock("commit"), fcntl.LOCK_EX):
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
            return os.stat(mark).st_mtime_ns

    @contextlib.contextmanager
    def collecting(self, wait: bool = False) -> Iterator[bool]:
        """One collection at a time per storage root: yields False when another runs."""
        fd = os.open(self.layout.gc_lock("run"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def holding(self, locks: Iterable[Path]) -> Iterator[None]:
        """Several lock files exclusively, each once, in one global order. The
        collector alone takes more than one lock of a kind; every other holder
        takes one and waits for nothing while it holds it, so no cycle forms."""
        with contextlib.ExitStack() as stack:
            for path in sorted(set(locks)):
                stack.enter_context(_flock(path, fcntl.LOCK_EX))
            yield

    @contextlib.contextmanager
    def claim(self, items: Sequence[Listed], cutoff: int | None,
              locks: Sequence[str] = ()) -> Iterator[list[bool]]:
        """Hold, exclusively, `locks` (keys of `paths.Keys`: manifest stripes) and the
        blob stripes of `items`, and say which items no writer touched since `cutoff`
        (every one that exists, when None). Delete them inside (`delete_claimed`)."""
        with self.holding(self.layout.path(k) for k in locks), \
                self.holding(self.layout.blob_lock(item.digest) for item in items):
            yield [_untouched(self.layout.path(item.key), cutoff) for item in items]

    def delete_claimed(self, keys: list[str]) -> None:
        """Delete keys `claim` said were untouched, inside the claim."""
        unlink_all([self.layout.path(k) for k in keys])

    def remove_all_if_untouched(self, items: Sequence[Listed],
                                cutoff: int) -> list[int | None]:
        """Delete every item (a blob, or a link to its digest) untouched since `cutoff`,
        taking each blob stripe once for all of its items; returns, per item, the
        bytes it held or None when it was kept or gone."""
        by_stripe: dict[Path, list[int]] = {}
        for i, item in enumerate(items):
            by_stripe.setdefault(self.layout.blob_lock(item.digest), []).append(i)
        result: list[int | None] = [None] * len(items)

        def sweep(stripe: Path) -> None:
            with _flock(stripe, fcntl.LOCK_EX):
                for i in by_stripe[stripe]:
                    result[i] = _unlink_if_older(items[i].path, cutoff)

        # An unlink waits on the disk's journal, not the CPU: several stripes at
        # once keep the disk busy (each stripe still held by one thread alone).
        with ThreadPoolExecutor(max_workers=UNLINK_THREADS) as pool:
            list(pool.map(sweep, sorted(by_stripe)))
        return result

    def remove_if_untouched(self, digest: Digest, path: str | Path,
                            cutoff: int) -> int | None:
        """Unlink `path` (a blob or a link to `digest`) unless a writer touched it at or
        after `cutoff`; returns the bytes it held, or None when it was kept or gone."""
        with self.blob(digest, exclusive=True):
            return _unlink_if_older(path, cutoff)

    def prune(self, before_ns: int) -> None:
        """Nothing to forget: a file's mtime is its own record."""


def unlink_all(paths: list[Path]) -> None:
    """Unlink files concurrently (see `remove_all_if_untouched`); missing ones are fine.
    The caller holds whatever locks make each unlink safe."""
    def unlink(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    with ThreadPoolExecutor(max_workers=UNLINK_THREADS) as pool:
        list(pool.map(unlink, paths))


def _untouched(path: Path, cutoff: int | None) -> bool:
    when = mtime_ns(path)
    return when is not None and (cutoff is None or when < cutoff)


def _unlink_if_older(path: str | Path, cutoff: int) -> int | None:
    """Call with the file's blob stripe held exclusively."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if st.st_mtime_ns >= cutoff:
        return None
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    return st.st_size
