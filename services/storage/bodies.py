"""Request bodies and the file helpers every backend's writes are built from.

A body is read once, in order, hashed on the way: one reused buffer for the
whole copy, so a 10 GiB layer costs 1 MiB of memory and one pass over its bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shared import errors

CHUNK = 1024 * 1024


@dataclass
class Body:
    """A request body: the request's stream, or the file in tmp/ that a router on
    this machine spooled it into (see `services.router.shared_disk`).

    A spooled body is taken over by rename where the backend can (the
    filesystem), so its bytes are not written a second time.
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


def read_into(src: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `src`; a body that ends first is the client's error."""
    filled = 0
    readinto = getattr(src, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            data = src.read(len(view) - filled)
            n = len(data)
            view[filled:filled + n] = data
        if not n:
            raise errors.SizeInvalid(detail={"reason": "request body shorter than Content-Length"})
        filled += n
    return filled


def copy_stream(src: BinaryIO, fd: int, length: int, hasher: hashlib._Hash | None) -> int:
    """Copy exactly `length` bytes from `src` to `fd`, hashing on the way."""
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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def cleanup(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
