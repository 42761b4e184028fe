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
    """An object's body whose read errors are the store's, as `errors.Unavailable`."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except (BotoCoreError, OSError) as e:
            log.warning("object store: reading failed: %s", e)
            raise errors.Unavailable("object store read failed", retry_after=RETRY_AFTER
                                     ) from None
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()
