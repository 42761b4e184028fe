"""What a router does when its machine shares the storage root (always under `serve`).

Blob bytes then skip the router-to-storage connection in both directions, in
the manner of nginx's X-Accel-Redirect:

- **Pulls.** The router asks storage for a blob with `X-Dockyard-Accel: file`;
  storage checks the repository, answers with the headers and names the file
  in `X-Dockyard-File` instead of sending it, and the router gives the open
  file to waitress's `wsgi.file_wrapper`. One pass over the bytes, not three.
- **Pushes.** waitress reads a whole request body before the application sees
  it, spooling large ones to a temporary file. Here that file is created in
  the storage root's tmp/, so the router sends storage only its name
  (`X-Dockyard-Body-File`) and storage takes the bytes over by rename: they
  are written once, not three times, and never cross a socket again.

Storage decides what is served and accepted and builds every blob path; the
router opens only paths under the root it was given, and its spool files have
one fixed name shape, which is all storage will take from tmp/. A spool file
is unlinked when waitress closes it, unless storage took it; one left by a
killed router is purged with the other stale files in tmp/.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import uuid
from typing import Any

from waitress import buffers

from shared.http_client import Response
from shared.shared_disk_headers import (
    ACCEL_FILE,
    ACCEL_LENGTH,
    ACCEL_OFFSET,
    SPOOL_FILE,
    SPOOL_LENGTH,
)

log = logging.getLogger("dockyard.router.shared_disk")



class _SpoolFile:
    """A named temporary file in storage's tmp/ that removes itself when closed.

    When storage's disk is full it moves to a private temporary file instead,
    so the request still arrives whole and storage can refuse it with its
    JSON error, rather than the router dropping the connection mid-body.
    """

    def __init__(self, path: str) -> None:
        self.name: str | None = path
        self._file: Any = open(path, "x+b", buffering=0)  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        done = 0
        # An unbuffered write may be partial when the disk fills; waitress
        # ignores the count, so every byte is written here or an error raised.
        while done < len(view):
            try:
                done += self._file.write(view[done:])
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT) or self.name is None:
                    raise
                self._spill()
        return done

    def _spill(self) -> None:
        log.warning("storage disk full: spooling a request body to the system temp dir")
        spilled = tempfile.TemporaryFile()  # noqa: SIM115 - replaces self._file
        position = self._file.tell()
        self._file.seek(0)
        shutil.copyfileobj(self._file, spilled)
        spilled.seek(position)
        self._discard()
        self._file = spilled

    def _discard(self) -> None:
        self._file.close()
        if self.name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name)
            self.name = None

    def close(self) -> None:
        self._discard()

    def __getattr__(self, attr: str) -> Any:
        # read, seek, tell, flush, fileno, ...: the current file's own.
        return getattr(self._file, attr)


class SharedDisk:
    def __init__(self, storage_root: str) -> None:
        self.root = os.path.realpath(storage_root) + os.sep
        self.tmp = os.path.join(self.root, "tmp")

    def install_spool(self) -> None:
        """Make waitress spool large bodies into storage's tmp/ (process-wide)."""
        os.makedirs(self.tmp, exist_ok=True)
        tmp = self.tmp

        def newfile(buffer: Any) -> _SpoolFile:
            return _SpoolFile(os.path.join(tmp, f"spool-{uuid.uuid4().hex}"))

        buffers.TempfileBasedBuffer.newfile = newfile  # type: ignore[method-assign]

    def hand_over(self, body: Any, headers: dict[str, str]) -> bool:
        """Send storage the spool file's name instead of the body, when it has one."""
        if (not isinstance(body, _SpoolFile) or body.name is None
                or os.path.dirname(body.name) != self.tmp):
            return False
        body.flush()
        headers[SPOOL_FILE] = os.path.basename(body.name)
        headers[SPOOL_LENGTH] = headers["Content-Length"]
        headers["Content-Length"] = "0"
        return True

    def open_blob(self, resp: Response) -> tuple[Any, int] | None:
        """The file storage named for a blob GET, opened at its offset, and its length."""
        path = resp.header(ACCEL_FILE)
        if not path:
            return None
        path = os.path.realpath(path)
        if not path.startswith(self.root):
            log.error("storage named a file outside the storage root; ignored")
            return None
        try:
            f = open(path, "rb")  # noqa: SIM115 - waitress's file wrapper closes it
        except OSError:
            return None
        offset = int(resp.header(ACCEL_OFFSET) or "0")
        if offset:
            f.seek(offset)
        return f, int(resp.header(ACCEL_LENGTH) or "0")
