"""Helpers the storage resources share."""

from __future__ import annotations

import re

import falcon

from services.storage.bodies import Body
from services.storage.paths import Layout
from shared import errors
from shared.shared_disk_headers import SPOOL_FILE, SPOOL_LENGTH
from shared.urls import external_url

_SPOOL_NAME = re.compile(r"spool-[0-9a-f]{32}")


def body_length(req: falcon.Request) -> int:
    """The request body's length; waitress de-chunks bodies, so it is always known."""
    length = req.content_length
    return int(length or 0)


def request_body(req: falcon.Request, layout: Layout) -> Body:
    """The body of an upload request, or the file in tmp/ the router spooled it into.

    The spool file's name comes from the router; it is checked against the
    one shape the router gives names, and only ever looked up in tmp/.
    """
    name = req.get_header(SPOOL_FILE)
    if name is None:
        return Body(body_length(req), stream=req.stream)
    length = req.get_header(SPOOL_LENGTH) or ""
    if _SPOOL_NAME.fullmatch(name) is None or not length.isdigit():
        raise errors.BlobUploadInvalid(detail={"reason": "bad spooled body"})
    path = layout.tmp / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise errors.BlobUploadInvalid(detail={"reason": "spooled body is gone"}) from None
    if size != int(length):
        raise errors.SizeInvalid(detail={"reason": "spooled body is incomplete"})
    return Body(size, path=path)


def check_deletes(enabled: bool) -> None:
    if not enabled:
        raise errors.Unsupported("deletes are disabled on this registry")


def upload_location(req: falcon.Request, name: str, upload_id: str) -> str:
    return external_url(req, f"/v2/{name}/blobs/uploads/{upload_id}")


def blob_location(req: falcon.Request, name: str, digest: str) -> str:
    return external_url(req, f"/v2/{name}/blobs/{digest}")


def upload_range(size: int) -> str:
    return f"0-{size - 1}" if size > 0 else "0-0"
