"""The filesystem backend: every key is the file ``<root>/<key>`` (see `paths`).

Several storage processes may share the root (one machine, or NFS/CephFS
with working ``flock`` and atomic ``rename``). How each rule of
`backends.base` holds here:

- Nothing partial is visible: bytes are written in ``tmp/`` (or a session's
  ``data``), fsynced, and renamed into place; the directory is fsynced after.
- Records are links that carry no data: an empty file, or a symbolic link
  whose target is the value (a manifest's media type, never followed). Each
  is created whole by one call and made durable by one fsync of its
  directory, where a file with content would need a temporary file, its own
  fsync and a rename as well.
- Sessions and locks are ``flock``s, released by the kernel when their holder
  dies, ``kill -9`` included.
- `touch` sets a file's mtime, the collector's clock (`fences`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from services.storage.backends.base import ObjectInfo
from services.storage.bodies import (
    Body,
    cleanup,
    copy_stream,
    fsync_dir,
    fsync_file,
    hash_file,
    is_disk_full,
)
from services.storage.fences import Fences, touch
from services.storage.paths import Keys, Layout
from shared import errors


def write_synced(path: Path, content: bytes) -> None:
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
        remove(path)
        raise


def remove(path: Path) -> bool:
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


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
            remove(tmp)
            raise
    fsync_dir(path.parent)


class _Slice(io.RawIOBase):
    """At most `length` bytes of `f` from where it stands."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[:self._left]
        n = self._f.readinto(view) if view else 0  # type: ignore[attr-defined]
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


class _FileStaged:
    """A fsynced file outside ``blobs/``; `commit` renames it into place."""

    def __init__(self, layout: Layout, path: Path, size: int) -> None:
        self._layout = layout
        self.path = path
        self.size = size

    def commit(self, key: str) -> None:
        target = self._layout.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The file's mtime is its last write, maybe long ago for an upload
        # finished without a last chunk: the object is new now.
        os.utime(self.path)
        # `os.replace` is atomic: concurrent commits of one key leave one whole copy.
        os.replace(self.path, target)
        fsync_dir(target.parent)

    def discard(self) -> None:
        remove(self.path)


class _FileSession:
    """An upload's ``data`` file, open for append under its ``flock``."""

    def __init__(self, layout: Layout, upload_id: str, fd: int) -> None:
        self._layout = layout
        self._upload_id = upload_id
        self._fd = fd
        self.size = os.fstat(fd).st_size
        try:
            self.info: bytes | None = layout.upload_info(upload_id).read_bytes()
        except FileNotFoundError:
            self.info = None

    def append(self, body: Body, hasher: hashlib._Hash | None) -> int:
        current = self.size
        if body.path is not None and current == 0 and hasher is not None:
            return self._adopt(body.path, body.length, hasher)
        try:
            src = body.open()
            try:
                copy_stream(src, self._fd, body.length, hasher)
            finally:
                if body.path is not None:
                    src.close()
            os.fsync(self._fd)
        except BaseException as e:
            # Leave the session exactly as it was, so the client can resume.
            os.ftruncate(self._fd, current)
            if isinstance(e, OSError) and is_disk_full(e):
                raise errors.StorageFull(detail={"uploaded": current}) from None
            raise
        self.size = current + body.length
        return self.size

    def _adopt(self, path: Path, length: int, hasher: hashlib._Hash) -> int:
        """Make a spooled first chunk the session's data: one read to hash it, no copy."""
        hash_file(path, hasher.name, hasher)
        fsync_file(path)
        os.replace(path, self._layout.upload_data(self._upload_id))
        fsync_dir(self._layout.upload_dir(self._upload_id))
        self.size = length
        return length

    def seal(self, body: Body, hasher: hashlib._Hash | None, key_hint: str) -> _FileStaged:
        if body.length:
            self.append(body, hasher)
        return _FileStaged(self._layout, self._layout.upload_data(self._upload_id), self.size)

    def rehash(self, staged: Any, algorithm: str) -> str:
        return hash_file(staged.path, algorithm)

    def remove(self, marker: str) -> None:
        _remove_session_dir(self._layout, self._upload_id)
        remove(self._layout.path(marker))


def _remove_session_dir(layout: Layout, upload_id: str) -> None:
    shutil.rmtree(layout.upload_dir(upload_id), ignore_errors=True)
    with contextlib.suppress(OSError):
        fsync_dir(layout.uploads)


class FilesystemBackend:
    kind = "filesystem"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.fences = Fences(layout)

    # -- objects -------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            # A record's own time, never its target's: a manifest link is a symlink.
            st = os.lstat(self.layout.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime_ns)

    def open(self, key: str, first: int = 0, length: int | None = None) -> BinaryIO:
        f = open(self.layout.path(key), "rb")  # noqa: SIM115 - the caller closes it
        if first:
            f.seek(first)
        if length is None:
            return f
        return io.BufferedReader(_Slice(f, length))

    def read(self, key: str) -> bytes:
        return self.layout.path(key).read_bytes()

    def put(self, key: str, data: bytes) -> None:
        tmp = self.layout.tmp / uuid.uuid4().hex
        write_synced(tmp, data)
        try:
            _FileStaged(self.layout, tmp, len(data)).commit(key)
        except BaseException:
            remove(tmp)
            raise

    def stage(self, src: BinaryIO, length: int, hasher: hashlib._Hash | None,
              key_hint: str) -> _FileStaged:
        tmp = self.layout.tmp / uuid.uuid4().hex
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                copy_stream(src, fd, length, hasher)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            remove(tmp)
            raise
        return _FileStaged(self.layout, tmp, length)

    def stage_file(self, path: Path, hasher: hashlib._Hash, key_hint: str) -> _FileStaged:
        hash_file(path, hasher.name, hasher)
        fsync_file(path)
        return _FileStaged(self.layout, path, path.stat().st_size)

    def delete(self, key: str) -> bool:
        return remove(self.layout.path(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        top = self.layout.path(prefix)
        for directory, _subdirs, files in os.walk(top):
            for name in files:
                path = Path(directory) / name
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(str(path.relative_to(self.layout.root)), st.st_size,
                                 st.st_mtime_ns)

    def has_prefix(self, prefix: str) -> bool:
        return self.layout.path(prefix).is_dir()

    def touch(self, key: str) -> bool:
        # A manifest link's target is a media type, not a file: never followed.
        return touch(self.layout.path(key), symlink=True)

    def redirect_url(self, key: str) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        return self.layout.path(key)

    def fetch_url(self, key: str) -> str | None:
        return None

    # -- records -------------------------------------------------------------

    def set_record(self, key: str, value: str) -> None:
        path = self.layout.path(key)
        if value:
            _create_symlink(path, value)
        elif not touch(path, symlink=True):
            # An existing empty file keeps its mtime on create: it is touched instead.
            _create_empty(path)

    def get_record(self, key: str) -> str | None:
        try:
            return os.readlink(self.layout.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return ""   # an empty file: a record without a value

    # -- upload sessions -----------------------------------------------------

    def create_session(self, upload_id: str, info: bytes) -> None:
        directory = self.layout.upload_dir(upload_id)
        directory.mkdir(parents=True)
        try:
            self.layout.upload_info(upload_id).write_bytes(info)
            self.layout.upload_data(upload_id).touch()
        except BaseException:
            # A full disk fails here: leave no half-created session behind.
            self.remove_session(upload_id)
            raise

    def session_info(self, upload_id: str) -> bytes | None:
        try:
            return self.layout.upload_info(upload_id).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def session_size(self, upload_id: str) -> int | None:
        try:
            return self.layout.upload_data(upload_id).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    @contextlib.contextmanager
    def session(self, upload_id: str, adding: int = 0) -> Iterator[_FileSession]:
        """Hold the session's data file open for append, exclusively across processes."""
        fd = os.open(self.layout.upload_data(upload_id), os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another request may have given the session a new data file while
            # we waited (an adopted first chunk): this lock then guards a file
            # that is no longer the session's.
            current = os.stat(self.layout.upload_data(upload_id)).st_ino
            if current != os.fstat(fd).st_ino:
                raise errors.Unavailable("upload busy; retry", retry_after=1)
            yield _FileSession(self.layout, upload_id, fd)
        finally:
            os.close(fd)

    def remove_session(self, upload_id: str) -> None:
        _remove_session_dir(self.layout, upload_id)

    def sessions(self) -> Iterator[tuple[str, float]]:
        try:
            entries = list(os.scandir(self.layout.uploads))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                yield entry.name, entry.stat().st_mtime
            except OSError:
                continue

    def purge_orphans(self, max_age: float) -> int:
        # What a killed writer leaves is in tmp/, which `UploadStore.purge_tmp` clears.
        return 0

    # -- coordination --------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """An flock; lock keys are stripes (`Keys`), so the files stay few."""
        fd = os.open(self.layout.path(key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        probe = self.layout.tmp / f".probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            ok = True
        except OSError:
            ok = False
        finally:
            # write_bytes creates the file before a full disk fails the write.
            cleanup(probe)
        return ok, {"storage_root_writable": ok}


__all__ = ["FilesystemBackend", "Keys"]
