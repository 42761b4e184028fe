"""GET, HEAD and DELETE of /v2/<name>/blobs/<digest>."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import falcon

from services.storage.blobstore import BlobStore
from services.storage.bodies import CHUNK
from services.storage.notifier import Notifier
from services.storage.resources.common import check_deletes
from shared import errors
from shared.shared_disk_headers import (
    ACCEL_FILE,
    ACCEL_LENGTH,
    ACCEL_OFFSET,
    ACCEL_REQUEST,
    FETCH_URL,
)
from shared.validation import Digest, check_name, parse_digest, parse_range


def _file_range(f: BinaryIO, length: int) -> Iterator[bytes]:
    """`length` bytes from where `f` stands: never more than Content-Length."""
    with f:
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

    def _locate(self, name: str, digest: str, *, touch: bool = False):
        check_name(name)
        d = parse_digest(digest)
        # A HEAD usually asks whether a push may skip the upload: touching the
        # blob then keeps a collection from deleting it before the manifest
        # that will rely on it arrives (`services.storage.fences`).
        size = self._blobs.layer_size(name, d, touch=touch)
        if size is None:
            raise errors.BlobUnknown(detail={"digest": digest})
        return d, size

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, digest: str) -> None:
        d, size = self._locate(name, digest, touch=req.method == "HEAD")
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
        self._serve(req, resp, d, first, last - first + 1, size)

    def _serve(self, req: falcon.Request, resp: falcon.Response, d: Digest, first: int,
               length: int, size: int) -> None:
        """One of four answers: a redirect to the object store (which honours the
        client's Range itself), the file for a router that shares this disk, a
        URL of the object store for a router that fetches it itself, or the bytes."""
        url = self._blobs.redirect_url(d)
        if url is not None:
            resp.status = falcon.HTTP_307
            resp.location = url
            resp.content_length = 0
            # The URL expires: the answer must not be cached, unlike the bytes.
            for header in ("Content-Range", "Accept-Ranges", "ETag", "Cache-Control"):
                resp.delete_header(header)
            return
        path = self._blobs.local_path(d)
        accel = {v.strip() for v in (req.get_header(ACCEL_REQUEST) or "").split(",")}
        if path is not None and "file" in accel:
            # The router shares this disk and sends the bytes itself.
            self._hand_over(resp, ACCEL_FILE, str(path), first, length)
            return
        url = self._blobs.fetch_url(d) if length and "url" in accel else None
        if url is not None:
            # The router GETs the range from the object store and relays it.
            self._hand_over(resp, FETCH_URL, url, first, length)
            return
        # A local file read to its end is opened as a plain file, which waitress's
        # wsgi.file_wrapper sends in large reads; a slice reader would not qualify.
        to_end = first + length == size and path is not None
        try:
            f = self._blobs.open(d, first, None if to_end else length)
        except FileNotFoundError:
            # Gone since it was found: a collection (filesystem), or an object removed
            # from the bucket behind dockyard's back.
            raise errors.BlobUnknown(detail={"digest": str(d)}) from None
        resp.stream = f if to_end else _file_range(f, length)

    @staticmethod
    def _hand_over(resp: falcon.Response, header: str, where: str, first: int,
                   length: int) -> None:
        resp.set_header(header, where)
        resp.set_header(ACCEL_OFFSET, str(first))
        resp.set_header(ACCEL_LENGTH, str(length))
        resp.content_length = 0

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
