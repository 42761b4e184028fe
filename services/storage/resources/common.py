"""Helpers the storage resources share."""

from __future__ import annotations

import falcon

from shared import errors
from shared.urls import external_url


def body_length(req: falcon.Request) -> int:
    """The request body's length; waitress de-chunks bodies, so it is always known."""
    length = req.content_length
    return int(length or 0)


def check_deletes(enabled: bool) -> None:
    if not enabled:
        raise errors.Unsupported("deletes are disabled on this registry")


def upload_location(req: falcon.Request, name: str, upload_id: str) -> str:
    return external_url(req, f"/v2/{name}/blobs/uploads/{upload_id}")


def blob_location(req: falcon.Request, name: str, digest: str) -> str:
    return external_url(req, f"/v2/{name}/blobs/{digest}")


def upload_range(size: int) -> str:
    return f"0-{size - 1}" if size > 0 else "0-0"
