"""What every part of the S3 backend shares: the store's answers, translated.

A missing key is `NotFound` (a FileNotFoundError, as a missing file is), a failed
condition `PreconditionFailed`; everything else the store or the network does wrong
is `errors.Unavailable`, the client's 503 with Retry-After (`backends.s3`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

from botocore.exceptions import BotoCoreError

from shared import errors

log = logging.getLogger("dockyard.storage.s3")

MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
RETRY_AFTER = 2


class NotFound(FileNotFoundError):
    pass


class PreconditionFailed(Exception):
    pass


class BodyReader(io.RawIOBase):
    """An object's body whose read errors are the store's, as `errors.Unavailable`.

    `read` hands out the bytes the S3 client read, as they are: the body of a
    blob GET is streamed in 1 MiB reads, and a copy of each (RawIOBase's
    `read` goes through `readinto`) was a third of a pull's CPU.
    """

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except (BotoCoreError, OSError) as e:
            log.warning("object store: reading failed: %s", e)
            raise errors.Unavailable("object store read failed", retry_after=RETRY_AFTER
                                     ) from None

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()
