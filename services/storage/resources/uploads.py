"""Blob uploads: POST /v2/<name>/blobs/uploads/ and the session at its Location."""

from __future__ import annotations

import falcon

from services.storage.blobstore import BlobStore
from services.storage.notifier import Notifier
from services.storage.resources.common import (
    blob_location,
    request_body,
    upload_location,
    upload_range,
)
from services.storage.uploads import UploadStore
from shared import errors
from shared.validation import check_name, check_upload_id, parse_content_range, parse_digest


def _created(req: falcon.Request, resp: falcon.Response, name: str, digest: str) -> None:
    resp.status = falcon.HTTP_201
    resp.location = blob_location(req, name, digest)
    resp.set_header("Docker-Content-Digest", digest)
    resp.content_length = 0


def _accepted(req: falcon.Request, resp: falcon.Response, name: str, upload_id: str,
              size: int, status: str = falcon.HTTP_202) -> None:
    resp.status = status
    resp.location = upload_location(req, name, upload_id)
    resp.set_header("Range", upload_range(size))
    resp.set_header("Docker-Upload-UUID", upload_id)
    resp.content_length = 0


class UploadStartResource:
    """POST: a new session, a single-request upload (?digest=), or a mount (?mount=&from=)."""

    def __init__(self, blobs: BlobStore, uploads: UploadStore, notifier: Notifier) -> None:
        self._blobs = blobs
        self._uploads = uploads
        self._notifier = notifier

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        check_name(name)
        mount = req.get_param("mount")
        source = req.get_param("from")
        if mount is not None:
            d = parse_digest(mount)
            if source is not None and source != name:
                check_name(source)
                if self._blobs.mount(source, name, d):
                    self._notifier.blob_mounted(req, name, str(d), self._blobs.size(d) or 0,
                                                source)
                    _created(req, resp, name, str(d))
                    return
            elif self._blobs.touch_layer(name, d):
                _created(req, resp, name, str(d))
                return
            # Not mountable: the spec's fallback is an ordinary upload session.
        digest = req.get_param("digest")
        body = request_body(req, self._blobs.layout)
        if digest is not None:
            d = parse_digest(digest)
            self._blobs.ingest_body(body, d)
            self._blobs.link_layer(name, d)
            self._notifier.blob_pushed(req, name, str(d), self._blobs.size(d) or 0)
            _created(req, resp, name, str(d))
            return
        upload_id = self._uploads.start(name)
        size = self._uploads.append(upload_id, name, body) if body.length else 0
        body.discard()
        _accepted(req, resp, name, upload_id, size)


class UploadResource:
    """The session: PATCH a chunk, PUT to finish, GET its status, DELETE to cancel."""

    def __init__(self, uploads: UploadStore, notifier: Notifier) -> None:
        self._uploads = uploads
        self._notifier = notifier

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               upload_id: str) -> None:
        check_name(name)
        check_upload_id(upload_id)
        size = self._uploads.size(upload_id, name)
        _accepted(req, resp, name, upload_id, size, falcon.HTTP_204)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, name: str,
                 upload_id: str) -> None:
        check_name(name)
        check_upload_id(upload_id)
        body = request_body(req, self._uploads.layout)
        start = None
        content_range = req.get_header("Content-Range")
        if content_range:
            start, end = parse_content_range(content_range)
            if end - start + 1 != body.length:
                body.discard()
                raise errors.RangeInvalid(
                    detail={"reason": "Content-Range does not match Content-Length"})
        size = self._uploads.append(upload_id, name, body, start)
        _accepted(req, resp, name, upload_id, size)

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str,
               upload_id: str) -> None:
        check_name(name)
        check_upload_id(upload_id)
        digest = req.get_param("digest")
        if not digest:
            raise errors.DigestInvalid("digest parameter is required")
        d = parse_digest(digest)
        size = self._uploads.finish(upload_id, name, d, request_body(req, self._uploads.layout))
        self._notifier.blob_pushed(req, name, str(d), size)
        _created(req, resp, name, str(d))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str,
                  upload_id: str) -> None:
        check_name(name)
        check_upload_id(upload_id)
        self._uploads.cancel(upload_id, name)
        resp.status = falcon.HTTP_204
        resp.content_length = 0
