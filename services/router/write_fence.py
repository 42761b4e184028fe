"""Read-your-writes across the router processes of one machine.

`dockyard serve` runs several router processes on one public port (see
`services/supervisor.py`), and a client's next request may reach another
process than its write did. Index events reach every process within
milliseconds, but "within milliseconds" is not "before the write is
acknowledged". So a router process that forwarded a write (a manifest PUT or
DELETE) also records the scopes it changed here, before the answer goes
back; every process reads the record before it serves anything from its
response cache.

The record is a small shared file mapped into every process: a sequence
number and a ring of the last `SLOTS` scopes written. Checking it costs one
8-byte read while nothing was written. A writer holds an exclusive `flock`
while it appends; a reader that sees a new sequence number takes a shared
one to read what was added (and threads of one process, which share the
lock's descriptor, take a thread lock as well). A reader more than `SLOTS` writes behind, or a
scope longer than a slot, drops its whole cache instead.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

SLOTS = 1024
SLOT_BYTES = 512
_HEADER = struct.Struct("<Q")
_LENGTH = struct.Struct("<H")
SIZE = _HEADER.size + SLOTS * SLOT_BYTES


class WriteFence:
    def __init__(self, path: str | Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._lock_fd = os.open(path, os.O_RDWR)
        self._threads = threading.Lock()
        self._seen = self._sequence()

    def _sequence(self) -> int:
        return int(_HEADER.unpack_from(self._map, 0)[0])

    def announce(self, scopes: Iterable[str]) -> None:
        """Record scopes this process just changed; call before acknowledging the write."""
        with self._threads:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._append(scopes)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _append(self, scopes: Iterable[str]) -> None:
        seq = self._sequence()
        for scope in scopes:
            raw = scope.encode()
            at = _HEADER.size + (seq % SLOTS) * SLOT_BYTES
            if len(raw) > SLOT_BYTES - _LENGTH.size:
                raw = b""  # too long to record: readers drop everything
            _LENGTH.pack_into(self._map, at, len(raw))
            self._map[at + _LENGTH.size:at + _LENGTH.size + len(raw)] = raw
            seq += 1
        # The slots first, then the number that makes them visible.
        _HEADER.pack_into(self._map, 0, seq)

    def catch_up(self, invalidate: Callable[[str], None], forget_all: Callable[[], None]) -> None:
        """Apply every scope recorded since the last call; cheap when there is none."""
        if self._sequence() == self._seen:
            return
        # `_seen` moves only once the scopes are applied: a thread that finds
        # nothing new may serve from the cache at once.
        with self._threads:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            try:
                seq = self._sequence()
                self._apply(self._seen, seq, invalidate, forget_all)
                self._seen = seq
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _apply(self, start: int, end: int, invalidate: Callable[[str], None],
               forget_all: Callable[[], None]) -> None:
        if end - start > SLOTS:
            forget_all()
            return
        for n in range(start, end):
            at = _HEADER.size + (n % SLOTS) * SLOT_BYTES
            (length,) = _LENGTH.unpack_from(self._map, at)
            if length == 0:
                forget_all()
                return
            invalidate(self._map[at + _LENGTH.size:at + _LENGTH.size + length].decode())


__all__ = ["WriteFence"]
