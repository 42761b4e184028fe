"""GET, HEAD and DELETE of /v2/<name>/blobs/<digest>."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import falcon

from services.storage.blobstore import CHUNK, BlobStore
from services.storage.notifier import Notifier
from services.storage.resources.common import check_deletes
from shared import errors
from shared.shared_disk_headers import ACCEL_FILE, ACCEL_LENGTH, ACCEL_OFFSET, ACCEL_REQUEST
from shared.validation import check_name, parse_digest, parse_range


def _file_range(f: BinaryIO, first: int, length: int) -> Iterator[bytes]:
    """A range that ends before the file does: never more than Content-Length."""
    with f:
        f.seek(first)
        while length > 0:
            chunk = f.read(min(length, CHUNK))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


class BlobResource:
    def __init__(self, blobs: BlobStore, delete_enabled: bool, notifier: Notifier) -> None:
        self._blobs = blobs
        self._delete_enabled = delete_enabled
        self._notifier = notifier

    def _locate(self, name: str, digest: str):
        check_name(name)
        d = parse_digest(digest)
        size = self._blobs.size(d) if self._blobs.has_layer(name, d) else None
        if size is None:
            raise errors.BlobUnknown(detail={"digest": digest})
        return d, size

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, digest: str) -> None:
        d, size = self._locate(name, digest)
        resp.content_type = "application/octet-stream"
        resp.set_header("Docker-Content-Digest", str(d))
        resp.set_header("Accept-Ranges", "bytes")
        resp.set_header("ETag", f'"{d}"')
        resp.cache_control = ["max-age=31536000"]
        first, last = 0, size - 1
        span = parse_range(req.get_header("Range"), size) if req.get_header("Range") else None
        if span is not None:
            first, last = span
            resp.status = falcon.HTTP_206
            resp.set_header("Content-Range", f"bytes {first}-{last}/{size}")
        resp.content_length = last - first + 1
        if req.method == "HEAD":
            return
        self._notifier.blob_pulled(req, name, str(d), size)
        if req.get_header(ACCEL_REQUEST) == "file":
            # The router shares this disk and sends the bytes itself.
            resp.set_header(ACCEL_FILE, str(self._blobs.layout.blob(d)))
            resp.set_header(ACCEL_OFFSET, str(first))
            resp.set_header(ACCEL_LENGTH, str(resp.content_length))
            resp.content_length = 0
            return
        f = self._blobs.open(d)
        if last == size - 1:
            f.seek(first)
            # A file to the end goes out through waitress's wsgi.file_wrapper.
            resp.stream = f
        else:
            resp.stream = _file_range(f, first, last - first + 1)

    def on_head(self, req: falcon.Request, resp: falcon.Response, name: str, digest: str) -> None:
        self.on_get(req, resp, name, digest)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  digest: str) -> None:
        check_deletes(self._delete_enabled)
        d, _ = self._locate(name, digest)
        self._blobs.unlink_layer(name, d)
        self._notifier.blob_deleted(req, name, str(d))
        resp.status = falcon.HTTP_202
        resp.content_length = 0
